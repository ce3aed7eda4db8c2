"""Gemini native ``generateContent`` with multi-image fusion.

Request: ``POST {base}/v1beta/models/{model}:generateContent`` with ``x-goog-api-key``;
``contents[0].parts`` is the prompt then one ``inline_data`` part per reference image.
``gemini-2.5-flash-image`` makes 1K images only and its relay rejects
``responseModalities``, ``imageSize`` and ``tools``, so they are left out for it.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from batchfuse.errors import NoImageError, ProviderError, RejectedError, shorten
from batchfuse.images import ImageInfo
from batchfuse.jsonscan import RawString
from batchfuse.model_catalog import model_entry
from batchfuse.providers.base import FINISH_REASON_CHARS, Problem, Provider, Reply
from batchfuse.providers.http import (
    HttpReply,
    classify_status,
    decode_b64,
    error_message,
    post_json,
)
from batchfuse.providers.refs import encoded_refs
from batchfuse.records import ItemSpec

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"
#: The models this provider runs today; what each accepts comes from the model catalog.
MODELS = (PRO, FLASH)
ASPECT_RATIOS = model_entry(PRO).aspect_ratios
MAX_IMAGES = {m: model_entry(m).max_reference_images for m in MODELS}
#: finishReason / blockReason values that mean "this item will not be made as it is".
REJECTED_REASONS = {
    "SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "RECITATION",
    "BLOCKLIST",
    "SPII",
}
#: An image some relays put inside a text part, bare or as a markdown image.
_DATA_URL = re.compile(r"(?:!\[[^\]]*\]\()?data:(image/(?:png|jpeg|webp));base64,([A-Za-z0-9+/=\s]+)\)?")


class GeminiParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    aspect_ratio: Literal[ASPECT_RATIOS] = "1:1"  # type: ignore[valid-type]
    image_size: Literal[model_entry(PRO).sizes] = "1K"  # type: ignore[valid-type]
    response_modalities: tuple[Literal["TEXT", "IMAGE"], ...] = ("IMAGE",)
    google_search: bool = False

    @field_validator("response_modalities")
    @classmethod
    def _modalities(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if set(v) not in ({"IMAGE"}, {"TEXT", "IMAGE"}) or len(v) != len(set(v)):
            raise ValueError("must be [IMAGE] or [TEXT, IMAGE]")
        return ("TEXT", "IMAGE") if "TEXT" in v else ("IMAGE",)


class GeminiProvider(Provider):
    kind = "gemini"
    Params = GeminiParams
    MODELS: ClassVar[tuple[str, ...]] = MODELS
    #: A reply may carry more images than asked for; they are kept, named ``-1``, ``-2``, ...
    MAY_ADD_IMAGES = True

    @classmethod
    def check(cls, model: str, params: BaseModel, images: list[ImageInfo | None]) -> list[Problem]:
        assert isinstance(params, GeminiParams)
        problems = []
        entry = model_entry(model)
        limit = entry.max_reference_images
        if len(images) > limit:
            problems.append(Problem("images", f"{len(images)} reference images; {model} takes at most {limit}"))
        if params.image_size not in entry.sizes:
            problems.append(Problem("image_size", f"{model} makes {', '.join(entry.sizes)} images only"))
        if params.google_search and "googleSearch" not in entry.tools:
            problems.append(Problem("google_search", f"{model} does not take tools"))
        elif params.google_search and "TEXT" not in params.response_modalities:
            problems.append(Problem("google_search", "needs response_modalities [TEXT, IMAGE]"))
        return problems

    @classmethod
    def request_params(cls, model: str, params: BaseModel) -> dict[str, Any]:
        assert isinstance(params, GeminiParams)
        entry, sent = model_entry(model), params.model_dump(mode="json")
        if not entry.takes_image_size:
            del sent["image_size"]
        if not entry.takes_response_modalities:
            del sent["response_modalities"]
        if not entry.tools:
            del sent["google_search"]
        return sent

    @classmethod
    def tokens_per_image(cls, model: str, params: dict[str, Any]) -> int:
        entry = model_entry(model)
        size = params.get("image_size", "1K") if entry.takes_image_size else entry.sizes[0]
        return entry.tokens_per_image(size) or 0

    @classmethod
    def describe_request(cls, model: str, base_url: str, spec: ItemSpec) -> dict[str, Any]:
        parts = [
            {"inline_data": {"mime_type": "image/*", "data": f"<base64 of {r.src}>"}} for r in spec.images
        ]
        return {"url": cls.endpoint(base_url, model), "body": cls.build_body(model, spec, parts)}

    @staticmethod
    def endpoint(base_url: str, model: str) -> str:
        return f"{base_url}/v1beta/models/{model}:generateContent"

    @classmethod
    def build_body(cls, model: str, spec: ItemSpec, parts: list[dict[str, Any]]) -> dict[str, Any]:
        params = spec.params
        image_config: dict[str, Any] = {"aspectRatio": params["aspect_ratio"]}
        generation: dict[str, Any] = {"imageConfig": image_config}
        body: dict[str, Any] = {
            "contents": [{"parts": [{"text": spec.prompt}, *parts]}],
            "generationConfig": generation,
        }
        entry = model_entry(model)
        if entry.takes_response_modalities:
            generation["responseModalities"] = list(params["response_modalities"])
        if entry.takes_image_size:
            image_config["imageSize"] = params["image_size"]
        if entry.tools and params.get("google_search"):
            body["tools"] = [{"google_search": {}}]
        return body

    async def generate(self, spec: ItemSpec, resume: dict[str, Any] | None = None) -> Reply:
        refs = await encoded_refs(self.ctx, spec.images)
        parts = [{"inline_data": {"mime_type": r.mime, "data": r.b64}} for r in refs]
        reply = await post_json(
            self.ctx.session,
            self.endpoint(self.ctx.base_url, self.ctx.model),
            {"x-goog-api-key": self.ctx.credentials.secret()},
            self.build_body(self.ctx.model, spec, parts),
            self.ctx.timeout_s,
            spool_dir=self.ctx.spool_dir,
        )
        if reply.status != 200:
            raise classify_error(reply)
        return parse_reply(reply)


def classify_error(reply: HttpReply) -> ProviderError:
    """The error class of a non-200 reply, from its status and Google's error details."""
    err = reply.data.get("error", {}) if isinstance(reply.data, dict) else {}
    err = err if isinstance(err, dict) else {}
    status_name = shorten(str(err.get("status") or ""), 60)
    message = error_message(reply, err.get("message"))
    details = err.get("details") if isinstance(err.get("details"), list) else []
    text = f"HTTP {reply.status}{' ' + status_name if status_name else ''}: {message}"
    reasons = {str(d.get("reason")) for d in details if isinstance(d, dict) and d.get("reason")}
    quota_ids = [
        str(v.get("quotaId", ""))
        for d in details
        if isinstance(d, dict) and "QuotaFailure" in str(d.get("@type", ""))
        for v in d.get("violations", [])
        if isinstance(v, dict)
    ]
    delays = [
        _duration_s(d.get("retryDelay")) for d in details if isinstance(d, dict) and "RetryInfo" in str(d.get("@type", ""))
    ]
    known = [d for d in delays if d is not None]
    return classify_status(
        reply, text, status_name or str(reply.status),
        bad_key="API_KEY_INVALID" in reasons,
        quota="daily quota exhausted ({text}); it resets tomorrow" if any("PerDay" in q for q in quota_ids) else None,
        retry_after=max(known) if known else None,
    )


def _duration_s(value: Any) -> float | None:
    """A protobuf Duration in JSON form (``"1.5s"``) as seconds."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    return None


def parse_reply(reply: HttpReply) -> Reply:
    """Images, text and usage from a 200 reply; raises for blocks and image-less replies."""
    data = reply.data if isinstance(reply.data, dict) else {}
    block = (data.get("promptFeedback") or {}).get("blockReason")
    if block:
        block = shorten(str(block), 60)
        raise RejectedError(f"prompt blocked by the API: {block}", status=200, code=block,
                            block_reason=shorten(str(block), FINISH_REASON_CHARS))
    images: list[bytes | RawString] = []
    texts: list[str] = []
    finish = None
    for cand in data.get("candidates") or []:
        finish = cand.get("finishReason") or finish
        for part in (cand.get("content") or {}).get("parts") or []:
            if part.get("thought"):
                continue  # interim images of Gemini 3's thinking are not outputs
            inline = part.get("inlineData") or part.get("inline_data")
            if inline:
                images.append(_image_data(inline.get("data", "")))
            elif isinstance(part.get("text"), str):
                found = _DATA_URL.findall(part["text"])
                if found:
                    images.extend(decode_b64(b64) for _mime, b64 in found)
                    rest = _DATA_URL.sub("", part["text"]).strip()
                    if rest:
                        texts.append(rest)
                else:
                    texts.append(part["text"])
    usage = data.get("usageMetadata") if isinstance(data.get("usageMetadata"), dict) else {}
    finish = shorten(str(finish), FINISH_REASON_CHARS) if finish is not None else None
    if finish in REJECTED_REASONS:
        raise RejectedError(f"the API declined to make the image: finishReason {finish}", status=200, code=finish)
    if not images:
        said = f"; it said: {shorten(texts[0], 120)!r}" if texts else ""
        raise NoImageError(
            f"the reply carried no image (finishReason {finish or 'none'}){said}", status=200, code="no_image"
        )
    return Reply(
        images=images,
        http_status=200,
        texts=texts,
        prompt_tokens=_count(usage.get("promptTokenCount")),
        output_tokens=_count(usage.get("candidatesTokenCount")),
        total_tokens=_count(usage.get("totalTokenCount")),
        finish_reason=finish,
    )


def _image_data(value: Any) -> bytes | RawString:
    """An inline image: a long one stays base64 in the reply's body (a :class:`RawString`, decoded
    in pieces straight into its output file); a short one, or one from a dict parsed whole
    (Batch mode's result lines), is decoded here."""
    return value if isinstance(value, RawString) else decode_b64(value if isinstance(value, str) else "")


def _count(value: Any) -> int | None:
    """A token count as the API should send it (a whole number), else ``None``: nothing else
    the API puts there is stored."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
