"""Opening the job database: URL resolution, SQLite pragmas, and automatic migration.

SQLite runs in WAL mode with a busy timeout, and every write transaction begins
``IMMEDIATE`` so that two writers queue on the lock instead of one of them failing with
SQLITE_BUSY half-way through.  The driver's own implicit transactions are switched off
(``isolation_level = None``) and SQLAlchemy's ``begin`` event emits the BEGIN itself.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from batchfuse.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest migration under ``migrations/versions``. Checked against Alembic's own view by a
#: test, so that opening an up-to-date database never has to import Alembic (a tenth of a
#: second on every start).
SCHEMA_HEAD = "0004"


def _busy_timeout_ms() -> int:
    """How long SQLite waits for a lock another process holds (BATCHFUSE_DB_BUSY_TIMEOUT_S)."""
    return int(float(os.environ.get("BATCHFUSE_DB_BUSY_TIMEOUT_S", "30")) * 1000)


def db_url(db: str) -> str:
    """A database given as a path or an SQLAlchemy URL, as a URL."""
    if "://" in db:
        return db
    return "sqlite:///" + str(Path(db).expanduser().resolve())


def resolve_db_url(db: str | None, manifest_path: Path) -> str:
    """``--db`` or ``BATCHFUSE_DB`` (a path or an SQLAlchemy URL), else ``batchfuse.db`` beside the manifest."""
    return db_url(db or os.environ.get("BATCHFUSE_DB") or str(manifest_path.parent / "batchfuse.db"))


def missing_sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL that does not exist yet (opening it would create it), else None."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return None if path.exists() else path


def describe_url(url: str) -> str:
    """The URL as it may be shown to a user: never with a password."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_engine(url: str) -> Engine:
    busy_ms = _busy_timeout_ms()
    engine = create_engine(url, connect_args={"timeout": busy_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = "DEFERRED" if conn.get_execution_options().get("readonly") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; the database file's folder is created for SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return _sqlite_engine(url)
    try:
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except Exception as exc:  # unknown driver, bad URL
        raise StoreError(f"cannot open database {describe_url(url)}: {exc}") from None


def alembic_config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("batchfuse.migrations")))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str | None:
    """The newest revision as Alembic sees it (reads the migration scripts)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision; None for a database without batchfuse's schema."""
    try:
        with engine.connect().execution_options(readonly=True) as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError as exc:
        if isinstance(exc, OperationalError) and "no such table" not in str(exc.orig):
            raise
        return None


#: PostgreSQL advisory lock key held while migrating, so runners starting together on a
#: fresh database do not race to create the same tables.
MIGRATION_LOCK = 0x6266_0001


def upgrade(engine: Engine) -> bool:
    """Bring the schema to the newest revision; returns whether anything was applied."""
    if current_revision(engine) == SCHEMA_HEAD:
        return False
    from alembic import command

    cfg = alembic_config(engine)
    head = SCHEMA_HEAD
    if engine.dialect.name != "postgresql":
        try:
            command.upgrade(cfg, "head")
        except OperationalError:
            if current_revision(engine) == head:
                return False  # another process created the schema at the same moment
            raise
        return True
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        conn.commit()
        try:
            if conn.execute(text("SELECT to_regclass('alembic_version')")).scalar() is not None and (
                conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
            ):
                return False  # another runner migrated while we waited
            conn.rollback()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
            return True
        finally:
            conn.rollback()
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
            conn.commit()
