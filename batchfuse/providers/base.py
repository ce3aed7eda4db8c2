"""What a provider is: it checks an item's parameters against its API's rules, turns an
item into a request, and a reply into images, text and usage — or into a classified
:class:`~batchfuse.errors.ProviderError`.  The scheduler knows nothing else about APIs.

A provider also owns its configuration (keys under ``provider:`` beyond the generic ``kind,
base_url, model, api_key_env, mock``, validated by its ``Config`` model), its credentials
(:meth:`Provider.credentials`) and its HTTP session (:meth:`Provider.open_session`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
from pydantic import BaseModel, ConfigDict

from batchfuse.errors import scrub, shorten
from batchfuse.images import EncodedImageCache, ImageInfo
from batchfuse.jsonscan import RawString
from batchfuse.providers.credentials import Credentials, key_from_env
from batchfuse.providers.fetch import Fetcher
from batchfuse.records import ItemSpec

#: ``attempts.finish_reason`` holds 50 characters; an echo longer than that is cut, scrubbed first.
FINISH_REASON_CHARS = 48


@dataclass
class Reply:
    """A successful reply: the final images (bytes) and what came with them."""

    #: Each image's bytes, or its base64 left in the reply's body (decoded when it is written).
    images: list[bytes | RawString]
    http_status: int = 200
    texts: list[str] = field(default_factory=list)
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    finish_reason: str | None = None
    #: Where each image was downloaded from, when the API answered with URLs.
    source_urls: list[str | None] = field(default_factory=list)
    #: When the API made the images behind ``source_urls``.
    source_at: float | None = None

    def __post_init__(self) -> None:
        # Everything the API said that is stored, logged or shown is scrubbed here, once.
        self.texts = [scrub(t) for t in self.texts]
        if self.finish_reason is not None:
            self.finish_reason = shorten(str(self.finish_reason), FINISH_REASON_CHARS)
        self.source_urls = [scrub(u) if u is not None else None for u in self.source_urls]


@dataclass(frozen=True)
class Problem:
    """A rule of the API an item breaks, found before anything is sent."""

    field: str
    message: str


class NoConfig(BaseModel):
    """A provider's own settings under ``provider:``; none by default (any extra key is refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass
class ProviderContext:
    """What a provider gets to work with during a run."""

    base_url: str
    model: str
    credentials: Credentials
    session: aiohttp.ClientSession
    images: EncodedImageCache
    timeout_s: float
    fetcher: Fetcher
    #: The provider's own settings (an instance of its ``Config``).
    config: BaseModel = field(default_factory=NoConfig)
    #: Where large replies are spooled while they are read (None: the system's temp folder).
    spool_dir: Path | None = None


class Provider(ABC):
    """One API. Subclasses set ``kind``, ``Params`` and ``MODELS`` and implement ``generate``."""

    #: The manifest's ``provider.kind``.
    kind: ClassVar[str]
    #: The per-item parameters (``defaults`` and item overrides), as a strict pydantic model.
    Params: ClassVar[type[BaseModel]]
    #: Model names this API accepts.
    MODELS: ClassVar[tuple[str, ...]]
    #: The provider's own keys under ``provider:`` (errors name ``provider.<field>``).
    Config: ClassVar[type[BaseModel]] = NoConfig

    @classmethod
    def credentials_problem(cls, api_key_env: str | None, config: BaseModel, *, mock: bool) -> Problem | None:
        """What is missing for :meth:`credentials`, checked offline (``validate``); the default
        needs ``api_key_env`` for a real API."""
        if not mock and not api_key_env:
            return Problem("api_key_env", "is required for a real API")
        return None

    @classmethod
    def credentials(cls, api_key_env: str | None, config: BaseModel, file: str, *, mock: bool) -> Credentials:
        """What this provider signs requests with; raises InputError (naming ``file``) when it
        cannot have them.  The default: an API key from the environment variable ``api_key_env``."""
        return key_from_env(api_key_env, file, mock=mock)

    @classmethod
    def open_session(cls, connector: aiohttp.BaseConnector, config: BaseModel) -> aiohttp.ClientSession:
        """The HTTP session of a run (the runner's connector marks when a request leaves)."""
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx

    @classmethod
    def check(cls, model: str, params: BaseModel, images: list[ImageInfo | None]) -> list[Problem]:
        """Problems with one item under ``model``'s rules (``images`` has None for URLs)."""
        return []

    @classmethod
    def request_params(cls, model: str, params: BaseModel) -> dict[str, Any]:
        """The parameters as recorded in the item's spec (they are part of its hash)."""
        return params.model_dump(mode="json")

    @classmethod
    def images_per_item(cls, params: dict[str, Any]) -> int:
        """How many images one successful request makes."""
        return 1

    @classmethod
    def tokens_per_image(cls, model: str, params: dict[str, Any]) -> int:
        """Output tokens billed per image, from the API's tables."""
        return 0

    @classmethod
    @abstractmethod
    def describe_request(cls, model: str, base_url: str, spec: ItemSpec) -> dict[str, Any]:
        """The request for ``spec`` as ``validate`` shows it: URL and body, no key, no image data."""

    @abstractmethod
    async def generate(self, spec: ItemSpec, resume: dict[str, Any] | None = None) -> Reply:
        """Send one item and return its images; raise a ProviderError subclass on failure.

        ``resume`` is what an earlier attempt's error carried in ``ProviderError.resume``
        (say, result URLs that were paid for but not downloaded): use it rather than paying again.
        """
