"""Shared fixtures: a clean environment, the mock API on loopback, job folders and the CLI.

Tests are in tiers: ``unit`` (pure functions), ``integration`` (the library and CLI
in-process, over HTTP to the mock on 127.0.0.1, real SQLite files) and ``acceptance``
(the CLI in subprocesses, killed and interrupted with signals).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from batchfuse.cli import main
from batchfuse.mock import MockConfig, MockServerThread

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_IMAGES = ROOT / "jobs" / "images"
#: A fake key distinctive enough to grep for; real keys never reach tests.
TEST_KEY = "bf-test-key-7Qx9Lm2Vz8Rt4Wp6"
KEY_VARS = ("DMXAPI_KEY", "RELAY_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY")
POSTGRES_URL = os.environ.get("BATCHFUSE_TEST_POSTGRES_URL")


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

    def state_of(self) -> dict[str, str]:
        return dict(self.sql("SELECT key, state FROM items"))


def manifest(base_url: str, items: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """A manifest dict for tests: small limits, fast timeouts; ``overrides`` replace sections."""
    data: dict[str, Any] = {
        "job": "test-job",
        "provider": {
            "kind": "gemini",
            "base_url": base_url,
            "model": "gemini-3-pro-image-preview",
            "api_key_env": "DMXAPI_KEY",
        },
        "defaults": {"aspect_ratio": "1:1", "image_size": "1K"},
        "limits": {
            "concurrency": 4,
            "requests_per_minute": None,
            "max_attempts": 4,
            "timeout_s": 5,
            "backoff_base_s": 0.01,
        },
        "output": {"dir": "out", "filename": "{item}.png"},
        "items": items,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The integration tier (the core suite) runs on SQLite and, when configured, PostgreSQL."""
    if "backend" in metafunc.fixturenames and POSTGRES_URL and "integration" in str(metafunc.definition.path):
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


def cli_process(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen:
    """The CLI in its own process, as cron would start it."""
    return subprocess.Popen(
        [sys.executable, "-m", "batchfuse.cli", *[str(a) for a in args]],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def generation_requests(server: Any) -> list[dict[str, Any]]:
    return [r for r in server.requests() if r["api"] in ("gemini", "openai")]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path: Path) -> Any:
    """A fresh, empty database on each backend; PostgreSQL tests skip (with the reason shown)
    when BATCHFUSE_TEST_POSTGRES_URL is not set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL not configured: set BATCHFUSE_TEST_POSTGRES_URL (.ci/run does)")
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
