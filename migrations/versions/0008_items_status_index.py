"""items (job_id, state, in_plan): a covering index, so `status` counts without reading item rows

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 02:00:00.000000
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_items_status", "items", ["job_id", "state", "in_plan"])


def downgrade() -> None:
    op.drop_index("ix_items_status", table_name="items")
