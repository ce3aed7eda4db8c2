"""The one exception hierarchy of batchfuse.

::

    BatchfuseError                  root; its docstring is the default message
    ├── InputError                  bad input; exit code 2, shown as one line
    │   ├── ManifestError           names the file, the item and the field
    │   ├── ManifestProblems        several ManifestErrors, one line each
    │   └── EmptyDatabase           the database has no schema: no job ever ran against it
    ├── StoreError                  the database cannot be used (exit 3: try again, or repair it)
    │   ├── StoreSetupError         the database setting cannot work as given (exit 2: fix it)
    │   └── JobLockedError          another live runner holds the job (SQLite; exit 2)
    ├── OutputError                 an output cannot be written (disk full, read-only)
    └── ProviderError               an API call failed; carries its classification
        ├── TransientError          retry with backoff (429, 5xx, timeouts, resets, bad bodies)
        │   └── NoImageError        a reply without an image: retried a few times, then rejected
        ├── RejectedError           this item will not work as it is (400, safety block)
        │   ├── GoneError           a result or reference URL no longer serves the file
        │   └── GuardRefused        the network guard refuses a URL (scheme, private address)
        └── FatalError              the job cannot go on (bad key, unknown model, daily quota)

Exit codes: 0 done, 1 some items failed, 2 bad input (InputError, StoreSetupError,
JobLockedError), 3 the run was stopped (signal, deadline, budget, fatal API error, StoreError),
4 internal error (a bug).  ``ValueError`` subclasses beside their code (``PathProblem``,
``TemplateProblem``, ``ImageProblem``, ``FileProblem``, ``YamlProblem``, ``CatalogError``) are
never shown as they are: their callers turn them into a ``ManifestError`` naming the field.

Lower-level library errors (aiohttp, OSError from sockets) are translated into
``ProviderError`` subclasses inside ``batchfuse.providers`` only.  Messages never contain
an API key: every message built from a foreign exception goes through :func:`scrub`.
"""

from __future__ import annotations

import re
from enum import Enum

#: Exit code of an internal error (a bug in batchfuse), apart from 3 (the run was stopped); the
#: others are in :mod:`batchfuse.run.job` and on the exception classes.
EXIT_INTERNAL = 4


class ErrorClass(str, Enum):
    """How a failed attempt is treated by the scheduler."""

    #: Worth retrying: the same request may succeed later.
    transient = "transient"
    #: The item will not work as it is; retrying would spend money for nothing.
    rejected = "rejected"
    #: Every item would fail the same way: stop the job, leave items pending.
    fatal = "fatal"
    #: The attempt was cut short by us (signal, crash); it does not count.
    interrupted = "interrupted"


class BatchfuseError(Exception):
    """batchfuse failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__ or "error")

    @property
    def message(self) -> str:
        return str(self.args[0])


class InputError(BatchfuseError):
    """The input is not valid."""

    exit_code = 2


class ManifestError(InputError):
    """The manifest is not valid."""

    def __init__(
        self, file: str, message: str, item: str | None = None, field: str | None = None, row: int | None = None
    ):
        self.file, self.item, self.field, self.row = file, item, field, row
        where = [file]
        if row is not None:
            where.append(f"row {row}")
        elif item is not None:
            where.append(f"item {printable(item)}")
        if field:
            where.append(field)
        super().__init__(f"{': '.join(where)}: {message}")


class ManifestProblems(InputError):
    """The manifest has problems."""

    def __init__(self, problems: list[ManifestError]) -> None:
        self.problems = problems
        super().__init__("\n".join(p.message for p in problems))


class EmptyDatabase(InputError):
    """The database has no schema: no job has ever run against it."""


class StoreError(BatchfuseError):
    """The job database cannot be used."""

    exit_code = 3


class StoreSetupError(StoreError):
    """The database cannot be used as given (not a database, a driver missing, a newer schema)."""

    exit_code = 2


class JobLockedError(StoreError):
    """Another runner is working on this job."""

    #: The caller's mistake, and nothing was sent.
    exit_code = 2


class OutputError(BatchfuseError):
    """An output file cannot be written."""

    exit_code = 3


class ProviderError(BatchfuseError):
    """The API call failed."""

    error_class: ErrorClass = ErrorClass.transient

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        resume: dict | None = None,
        block_reason: str | None = None,
    ) -> None:
        super().__init__(scrub(message) if message else None)
        self.status = status
        self.retry_after = retry_after
        #: A short machine-readable cause (``timeout``, ``private_address``, the API's status name).
        self.code = code
        #: Why the API blocked the prompt (Gemini's ``promptFeedback.blockReason``), recorded on the attempt.
        self.block_reason = block_reason
        #: What the next attempt can pick up instead of starting over (e.g. result URLs
        #: already paid for); recorded on the item, handed back to the provider.
        self.resume = resume


class TransientError(ProviderError):
    """The API failed for now; the request may succeed if tried again."""

    error_class = ErrorClass.transient


class NoImageError(TransientError):
    """The reply carried no image; retried a few times, then the item counts as rejected."""


class RejectedError(ProviderError):
    """The API will not make this item as it is."""

    error_class = ErrorClass.rejected


class FatalError(ProviderError):
    """The API refuses every request of this job."""

    error_class = ErrorClass.fatal
    exit_code = 3


def printable(text: str) -> str:
    """``text`` with control characters escaped, so a message stays one clean line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_SECRET_PATTERNS = [
    re.compile(r"(?i)(authorization\s*[:=]\s*)(bearer\s+)?[^\s,'\"}]+"),
    re.compile(r"(?i)(x-goog-api-key\s*[:=]\s*)[^\s,'\"}]+"),
    re.compile(r"(?i)([?&]key=)[^&\s'\"]+"),
    re.compile(r"\b(sk-)[A-Za-z0-9_\-*]{8,}"),
    re.compile(r"\b(AIza)[0-9A-Za-z_\-]{20,}"),
]
_known_secrets: set[str] = set()
#: A run of this many characters of a known secret is removed wherever it appears.
FRAGMENT = 8
#: At the very end (a cut) or start of a text, a piece of a known secret this long is removed too.
EDGE_FRAGMENT = 6
#: Key-shaped pieces left at the end of a text cut short (``sk-abc``, ``AIzaSyA``).
_PATTERN_TAILS = [re.compile(r"\b(sk-)[A-Za-z0-9_\-]{3,}$"), re.compile(r"\b(AIza)[0-9A-Za-z_\-]{2,}$")]


def register_secret(value: str) -> None:
    """Remember a secret so that :func:`scrub` removes it wherever it appears."""
    if value and len(value) >= 4:
        _known_secrets.add(value)


def scrub(text: str) -> str:
    """Remove API keys and authorization headers from a message.

    A known secret is removed whole, and so is any piece of it of :data:`FRAGMENT` characters
    or more, and a shorter piece (:data:`EDGE_FRAGMENT` or more) at the very end or start, where
    an earlier cut (by the API, or by a byte limit) may have split it.
    """
    for secret in _known_secrets:
        text = _scrub_secret(text.replace(secret, "***"), secret)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    for pattern in _PATTERN_TAILS:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


def shorten(text: str, limit: int) -> str:
    """``text`` scrubbed, then cut to at most ``limit`` characters (plus an ellipsis).

    The one way to shorten anything an API said: scrubbing first means a cut cannot leave a
    key's prefix behind, and what the cut leaves is scrubbed again for pieces split earlier.
    """
    text = scrub(text)
    if len(text) <= limit:
        return text
    return scrub(text[:limit]) + "…"


def _scrub_secret(text: str, secret: str) -> str:
    """``text`` with every piece of ``secret`` (see :func:`scrub`) replaced by ``***``."""
    if len(secret) < FRAGMENT or len(text) < EDGE_FRAGMENT:
        return text
    marks = bytearray(len(text))
    for i in range(len(secret) - FRAGMENT + 1):
        window = secret[i : i + FRAGMENT]
        at = text.find(window)
        while at != -1:
            marks[at : at + FRAGMENT] = b"\1" * FRAGMENT
            at = text.find(window, at + 1)
    for size in range(min(len(secret), len(text)), EDGE_FRAGMENT - 1, -1):
        if text.endswith(secret[:size]):
            marks[len(text) - size :] = b"\1" * size
            break
    for size in range(min(len(secret), len(text)), EDGE_FRAGMENT - 1, -1):
        if text.startswith(secret[-size:]):
            marks[:size] = b"\1" * size
            break
    if not any(marks):
        return text
    out, i = [], 0
    while i < len(text):
        if marks[i]:
            while i < len(text) and marks[i]:
                i += 1
            out.append("***")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class GoneError(RejectedError):
    """The URL no longer serves the file (403, 404, 410): an expired or dead link."""


class GuardRefused(RejectedError):
    """The network guard refuses this URL (scheme, address, form): permanent for that URL."""
