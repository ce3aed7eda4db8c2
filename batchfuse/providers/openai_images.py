"""OpenAI-compatible ``POST {base}/v1/images/generations`` (text-to-image, image-to-image,
multi-image fusion).

``image`` is one string or an array: local files go as ``data:image/...;base64,...`` URLs,
http(s) URLs pass through unchanged.  With ``response_format: url`` every returned URL is
downloaded inside the same attempt (links live about 24 h).  If the generation succeeded but a
download failed, the URLs ride on the error as a resume note, and the next attempt — in this
run or a later one — downloads them instead of paying for a new generation; only a dead or
expired link leads to a new generation.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from batchfuse.errors import (
    FatalError,
    GoneError,
    NoImageError,
    ProviderError,
    RejectedError,
    TransientError,
    scrub,
    shorten,
)
from batchfuse.images import ImageInfo
from batchfuse.model_catalog import RATIO, ModelEntry, load_catalog, model_entry
from batchfuse.providers.base import Problem, Provider, ProviderContext, Reply, image_data
from batchfuse.providers.fetch import is_url
from batchfuse.providers.http import (
    HttpReply,
    classify_status,
    error_message,
    not_an_image,
    post_json,
)
from batchfuse.providers.refs import encoded_ref
from batchfuse.records import ItemSpec

#: The catalog's model names for the relay; any other name is allowed, its rules unchecked.
MODELS = tuple(m.name for m in load_catalog().for_provider("openai_images"))
#: What the relay accepts and makes, per model, from the model catalog.
ENTRIES = {m: model_entry(m) for m in MODELS}
MAX_IMAGES = min(e.max_reference_images for e in ENTRIES.values())
#: Result links live about 24 h; past this age a recorded link is not worth trying.
URL_FRESH_S = 23 * 3600
#: The relay hands the images on inline to Gemini, whose limit is taken for the whole body.
MAX_REQUEST_BYTES = 20_971_520
#: Generation controls of the Gemini provider that ``/v1/images/generations`` has no field for.
NOT_TAKEN = {
    "seed": "the relay's /v1/images/generations takes no seed (use provider kind gemini for seeds)",
    "temperature": "the relay's /v1/images/generations takes no temperature",
    "thinking_level": "the relay's /v1/images/generations takes no thinking level",
    "include_thoughts": "the relay's /v1/images/generations takes no include_thoughts",
    "system_instruction": "the relay's /v1/images/generations takes no system instruction",
    "safety_settings": "the relay's /v1/images/generations takes no safety settings",
    "variants": "use n: the relay makes n images in one request",
}


class OpenAIImagesParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: An aspect ratio, checked against the model's rules by :meth:`OpenAIImagesProvider.check`.
    size: str = Field("1:1", pattern=RATIO)
    response_format: Literal["url", "b64_json"] = "url"
    n: int = Field(1, ge=1, le=10)
    # Controls the relay does not take: accepted here only to be refused by name (see NOT_TAKEN).
    seed: Any = None
    temperature: Any = None
    thinking_level: Any = None
    include_thoughts: Any = None
    system_instruction: Any = None
    safety_settings: Any = None
    variants: Any = None


class OpenAIImagesProvider(Provider):
    kind = "openai_images"
    Params = OpenAIImagesParams
    MODELS: ClassVar[tuple[str, ...]] = MODELS
    MAX_REQUEST_BYTES = MAX_REQUEST_BYTES

    @classmethod
    def check(cls, model: str | ModelEntry, params: BaseModel, images: list[ImageInfo | None]) -> list[Problem]:
        assert isinstance(params, OpenAIImagesParams)
        problems = [Problem(name, why) for name, why in NOT_TAKEN.items() if getattr(params, name) is not None]
        entry = cls.entry(model)
        if not entry.checked:
            return problems
        limit = entry.max_reference_images
        if len(images) > limit:
            problems.append(Problem("images", f"{len(images)} reference images; {entry.name} takes at most {limit}"))
        if params.size not in entry.aspect_ratios:
            problems.append(Problem("size", f"must be one of {', '.join(entry.aspect_ratios)} (got {params.size!r})"))
        return problems

    @classmethod
    def request_params(cls, model: str | ModelEntry, params: BaseModel) -> dict[str, Any]:
        return params.model_dump(mode="json", include={"size", "response_format", "n"})

    @classmethod
    def images_per_item(cls, params: dict[str, Any]) -> int:
        return int(params.get("n", 1))

    @classmethod
    def tokens_per_image(cls, model: str | ModelEntry, params: dict[str, Any]) -> int:
        entry = cls.entry(model)
        size = entry.relay_size or (entry.sizes[0] if entry.sizes else None)
        return (entry.tokens_per_image(size) or 0) if size else 0

    @classmethod
    def body_size(cls, entry: ModelEntry, spec: ItemSpec, image_b64: list[int]) -> int:
        images = ["data:image/jpeg;base64," for _ in image_b64]
        skeleton = json.dumps(cls.build_body(entry.name, spec, images), ensure_ascii=False).encode("utf-8")
        return len(skeleton) + sum(image_b64)

    @staticmethod
    def endpoint(base_url: str) -> str:
        return f"{base_url}/v1/images/generations"

    @classmethod
    def build_body(cls, model: str, spec: ItemSpec, images: list[str]) -> dict[str, Any]:
        params = spec.params
        body: dict[str, Any] = {
            "model": model,
            "prompt": spec.prompt,
            "size": params["size"],
            "response_format": params["response_format"],
            "n": params["n"],
        }
        if len(images) == 1:
            body["image"] = images[0]
        elif images:
            body["image"] = images
        return body

    @classmethod
    def describe_request(cls, model: str | ModelEntry, base_url: str, spec: ItemSpec) -> dict[str, Any]:
        images = [r.src if is_url(r.src) else f"data:image/*;base64,<{r.src}>" for r in spec.images]
        return {"url": cls.endpoint(base_url), "body": cls.build_body(cls.entry(model).name, spec, images)}

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(ctx)
        #: Whether any result link was downloaded in this run (see :meth:`_refused`).
        self._downloaded = False

    async def generate(self, spec: ItemSpec, resume: dict[str, Any] | None = None) -> Reply:
        dead: str | None = None
        if resume and time.time() - float(resume.get("created", 0)) < URL_FRESH_S:
            try:
                return await self._download(resume["urls"], float(resume["created"]))
            except GoneError as exc:
                dead = exc.message  # the links are dead: only now is a new generation worth paying for
            except RejectedError as exc:
                raise self._refused(exc, resume, first_try=False) from None
            except ProviderError as exc:
                raise _download_failed(exc, resume) from None
        images = [
            r.src if is_url(r.src) else (await encoded_ref(self.ctx, r)).data_url for r in spec.images
        ]
        reply = await post_json(
            self.ctx.session,
            self.endpoint(self.ctx.base_url),
            {"Authorization": f"Bearer {self.ctx.credentials.secret()}"},
            self.build_body(self.ctx.model, spec, images),
            self.ctx.timeout_s,
            spool_dir=self.ctx.spool_dir,
        )
        if reply.status != 200:
            raise classify_error(reply)
        data = reply.data.get("data") if isinstance(reply.data, dict) else None
        created = _created(reply.data.get("created") if isinstance(reply.data, dict) else None)
        expected = int(spec.params["n"])
        if not isinstance(data, list) or len(data) < expected:
            got = len(data) if isinstance(data, list) else 0
            raise NoImageError(f"the reply carried {got} of {expected} images", status=200, code="no_image")
        if all(isinstance(d, dict) and d.get("b64_json") for d in data):
            return Reply(images=[image_data(d["b64_json"]) for d in data[:expected]], http_status=200)
        urls = [d.get("url") for d in data[:expected] if isinstance(d, dict)]
        if len(urls) != expected or not all(isinstance(u, str) and u for u in urls):
            raise TransientError("the reply's data entries carry neither url nor b64_json", status=200)
        # the links as stored for the next attempt: scrubbed (a link that carried the key will not
        # work again, and is generated anew then), like everything else the API said
        note = {"urls": [scrub(u) for u in urls], "created": created}
        try:
            reply = await self._download(urls, created)
        except GoneError as exc:
            raise TransientError(f"a result link was dead at once: {exc.message}", status=200) from None
        except RejectedError as exc:
            raise self._refused(exc, note, first_try=True) from None
        except ProviderError as exc:
            raise _download_failed(exc, note) from None
        if dead is not None:
            # Said in the attempt's text: this success paid for a second generation, and why.
            reply.texts.insert(0, f"generated again: the earlier generation's result link was dead ({dead})")
        return reply

    async def _download(self, urls: list[str], created: float) -> Reply:
        """Fetch every result URL; any failure fails the whole set (all or nothing)."""
        fetched = await asyncio.gather(*(self.ctx.fetcher.get(u) for u in urls))
        for f in fetched:
            if (kind := not_an_image(f.content_type)) is not None:
                raise TransientError(f"a result link served {shorten(kind, 60)}, not an image", code="not_image")
        self._downloaded = True
        return Reply(
            images=[f.data for f in fetched], http_status=200, source_urls=list(urls), source_at=created
        )

    def _refused(self, exc: RejectedError, resume: dict[str, Any], first_try: bool) -> ProviderError:
        """A result link the download rules refuse (a private address, too large, not http):
        permanent for that link, so never retried and never counted as an API failure.

        The item fails with the reason, keeping the links (a run with ``network.allow_private``
        or a larger ``max_download_mb`` downloads them without paying again) — unless no result
        link has been downloaded in this run yet and a fresh one is refused for its address:
        then every result of this API is most likely refused, and the job stops with one line
        rather than paying for each item in turn.
        """
        hint = " (raise network.max_download_mb to allow it)" if exc.code == "too_large" else ""
        message = f"the API's result link is refused: {exc.message}{hint}"
        if first_try and exc.code == "private_address" and not self._downloaded:
            return FatalError(message, status=200, code=exc.code, resume=resume)
        return RejectedError(message, status=200, code=exc.code, resume=resume)


def _download_failed(exc: ProviderError, resume: dict[str, Any]) -> TransientError:
    """Generated (and paid for) but not downloaded: keep the links for the next attempt."""
    return TransientError(
        f"generated, but the download failed: {exc.message}; the next attempt downloads it again",
        status=200,
        code="download",
        resume=resume,
    )


def classify_error(reply: HttpReply) -> ProviderError:
    """The error class of a non-200 reply, from its status and ``{"error": {message, type, code}}``."""
    err = reply.data.get("error", {}) if isinstance(reply.data, dict) else {}
    err = err if isinstance(err, dict) else {"message": str(err)}
    code = shorten(str(err.get("code") or ""), 60)
    kind = shorten(str(err.get("type") or ""), 60)
    message = error_message(reply, err.get("message"))
    text = f"HTTP {reply.status}{' ' + code if code else ''}: {message}"
    return classify_status(
        reply, text, code or kind or str(reply.status),
        bad_key=code == "invalid_api_key",
        not_found=code == "model_not_found",
        quota="quota exhausted ({text})" if "quota" in code or "quota" in kind else None,
    )


def _created(value: Any) -> float:
    """The reply's ``created`` (unix time), or now when it is missing or not a sane number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e11:
        return float(value)
    return time.time()
