"""What a provider signs its requests with, and where it gets it: an API key from an environment
variable today; a file or a token command would be another :class:`Credentials`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Protocol

from batchfuse.errors import InputError, register_secret

log = logging.getLogger("batchfuse.run")

#: What requests to the built-in mock (``base_url: mock``) carry when no key is set.
MOCK_KEY = "mock-key"


class Credentials(Protocol):
    """The secret a provider puts on each request (a key, a bearer token)."""

    def secret(self) -> str: ...


@dataclass(frozen=True)
class ApiKey:
    """A fixed API key; registered as a secret so no message, log or report can show it."""

    value: str = field(repr=False)

    def secret(self) -> str:
        return self.value


def key_from_env(env: str | None, file: str, *, mock: bool) -> ApiKey:
    """The key from the environment variable ``env`` (never from the manifest); the mock needs none."""
    raw = os.environ.get(env, "") if env else ""
    register_secret(raw)
    key = raw.strip()
    if not key:
        if mock:
            return ApiKey(MOCK_KEY)
        raise InputError(
            f"{file}: provider.api_key_env: environment variable {env} is not set; "
            f"export {env}=... before running (keys are never read from manifests)"
        )
    register_secret(key)
    if not key.isprintable() or not key.isascii():  # a header cannot carry it: every request would fail
        raise InputError(
            f"{file}: provider.api_key_env: environment variable {env} holds a control or "
            "non-ASCII character inside the key; set it to the key alone"
        )
    if key != raw:
        log.warning("%s had whitespace around the key (a trailing newline?); using it without", env)
    return ApiKey(key)
