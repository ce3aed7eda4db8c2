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
from batchfuse.model_catalog import ModelEntry, ModelInfo, resolve
from batchfuse.providers.credentials import Credentials, key_from_env
from batchfuse.providers.fetch import Fetcher
from batchfuse.providers.http import decode_b64
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
    #: ``usageMetadata.thoughtsTokenCount``: thinking tokens, billed as output.
    thoughts_tokens: int | None = None
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
    #: Whether the field's value alone breaks the rule (so a default with it is wrong for every
    #: item); False when it depends on other parameters an item may set.
    alone: bool = True


class NoConfig(BaseModel):
    """A provider's own settings under ``provider:``; by default only ``model_info`` (any other
    extra key is refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: The rules and price of a model the catalog does not list (see :class:`ModelInfo`).
    model_info: ModelInfo | None = None


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
    #: The catalog's model names for this API (any other name is allowed, its rules unchecked).
    MODELS: ClassVar[tuple[str, ...]]
    #: Largest request body in bytes when the model's entry does not say (None: no known limit).
    MAX_REQUEST_BYTES: ClassVar[int | None] = None
    #: Whether replies report thinking tokens (``Reply.thoughts_tokens``) for a model that thinks.
    REPORTS_THOUGHTS: ClassVar[bool] = False
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
    def entry(cls, model: str | ModelEntry, config: BaseModel | None = None) -> ModelEntry:
        """The rules of ``model`` for this API: the catalog's, with ``provider.model_info`` over
        them; an ``unchecked`` entry for a model neither describes.  An entry is passed through."""
        if isinstance(model, ModelEntry):
            return model
        return resolve(model, cls.kind, getattr(config, "model_info", None))

    @classmethod
    def request_limit(cls, entry: ModelEntry) -> int | None:
        """Largest request body in bytes for ``entry`` (None: no known limit)."""
        return entry.max_request_bytes or cls.MAX_REQUEST_BYTES

    @classmethod
    def body_size(cls, entry: ModelEntry, spec: ItemSpec, image_b64: list[int]) -> int:
        """Bytes of the JSON request body of ``spec`` whose reference images encode to
        ``image_b64`` base64 characters each (URLs count as sent: their length)."""
        return 0

    @classmethod
    def check(cls, model: str | ModelEntry, params: BaseModel, images: list[ImageInfo | None]) -> list[Problem]:
        """Problems with one item under ``model``'s rules (``images`` has None for URLs)."""
        return []

    @classmethod
    def request_params(cls, model: str | ModelEntry, params: BaseModel) -> dict[str, Any]:
        """The parameters as recorded in the item's spec (they are part of its hash)."""
        return params.model_dump(mode="json")

    @classmethod
    def images_per_item(cls, params: dict[str, Any]) -> int:
        """How many images one successful request makes."""
        return 1

    @classmethod
    def tokens_per_image(cls, model: str | ModelEntry, params: dict[str, Any]) -> int:
        """Output tokens billed per image, from the API's tables."""
        return 0

    @classmethod
    @abstractmethod
    def describe_request(cls, model: str | ModelEntry, base_url: str, spec: ItemSpec) -> dict[str, Any]:
        """The request for ``spec`` as ``validate`` shows it: URL and body, no key, no image data."""

    @abstractmethod
    async def generate(self, spec: ItemSpec, resume: dict[str, Any] | None = None) -> Reply:
        """Send one item and return its images; raise a ProviderError subclass on failure.

        ``resume`` is what an earlier attempt's error carried in ``ProviderError.resume``
        (say, result URLs that were paid for but not downloaded): use it rather than paying again.
        """


def image_data(value: Any) -> bytes | RawString:
    """An image's base64 from a reply: a long one stays base64 in the reply's body (a
    :class:`RawString`, decoded in pieces straight into its output file); a short one, or one
    from a dict parsed whole (Batch mode's result lines), is decoded here."""
    return value if isinstance(value, RawString) else decode_b64(value if isinstance(value, str) else "")
