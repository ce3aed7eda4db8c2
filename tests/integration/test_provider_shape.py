"""A provider is one module plus one registry line: its own keys under ``provider:`` (validated by
its ``Config``, errors naming ``provider.<field>``), its own credentials and its own session."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from pydantic import BaseModel, ConfigDict

from batchfuse import providers
from batchfuse.providers.gemini import GeminiProvider
from tests.conftest import cli, manifest

TOKEN = "token-from-a-file-0123456789"
sessions: list[aiohttp.ClientSession] = []


class TokenFile:
    """Credentials read from a file at each request (as a token a command refreshes would be)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def secret(self) -> str:
        return self.path.read_text(encoding="utf-8").strip()


class VertexLikeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str
    location: str = "us-central1"
    token_file: str


class VertexLikeProvider(GeminiProvider):
    """A Gemini-shaped API signed with a token from a file rather than one key from the environment."""

    kind = "vertex_like"
    Config = VertexLikeConfig

    @classmethod
    def credentials_problem(cls, api_key_env, config, *, mock):
        return None  # the token file is named by the provider's own config, checked by its model

    @classmethod
    def credentials(cls, api_key_env, config, file, *, mock):
        assert isinstance(config, VertexLikeConfig)
        return TokenFile(Path(file).parent / config.token_file)

    @classmethod
    def open_session(cls, connector, config):
        session = super().open_session(connector, config)
        sessions.append(session)
        return session


@pytest.fixture
def vertex_like(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(providers.PROVIDERS, "vertex_like", f"{__name__}:VertexLikeProvider")
    sessions.clear()


def vertex_manifest(base_url: str, **provider: object) -> dict:
    data = manifest(base_url, [{"id": "a", "prompt": "a chair"}])
    data["provider"] = {"kind": "vertex_like", "base_url": base_url, "model": "gemini-3-pro-image-preview",
                        **provider}
    return data


def test_the_providers_own_keys_are_validated_by_its_config(job, mock, vertex_like):
    job.write(vertex_manifest(mock.url, projct="p", token_file="token"))
    result = cli("validate", job.manifest)
    assert result.exit_code == 2
    assert f"{job.manifest}: provider.projct: unknown key (did you mean 'project'?)" in result.stderr
    assert f"{job.manifest}: provider.project: is required" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_key_no_provider_knows_is_refused_naming_it(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "x"}], provider={"region": "eu"}))
    result = cli("validate", job.manifest)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {job.manifest}: provider.region: unknown key"


def test_the_provider_brings_its_own_credentials_and_session(job, mock, vertex_like, monkeypatch):
    monkeypatch.delenv("DMXAPI_KEY", raising=False)
    mock.configure(api_key=TOKEN)
    (job.root / "token").write_text(TOKEN + "\n", encoding="utf-8")
    job.write(vertex_manifest(mock.url, project="p", token_file="token"))
    assert cli("run", job.manifest).exit_code == 0
    assert job.state_of() == {"a": "succeeded"}
    assert len(sessions) == 1 and sessions[0].closed
