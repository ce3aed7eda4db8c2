"""What a batch API is, to the batch layer (:mod:`batchfuse.batch`): upload a file, create a
batch from an uploaded input file, get, list, cancel, download its results; build one input
line for an item and read one result line back into a :class:`~batchfuse.providers.base.Reply`
or a classified error.

Gemini's Batch API (:mod:`batchfuse.providers.gemini_batch`) is the one implementation; the
OpenAI Batch API (``/v1/files`` + ``/v1/batches`` with endpoint ``/v1/images/generations``)
fits the same shape: its ``custom_id`` is the line key, its ``output_file_id`` the result file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchfuse.errors import ProviderError
from batchfuse.providers.base import Reply
from batchfuse.records import ItemSpec

#: A batch's states, as the batch layer and the store name them.
PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED = (
    "pending", "running", "succeeded", "failed", "cancelled", "expired",
)
LIVE = frozenset({PENDING, RUNNING})
ENDED = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})


@dataclass(frozen=True)
class RemoteFile:
    """A file held by the API's Files service."""

    name: str
    uri: str
    mime: str
    size: int
    #: When the API deletes it (UNIX seconds), if it says.
    expires_at: float | None = None


@dataclass(frozen=True)
class RemoteBatch:
    """A batch as the API reports it."""

    name: str
    display_name: str
    state: str
    request_count: int = 0
    succeeded: int | None = None
    failed: int | None = None
    #: Where the results are, once it has succeeded.
    result_file: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ResultLine:
    """One line of a results file: its key, and the reply or the classified error."""

    key: str | None
    reply: Reply | None = None
    error: ProviderError | None = None


class BatchBackend(ABC):
    """One batch API, bound to a session, a base URL, a model and credentials."""

    #: ``batches.backend`` in the store.
    kind: str

    @abstractmethod
    async def upload(self, path: Path, mime: str, display_name: str) -> RemoteFile:
        """Upload a file (the input JSONL, a reference image)."""

    @abstractmethod
    async def create(self, display_name: str, input_file: RemoteFile) -> RemoteBatch:
        """Create a batch; not idempotent: the caller makes sure it is called once."""

    @abstractmethod
    async def get(self, name: str) -> RemoteBatch:
        """The batch's state now."""

    @abstractmethod
    def list(self) -> AsyncIterator[RemoteBatch]:
        """Every batch of the account, newest first, page by page."""

    @abstractmethod
    async def cancel(self, name: str) -> None:
        """Cancel a live batch (an ended one is left as it is)."""

    @abstractmethod
    async def download(self, result_file: str, dest: Path) -> int:
        """Download the results to ``dest``, resuming from the bytes already there; returns its size."""

    @abstractmethod
    def request_line(self, key: str, spec: ItemSpec, files: list[RemoteFile]) -> dict[str, Any]:
        """The input line of one item; its reference images are the uploaded ``files``."""

    @abstractmethod
    def result_line(self, line: dict[str, Any]) -> ResultLine:
        """One parsed result line read exactly like an online reply."""
