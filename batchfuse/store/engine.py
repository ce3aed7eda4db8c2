"""Opening the job database: URL resolution, SQLite pragmas, automatic migration, and the one
place where the database's and its driver's failures become one-line messages (:func:`translated`).

Readers (``status``, ``report``, ``export``) open an SQLite file read-only, so a database on
read-only media can still be looked at.

SQLite runs in WAL mode with a busy timeout, and every write transaction begins
``IMMEDIATE`` so that two writers queue on the lock instead of one of them failing with
SQLITE_BUSY half-way through.  The driver's own implicit transactions are switched off
(``isolation_level = None``) and SQLAlchemy's ``begin`` event emits the BEGIN itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)

from batchfuse.errors import BatchfuseError, InputError, StoreError, StoreSetupError, register_secret
from batchfuse.store.lite import SCHEMA_HEAD

if TYPE_CHECKING:
    from alembic.config import Config

# SCHEMA_HEAD: the newest migration under ``migrations/versions``, written down (in lite, which
# `status` reads without SQLAlchemy) and checked against Alembic's own view by a test, so that
# opening an up-to-date database never has to import Alembic (a tenth of a second on every start).
#: Every revision this batchfuse knows; any other was made by a newer one.
KNOWN_REVISIONS = frozenset(f"{n:04d}" for n in range(1, int(SCHEMA_HEAD) + 1))
#: A password query parameter in a URL that cannot be parsed: its value is hidden all the same.
_PASSWORD_PARAM = re.compile(r"([?&][^=&]*password[^=&]*=)[^&]*", re.IGNORECASE)


def _busy_timeout_ms() -> int:
    """How long SQLite waits for a lock another process holds (BATCHFUSE_DB_BUSY_TIMEOUT_S)."""
    return int(float(os.environ.get("BATCHFUSE_DB_BUSY_TIMEOUT_S", "30")) * 1000)


def db_url(db: str) -> str:
    """A database given as a path or an SQLAlchemy URL, as a URL; an in-memory one is refused."""
    if "://" not in db:
        return "sqlite:///" + str(Path(db).expanduser().resolve())
    register_url_secrets(db)
    try:
        parsed = make_url(db)
    except ArgumentError:
        raise StoreSetupError(
            f"database {describe_url(db)!r} is neither a file path nor a database URL "
            "(like sqlite:///path/to/batchfuse.db or postgresql+psycopg://user@host/db)"
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise InputError(
            f"database {describe_url(db)}: an in-memory database forgets the job when the command ends; "
            "give a file path (or a PostgreSQL URL)"
        )
    return db


def resolve_db_url(db: str | None, manifest_path: Path) -> str:
    """``--db`` or ``BATCHFUSE_DB`` (a path or an SQLAlchemy URL), else ``batchfuse.db`` beside the manifest."""
    return db_url(db or os.environ.get("BATCHFUSE_DB") or str(manifest_path.parent / "batchfuse.db"))


def missing_sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL that does not exist yet (opening it would create it), else None."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return None if path.exists() else path


def _password_params(parsed: URL) -> dict[str, str | tuple[str, ...]]:
    """The query parameters of ``parsed`` that hold a password (``password=``, ``sslpassword=``)."""
    return {k: v for k, v in parsed.query.items() if "password" in k.lower()}


def register_url_secrets(url: str) -> None:
    """Make :func:`scrub` remove the URL's passwords (its userinfo and query ones) wherever they appear."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return
    values = [parsed.password, *_password_params(parsed).values()]
    for value in values:
        for v in (value,) if isinstance(value, str) or value is None else value:
            if v:
                register_secret(str(v))


def describe_url(url: str) -> str:
    """The URL as it may be shown to a user: never with a password, in its userinfo or query."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return _PASSWORD_PARAM.sub(r"\1***", url)
    hidden = _password_params(parsed)
    if hidden:
        parsed = parsed.update_query_dict({k: "***" for k in hidden})
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def _read_only_url(path: Path) -> str:
    """An SQLite URL that opens ``path`` for reading only; on a read-only filesystem (or folder),
    where SQLite cannot make the WAL's shared-memory file, as immutable."""
    mode = "mode=ro" if os.access(path.parent, os.W_OK) else "immutable=1"
    return f"sqlite:///file:{quote(str(path))}?{mode}&uri=true"


def _sqlite_engine(url: str, readonly: bool = False) -> Engine:
    busy_ms = _busy_timeout_ms()
    database = make_url(url).database
    if readonly and database:
        url = _read_only_url(Path(database))
    engine = create_engine(url, connect_args={"timeout": busy_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not readonly:  # switching the journal mode writes; a reader takes the file as it is
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


def create_store_engine(url: str, *, readonly: bool = False) -> Engine:
    """An engine for ``url``; for SQLite, the database file's folder is created, or with
    ``readonly`` the file is opened for reading only (it may be on read-only media)."""
    with translated(url):
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and not readonly:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            return _sqlite_engine(url, readonly)
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


@contextmanager
def translated(url: str) -> Iterator[None]:
    """Turns any failure of the database at ``url`` into one :class:`StoreError` line."""
    try:
        yield
    except BatchfuseError:
        raise
    except (DBAPIError, OSError, ImportError, NoSuchModuleError, ArgumentError) as exc:
        error = store_error(exc, url)
        if error is None:
            raise
        raise error from None


def _one_line(text: object) -> str:
    """A driver's message as one line (psycopg's run over several)."""
    return "; ".join(" ".join(line.split()) for line in str(text).splitlines() if line.strip())


def store_error(exc: BaseException, url: str) -> StoreError | None:
    """What is wrong with the database at ``url`` and what to do, for ``exc``; None for a bug
    (a query batchfuse got wrong is not the database's fault)."""
    where = describe_url(url)
    backend = make_url(url).get_backend_name()
    if isinstance(exc, ImportError):
        driver = exc.name or str(exc)
        fix = "pip install 'batchfuse[postgres]'" if driver == "psycopg" else f"install it (pip install {driver})"
        if backend == "postgresql" and driver != "psycopg":
            fix += ", or use postgresql+psycopg://... after pip install 'batchfuse[postgres]'"
        return StoreSetupError(f"database {where}: its driver {driver} is not installed; {fix}")
    if isinstance(exc, (NoSuchModuleError, ArgumentError)):
        return StoreSetupError(
            f"database {where}: not a database batchfuse can use ({_one_line(exc)}); "
            "give a file path or a URL like postgresql+psycopg://user@host/db"
        )
    if isinstance(exc, OSError):
        file = f" ({exc.filename})" if exc.filename else ""
        return StoreError(f"database {where} could not be written: {exc.strerror or exc}{file}")
    assert isinstance(exc, DBAPIError)
    if exc.orig is None or type(exc) not in (OperationalError, DatabaseError):
        return None  # integrity, programming, data errors: a bug
    message = _one_line(exc.orig)
    if backend == "sqlite":
        return _sqlite_error(message, Path(make_url(url).database or ""), where)
    if isinstance(exc, OperationalError) and exc.connection_invalidated or "connect" in message.lower():
        hint = "" if "server running" in message else "; is the server up and the URL right?"
        return StoreError(f"cannot reach database {where}: {message}{hint}")
    return StoreError(f"database {where} is not usable: {message}")


def _sqlite_error(message: str, path: Path, where: str) -> StoreError:
    lower = message.lower()
    if path.is_dir():
        return StoreSetupError(f"database {path} is a folder, not a database file; give a file path")
    if "not a database" in lower or "malformed" in lower:
        if _sqlite_header(path):
            return StoreError(
                f"database {where} is damaged ({message}); restore it from a backup, or try "
                f"`sqlite3 {path} .recover`"
            )
        return StoreSetupError(
            f"{path} is not an SQLite database ({message}); point --db at the job's database, "
            "or move this file away to start a new one"
        )
    if "readonly" in lower or "read-only" in lower:
        return StoreError(
            f"database {where} is read-only ({message}); a run has to write to it: copy it somewhere "
            "writable (status, report and export only read it)"
        )
    if "locked" in lower or "busy" in lower:
        return StoreError(
            f"database {where}: {message}: another process held it longer than the busy timeout "
            "(BATCHFUSE_DB_BUSY_TIMEOUT_S); try again when it is done"
        )
    if "unable to open" in lower:
        if not path.parent.is_dir():
            return StoreSetupError(f"database {where}: its folder {path.parent} does not exist")
        if path.exists() and not os.access(path.parent, os.W_OK):
            return _sqlite_error("read-only folder or filesystem", path, where)
        return StoreError(
            f"cannot open database {where} ({message}); check that you may read and write "
            f"{path} and its folder"
        )
    return StoreError(f"database {where} is not usable: {message}")


def _sqlite_header(path: Path) -> bool:
    """Whether ``path`` starts as an SQLite database does (so it is damaged, not something else)."""
    try:
        with path.open("rb") as f:
            return f.read(16) == b"SQLite format 3\0"
    except OSError:
        return False


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
    except (OperationalError, ProgrammingError) as exc:
        if "alembic_version" in str(exc.orig):  # SQLite "no such table", PostgreSQL "does not exist"
            return None
        raise


def known_revision(engine: Engine, url: str | None = None) -> str | None:
    """The database's schema revision, refused when a newer batchfuse made it."""
    revision = current_revision(engine)
    if revision is not None and revision not in KNOWN_REVISIONS:
        raise StoreSetupError(
            f"database {describe_url(url or str(engine.url))} was made by a newer batchfuse (schema revision {revision}; "
            f"this one knows up to {SCHEMA_HEAD}): upgrade batchfuse (pip install -U batchfuse) to use it"
        )
    return revision


#: PostgreSQL advisory lock key held while migrating, so runners starting together on a
#: fresh database do not race to create the same tables.
MIGRATION_LOCK = 0x6266_0001


def upgrade(engine: Engine, url: str | None = None, *, from_models: bool = True) -> bool:
    """Bring the schema to the newest revision; returns whether anything was applied. An empty
    database gets the newest schema from the models at once (``from_models``), not by running
    every migration (about half a second of CPU on every new job, most of it importing Alembic and
    its scripts); the result is the same schema, which a test holds."""
    revision = known_revision(engine, url)
    if revision == SCHEMA_HEAD:
        return False
    if revision is None and from_models and _create_empty(engine):
        return True
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


def _create_empty(engine: Engine) -> bool:
    """Create the newest schema in a database that has no table at all, and stamp it with
    :data:`SCHEMA_HEAD` as Alembic would, in one transaction (SQLite: ``BEGIN IMMEDIATE``;
    PostgreSQL: under the migration lock). False, having changed nothing, when any table is
    there (Alembic decides, and another runner that got here first has already done it)."""
    from sqlalchemy import inspect

    from batchfuse.store.schema import metadata

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        if inspect(conn).get_table_names():
            return False
        metadata.create_all(conn)
        conn.exec_driver_sql(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": SCHEMA_HEAD})
    return True

