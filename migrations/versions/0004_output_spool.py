"""output spool: paid results whose outputs could not be written

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spool",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=True),
        sa.Column("source_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["attempts.id"], name=op.f("fk_spool_attempt_id_attempts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_spool_item_id_items"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spool")),
    )
    with op.batch_alter_table("spool", schema=None) as batch_op:
        batch_op.create_index("ix_spool_item", ["item_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("spool", schema=None) as batch_op:
        batch_op.drop_index("ix_spool_item")
    op.drop_table("spool")
