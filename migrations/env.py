"""Alembic environment: runs against the engine batchfuse hands over, or ``-x url=...``."""

from alembic import context
from sqlalchemy import create_engine

from batchfuse.store.schema import metadata

config = context.config


def _migrate(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # batchfuse hands over a connection that holds its lock
        _migrate(connection)
        return
    engine = config.attributes.get("engine")
    if engine is None:
        engine = create_engine(context.get_x_argument(as_dictionary=True)["url"])
    with engine.connect() as connection:
        _migrate(connection)


run_migrations_online()
