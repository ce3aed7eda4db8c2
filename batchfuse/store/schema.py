"""Tables of the job database.

Times are stored as UNIX seconds (floats): portable across SQLite and PostgreSQL, cheap to
compare, and free of the naive/aware datetime trap. The Alembic migrations under
``migrations/`` must produce exactly this schema (a test compares them).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("provider", String(50), nullable=False),
    Column("model", String(200), nullable=False),
    Column("manifest_path", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("planned_at", Float),
    #: Written into the output folder's marker file by the first runner, so a runner on
    #: another machine can tell it is not looking at the shared folder.
    Column("output_token", String(64)),
)

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(500), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("spec", Text, nullable=False),
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("in_plan", Boolean, nullable=False, default=True),
    Column("error_class", String(20)),
    Column("last_error", Text),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", Float),
    #: A provider's note for the next attempt (JSON), e.g. result URLs generated but not yet
    #: downloaded: the next attempt fetches them instead of paying for a new generation.
    Column("resume_token", Text),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("job_id", "key"),
    Index("ix_items_claim", "job_id", "state", "ordinal"),
    #: Covers `status`'s counts: they read this index, never the item rows (migration 0008).
    Index("ix_items_status", "job_id", "state", "in_plan"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("runner_id", String(64), nullable=False, unique=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("exit_reason", Text),
    Column("succeeded", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("requests", Integer, nullable=False, default=0),
    Index("ix_runs_job", "job_id", "started_at"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
    Column("number", Integer, nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("http_status", Integer),
    Column("error_class", String(20)),
    Column("error_message", Text),
    Column("latency_ms", Float),
    Column("prompt_tokens", Integer),
    Column("output_tokens", Integer),
    Column("total_tokens", Integer),
    Column("thoughts_tokens", Integer),
    Column("finish_reason", String(50)),
    Column("block_reason", String(50)),
    Column("text", Text),
    Index("ix_attempts_item", "item_id"),
)

outputs = Table(
    "outputs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("attempt_id", Integer, ForeignKey("attempts.id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("source_url", Text),
    #: When the API made the image behind ``source_url`` (result links expire).
    Column("source_at", Float),
    Column("created_at", Float, nullable=False),
    Index("ix_outputs_item", "item_id"),
)

#: Images of paid replies whose outputs could not be written (disk full, folder gone): kept
#: here, in the same transaction that records the attempt, so the next run — on any machine
#: that shares the database — writes them instead of paying for them again.
spool = Table(
    "spool",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("attempt_id", Integer, ForeignKey("attempts.id", ondelete="CASCADE"), nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("source_url", Text),
    Column("source_at", Float),
    Column("created_at", Float, nullable=False),
    Index("ix_spool_item", "item_id"),
)

# -- batch mode (issue 16; migration 0005) -------------------------------------------------

#: One batch job at the API.  The row (with its items in ``batch_items``) is written *before*
#: the batch is created, under a display name unique to it, so a run that died around
#: ``create`` finds the batch by listing the account's batches and adopts it.
batches = Table(
    "batches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("display_name", String(128), nullable=False, unique=True),
    Column("backend", String(20), nullable=False),
    Column("model", String(200), nullable=False),
    #: The API's name (``batches/...``), once created or adopted.
    Column("remote_name", String(200)),
    #: preparing, pending, running, succeeded, failed, cancelled, expired, applied
    Column("state", String(20), nullable=False),
    Column("input_file", String(200)),
    Column("result_file", String(200)),
    Column("request_count", Integer, nullable=False, default=0),
    Column("succeeded_count", Integer),
    Column("failed_count", Integer),
    Column("created_at", Float, nullable=False),
    Column("submitted_at", Float),
    Column("checked_at", Float),
    Column("ended_at", Float),
    Column("applied_at", Float),
    #: Bytes of the result file on disk, and up to where its lines are applied.
    Column("download_offset", BigInteger, nullable=False, default=0),
    Column("applied_offset", BigInteger, nullable=False, default=0),
    Column("unknown_lines", Integer, nullable=False, default=0),
    Column("duplicate_lines", Integer, nullable=False, default=0),
    Column("error", Text),
    #: The runner working on the batch (creating, polling, applying); another takes it over
    #: only when that runner is gone.
    Column("runner_id", String(64)),
    Index("ix_batches_job", "job_id", "state"),
)

#: Which item went into which batch, under which line key (item key + ``#`` + attempt).
batch_items = Table(
    "batch_items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("batch_id", Integer, ForeignKey("batches.id", ondelete="CASCADE"), nullable=False),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("line_key", String(600), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("spec_hash", String(64), nullable=False),
    #: What the result line came to (succeeded, transient, rejected, missing, returned, ...).
    Column("outcome", String(20)),
    Column("applied_at", Float),
    UniqueConstraint("batch_id", "line_key"),
    Index("ix_batch_items_item", "item_id"),
)

#: Files uploaded through the provider's Files API (reference images), by content digest:
#: one upload serves every request that uses the image until it expires (48 h at Gemini).
uploaded_files = Table(
    "uploaded_files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("endpoint", String(300), nullable=False),
    Column("digest", String(200), nullable=False),
    Column("remote_name", String(200), nullable=False),
    Column("uri", Text, nullable=False),
    Column("mime", String(100), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("uploaded_at", Float, nullable=False),
    Column("expires_at", Float),
    UniqueConstraint("endpoint", "digest"),
)

# ---------------------------------------------------------------- review (migration 0006)

#: Every verdict ever given on an item, as data: who, when, what, the note.  ``clear`` undoes the
#: latest standing verdict (which gets ``undone_at``); a ``reject`` makes a new revision of the spec.
verdicts = Table(
    "verdicts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("verdict", String(20), nullable=False),
    Column("note", Text),
    Column("prompt_extra", Text),
    Column("new_seed", Boolean, nullable=False, default=False),
    Column("pick", Text),
    Column("reviewer", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    #: The manifest's spec hash of the item when judged: a revision applies to that spec only.
    Column("base_hash", String(64)),
    #: The revision a reject made (1, 2, ...), and its seed salt when it asked for a new seed.
    Column("revision", Integer),
    Column("seed_salt", Integer),
    Column("undone_at", Float),
    Index("ix_verdicts_item", "item_id", "id"),
)

#: Where each judged item stands: the fold of its standing verdicts (one row per item), so the
#: review page filters by verdict with an index and a run reads every revision in one query.
reviews = Table(
    "reviews",
    metadata,
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("verdict", String(20)),
    Column("verdict_id", Integer),
    Column("base_hash", String(64)),
    Column("revision", Integer, nullable=False, default=0),
    Column("prompt_extra", Text),
    Column("seed_salt", Integer),
    Column("pick", Text),
    Column("updated_at", Float, nullable=False),
    Index("ix_reviews_job_verdict", "job_id", "verdict"),
)

#: Earlier outputs of an item, kept when its spec changed (a revision or a manifest edit): the
#: file lives on in the versions folder under ``path`` (relative to the output folder).
output_versions = Table(
    "output_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("revision", Integer, nullable=False, default=0),
    Column("idx", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("path", Text),
    Column("sha256", String(64), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("made_at", Float, nullable=False),
    Column("kept_at", Float, nullable=False),
    UniqueConstraint("item_id", "spec_hash", "idx"),
)


def conflict_insert(conn: Any, table: Table) -> Any:
    """``INSERT`` into ``table`` that takes ``ON CONFLICT`` clauses, in the connection's dialect
    (imported here: a run on SQLite need not load the PostgreSQL dialect, nor the other way round)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)

