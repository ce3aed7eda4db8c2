"""Shared fixtures: a clean environment, the mock API on loopback, job folders and the CLI.

Tests are in tiers: ``unit`` (pure functions), ``integration`` (the library and CLI
in-process, over HTTP to the mock on 127.0.0.1, real SQLite files) and ``acceptance``
(the CLI in subprocesses, killed and interrupted with signals).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from batchfuse.cli import main
from batchfuse.mock import MockConfig, MockServerThread
from batchfuse.mock.manifests import mock_job

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_IMAGES = ROOT / "jobs" / "images"
#: A fake key distinctive enough to grep for; real keys never reach tests.
TEST_KEY = "bf-test-key-7Qx9Lm2Vz8Rt4Wp6"
KEY_VARS = ("DMXAPI_KEY", "RELAY_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY")
LOCAL_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
POSTGRES_HOW = (
    "no PostgreSQL server on 127.0.0.1:5432 and BATCHFUSE_TEST_POSTGRES_URL not set; to run these tests "
    "start one with trust auth and a database 'test' (Debian: apt-get install -y postgresql && "
    "pg_ctlcluster <version> main start; .ci/run does this) or set BATCHFUSE_TEST_POSTGRES_URL"
)


def _local_postgres() -> str | None:
    """The local server's URL when something listens on 127.0.0.1:5432 and lets us in."""
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        return None
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(LOCAL_POSTGRES_URL, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception:  # a server that refuses us is as good as none: the skip reason says what to do
        return None
    return LOCAL_POSTGRES_URL


#: The PostgreSQL tests run whenever a server is reachable, not only under .ci/run.
POSTGRES_URL = os.environ.get("BATCHFUSE_TEST_POSTGRES_URL") or _local_postgres()
needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason=POSTGRES_HOW)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BATCHFUSE_* setting and no provider key from the outside reaches a test."""
    for name in list(os.environ):
        if name.startswith("BATCHFUSE_") and name != "BATCHFUSE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def mock() -> Any:
    """The mock API in a thread on 127.0.0.1, with tiny images and request bodies recorded."""
    server = MockServerThread(MockConfig(image_scale=1 / 16, record_bodies=True, seed=1)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def noise_mock() -> Any:
    """The mock with real-size noise PNGs (2K: about 5 MB, a 7 MB reply, spooled to disk)."""
    server = MockServerThread(MockConfig(image_mode="noise", seed=1)).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class JobDir:
    """A job folder in tmp_path with sample images and a manifest written from a dict.

    Its database is SQLite beside the manifest, or a fresh PostgreSQL database (through
    BATCHFUSE_DB) when the test runs on the postgres backend."""

    root: Path
    url: str = ""

    def __post_init__(self) -> None:
        self.url = self.url or f"sqlite:///{self.root / 'batchfuse.db'}"

    @property
    def manifest(self) -> Path:
        return self.root / "job.yaml"

    @property
    def db(self) -> Path:
        return self.root / "batchfuse.db"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def write(self, data: dict[str, Any]) -> Path:
        self.manifest.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return self.manifest

    def sql(self, query: str) -> list[tuple]:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(text(query))]
        finally:
            engine.dispose()

    def scalar(self, query: str) -> Any:
        """The first column of the first row; raises while the run has not created the database
        yet (a poll in :func:`wait_for` retries and reports the last error)."""
        if self.url.startswith("sqlite") and not self.db.exists():
            raise FileNotFoundError(f"no database at {self.db} yet")
        return self.sql(query)[0][0]

    def state_of(self) -> dict[str, str]:
        return dict(self.sql("SELECT key, state FROM items"))

    def integrity_ok(self) -> bool:
        """SQLite's own check of the file (PostgreSQL has no such thing: True)."""
        return not self.url.startswith("sqlite") or self.sql("PRAGMA integrity_check") == [("ok",)]


def items(n: int, prefix: str = "i", prompt: str = "prompt {i}") -> list[dict[str, Any]]:
    """``n`` manifest items ``{prefix}000``... with prompts ``prompt.format(i=...)``."""
    return [{"id": f"{prefix}{i:03d}", "prompt": prompt.format(i=i)} for i in range(n)]


#: Small limits and fast timeouts: tests wait for conditions, never for a long backoff.
TEST_LIMITS = {"concurrency": 4, "requests_per_minute": None, "max_attempts": 4, "timeout_s": 5, "backoff_base_s": 0.01}


def manifest(base_url: str, items: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """A manifest dict for tests: small limits, fast timeouts; ``overrides`` replace sections."""
    return mock_job(base_url, "test-job", "DMXAPI_KEY", TEST_LIMITS, **{"items": items, **overrides})


# -- a job to review (report and export tests, in the integration and acceptance tiers) --------

XSS_PROMPT = 'fuse </script><script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2"> & done'
URL_REF = "https://example.com/refs/scene.png?size=large&v=1"


def review_items() -> list[dict[str, Any]]:
    """Two succeeded (one with reference images and a hostile prompt), one failed, two pending."""
    return [
        {"id": "fused", "prompt": XSS_PROMPT, "images": ["images/scene.png", "images/calculator.jpg"]},
        {"id": "poster", "prompt": "a museum poster", "aspect_ratio": "16:9"},
        {"id": "unsafe", "prompt": "[[mock:safety*always]] blocked"},
        {"id": "later", "prompt": "not run yet", "images": ["images/logo.png"]},
        {"id": "remote", "prompt": "by URL", "images": [URL_REF]},
    ]


def run_review_job(job: JobDir, mock: Any, *extra: str) -> None:
    """Run everything but the two pending items; the failed item makes the run exit 1."""
    job.write(manifest(mock.url, review_items()))
    only = ["--only", "fused", "--only", "poster", "--only", "unsafe"]
    result = cli("run", job.manifest, *only, *extra)
    assert result.exit_code == 1, result.stderr


def db_counts(job: JobDir) -> dict[str, int]:
    """Items by state (and the total) as the database has them."""
    counts = dict.fromkeys(("succeeded", "failed", "pending", "running"), 0)
    counts.update(dict(job.sql("SELECT state, count(*) FROM items WHERE in_plan GROUP BY state")))
    counts["total"] = sum(counts.values())
    return counts


def page_items(html: str) -> dict[str, dict[str, Any]]:
    """The items a report page carries in its JSON data block, by key."""
    import json
    import re

    (data,) = re.findall(r'<script type="application/json" id="bf-items">(.*?)</script>', html, re.S)
    return {item["key"]: item for item in json.loads(data)}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The integration tier (the core suite) runs on SQLite and PostgreSQL (skipped, saying how
    to get a server, when none is reachable)."""
    if "backend" in metafunc.fixturenames and "integration" in str(metafunc.definition.path):
        metafunc.parametrize("backend", ["sqlite", "postgres"])


@pytest.fixture
def backend() -> str:
    """The job database's kind (parametrized by ``pytest_generate_tests``)."""
    return "sqlite"


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> Any:
    shutil.copytree(SAMPLE_IMAGES, tmp_path / "images")
    monkeypatch.setenv("DMXAPI_KEY", TEST_KEY)
    if backend == "sqlite":
        yield JobDir(tmp_path)
        return
    if not POSTGRES_URL:
        pytest.skip(POSTGRES_HOW)
    for url in fresh_postgres_database():
        monkeypatch.setenv("BATCHFUSE_DB", url)
        yield JobDir(tmp_path, url)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def cli(*args: str) -> CliResult:
    """Run the CLI in-process (fast); for signals and kills use :func:`cli_process`."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


class CliProcess(subprocess.Popen):
    """A subprocess whose stdout and stderr go to unlinked temporary files, so a test can read
    them while it runs (``err()``), nothing blocks on a full pipe, and every failure message can
    carry them."""

    def __init__(self, argv: list[str], env: dict[str, str], **kw: Any) -> None:
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the object)
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        super().__init__(argv, env=env, stdout=self._out, stderr=self._err, **kw)

    @staticmethod
    def _read(file: Any) -> str:
        fd = file.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", errors="replace")

    def out(self) -> str:
        return self._read(self._out)

    def err(self) -> str:
        return self._read(self._err)

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the exit; on timeout kill it and fail with what it wrote to stderr."""
        try:
            self.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise AssertionError(f"{self.args} did not exit within {timeout} s; stderr:\n{self.err()}") from None
        return self.out(), self.err()


def cli_process(*args: str, env: dict[str, str] | None = None, **kw: Any) -> CliProcess:
    """The CLI in its own process, as cron would start it."""
    return CliProcess(
        [sys.executable, "-m", "batchfuse.cli", *[str(a) for a in args]], env={**os.environ, **(env or {})}, **kw
    )


def wait_for(
    predicate: Callable[[], Any], what: str, timeout: float = 60.0, proc: CliProcess | None = None
) -> Any:
    """Poll ``predicate`` until it returns something true and return that; never a fixed sleep.

    An exception from the predicate counts as "not yet" (the database may not exist yet) and
    is shown if time runs out.  With ``proc``, fail at once if it exits first.  Failures say
    ``what`` was awaited and carry the process's stderr.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # reported below if the condition never comes
            last_error = exc
        exited = proc is not None and proc.poll() is not None
        if exited or time.monotonic() > deadline:
            why = f"exited with {proc.returncode}" if exited and proc else f"not within {timeout} s"
            detail = f"; last error: {last_error!r}" if last_error else ""
            stderr = f"\nstderr of the process:\n{proc.err()}" if proc is not None else ""
            raise AssertionError(f"waiting for {what}: {why}{detail}{stderr}")
        time.sleep(0.02)  # the poll interval, not a wait for anything


def events(log: Path) -> list[dict]:
    """The records of a run's JSON log (``--log-format json``)."""
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def stop_time(log: Path) -> float:
    """When the run began stopping, from its JSON log (millisecond timestamps, local time)."""
    (stopping,) = [e for e in events(log) if e["event"] == "stopping"]
    ts = stopping["ts"]
    return time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + int(ts[20:23]) / 1000


def generation_requests(server: Any) -> list[dict[str, Any]]:
    return [r for r in server.requests() if r["api"] in ("gemini", "openai")]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path: Path) -> Any:
    """A fresh, empty database on each backend; PostgreSQL tests skip (with how to get a
    server) when none is reachable."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip(POSTGRES_HOW)
    yield from fresh_postgres_database()


def fresh_postgres_database() -> Any:
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bf_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on a patched clock: time stands still while anything is ready to run, and
    jumps to the next timer when nothing is.  ``asyncio.sleep(5)`` takes no real time, and every
    time read from the clock is exact, so limiter and breaker tests assert schedules, not luck.
    ``advance(s)`` moves the clock by hand (a wake-up that comes late)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def elapse(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass for the awaiting task (others run meanwhile)."""
        done = self.create_future()
        self.call_later(seconds, done.set_result, None)
        await done

    def _run_once(self) -> None:
        if not self._ready:  # type: ignore[attr-defined]
            timers = [h.when() for h in self._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
            if timers:  # a timer due already: a real clock has moved on a little since it was set
                self.now = min(timers) if min(timers) > self.now else self.now + 1e-9
        super()._run_once()  # type: ignore[misc]


@pytest.fixture
def virtual_clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A :class:`VirtualClockLoop` whose clock the rate limiter and the breaker read as
    ``time.monotonic`` (aiolimiter, under the rate limiter, reads the loop's own clock); run
    coroutines with ``loop.run_until_complete``."""
    import types

    import batchfuse.run.breaker
    import batchfuse.run.ratelimit

    loop = VirtualClockLoop()
    clock = types.SimpleNamespace(monotonic=loop.time, time=loop.time)
    for module in (batchfuse.run.ratelimit, batchfuse.run.breaker):
        monkeypatch.setattr(module, "time", clock)
    try:
        yield loop
    finally:
        loop.close()
