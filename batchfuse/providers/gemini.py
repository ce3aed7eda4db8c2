"""Gemini native ``generateContent`` with multi-image fusion.

Request: ``POST {base}/v1beta/models/{model}:generateContent`` with ``x-goog-api-key``;
``contents[0].parts`` is the prompt then one ``inline_data`` part per reference image.
What a model takes comes from the model catalog (or ``provider.model_info``): a field it
does not take (``gemini-2.5-flash-image``: ``responseModalities``, ``imageSize``, ``tools``) is
left out of the spec, and the body is built from the spec alone.  The generation controls
(``seed``, ``temperature``, ``thinking_level``, ``include_thoughts``, ``system_instruction``,
``safety_settings``) are sent only when set.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from batchfuse.errors import NoImageError, ProviderError, RejectedError, shorten
from batchfuse.images import ImageInfo
from batchfuse.jsonscan import RawString
from batchfuse.model_catalog import RATIO, ModelEntry, load_catalog, model_entry
from batchfuse.providers.base import FINISH_REASON_CHARS, Problem, Provider, Reply, image_data
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
#: The catalog's models for this provider; any other name is allowed, its rules unchecked.
MODELS = tuple(m.name for m in load_catalog().for_provider("gemini"))
ASPECT_RATIOS = model_entry(PRO).aspect_ratios
MAX_IMAGES = {m: model_entry(m).max_reference_images for m in MODELS}
#: ``generateContent`` refuses bodies over 20 MB (``Request payload size exceeds the limit: 20971520 bytes``).
MAX_REQUEST_BYTES = 20_971_520
#: Most images one item may ask for with ``variants`` (each is its own request).
MAX_VARIANTS = 16
SEED_MAX = 2**31 - 1
#: Every ``imageSize`` any Gemini image model makes.
SIZES = ("512", "1K", "2K", "4K")
#: ``safetySettings[].category`` and ``.threshold`` values of the Gemini API (HarmCategory,
#: HarmBlockThreshold: https://ai.google.dev/gemini-api/docs/safety-settings).
HARM_CATEGORIES = ("HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_SEXUALLY_EXPLICIT",
                   "HARM_CATEGORY_DANGEROUS_CONTENT", "HARM_CATEGORY_CIVIC_INTEGRITY")
HARM_THRESHOLDS = ("BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF")
#: Parameters that are sent only when set (so specs made before they existed keep their hash).
OPTIONAL = ("seed", "temperature", "thinking_level", "include_thoughts", "system_instruction", "safety_settings")
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


class SafetySetting(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    category: Literal[HARM_CATEGORIES]  # type: ignore[valid-type]
    threshold: Literal[HARM_THRESHOLDS]  # type: ignore[valid-type]


class GeminiParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: Checked against the model's rules (catalog or ``provider.model_info``) by :meth:`GeminiProvider.check`.
    aspect_ratio: str = Field("1:1", pattern=RATIO)  # which ratios a model takes: its rules
    image_size: str = "1K"
    response_modalities: tuple[Literal["TEXT", "IMAGE"], ...] = ("IMAGE",)
    google_search: bool = False
    #: ``generationConfig.seed``; ``auto``: a stable seed derived from the item key.
    seed: int | Literal["auto"] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    thinking_level: str | None = None
    include_thoughts: bool | None = None
    system_instruction: str | None = Field(None, min_length=1, max_length=100_000)
    safety_settings: tuple[SafetySetting, ...] | None = Field(None, max_length=len(HARM_CATEGORIES))
    #: Images per item: each its own request (and its own item row ``<key>#<n>``), seeds differing.
    variants: int = Field(1, ge=1, le=MAX_VARIANTS)

    @field_validator("response_modalities")
    @classmethod
    def _modalities(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if set(v) not in ({"IMAGE"}, {"TEXT", "IMAGE"}) or len(v) != len(set(v)):
            raise ValueError("must be [IMAGE] or [TEXT, IMAGE]")
        return ("TEXT", "IMAGE") if "TEXT" in v else ("IMAGE",)

    @field_validator("image_size", mode="before")
    @classmethod
    def _size_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v  # image_size: 512, unquoted

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and not 0 <= v <= SEED_MAX:
            raise ValueError(f"must be from 0 to {SEED_MAX}, or auto")
        return v

    @field_validator("safety_settings")
    @classmethod
    def _one_per_category(cls, v: tuple[SafetySetting, ...] | None) -> tuple[SafetySetting, ...] | None:
        categories = [s.category for s in v or ()]
        if len(categories) != len(set(categories)):
            raise ValueError("names a category twice")
        return v


class GeminiProvider(Provider):
    kind = "gemini"
    Params = GeminiParams
    MODELS: ClassVar[tuple[str, ...]] = MODELS
    MAX_REQUEST_BYTES = MAX_REQUEST_BYTES
    REPORTS_THOUGHTS = True
    #: A reply may carry more images than asked for; they are kept, named ``-1``, ``-2``, ...
    MAY_ADD_IMAGES = True

    @classmethod
    def check(cls, model: str | ModelEntry, params: BaseModel, images: list[ImageInfo | None]) -> list[Problem]:
        assert isinstance(params, GeminiParams)
        entry = cls.entry(model)
        if not entry.checked:
            return []
        problems = []
        name, limit = entry.name, entry.max_reference_images
        if len(images) > limit:
            problems.append(Problem("images", f"{len(images)} reference images; {name} takes at most {limit}"))
        if params.aspect_ratio not in entry.aspect_ratios:
            problems.append(Problem(
                "aspect_ratio", f"must be one of {', '.join(entry.aspect_ratios)} (got {params.aspect_ratio!r})"
            ))
        if params.image_size not in entry.sizes:
            problems.append(Problem("image_size", f"{name} makes {', '.join(entry.sizes)} images only"
                                    if params.image_size in SIZES else
                                    f"must be one of {', '.join(entry.sizes)} (got {params.image_size!r})"))
        if params.google_search and "googleSearch" not in entry.tools:
            problems.append(Problem("google_search", f"{name} does not take tools"))
        elif params.google_search and "TEXT" not in params.response_modalities:
            problems.append(Problem("google_search", "needs response_modalities [TEXT, IMAGE]", alone=False))
        if params.thinking_level is not None:
            if not entry.thinking_levels:
                problems.append(Problem("thinking_level", f"{name} does not take a thinking level"))
            elif params.thinking_level not in entry.thinking_levels:
                problems.append(Problem(
                    "thinking_level", f"must be one of {', '.join(entry.thinking_levels)} for {name}"
                    f" (got {params.thinking_level!r})"
                ))
        if params.include_thoughts is not None and not entry.include_thoughts:
            problems.append(Problem("include_thoughts", f"{name} does not take include_thoughts"))
        return problems

    @classmethod
    def request_params(cls, model: str | ModelEntry, params: BaseModel) -> dict[str, Any]:
        """What the request sends, as the spec records it: a field the model does not take is
        left out, and so is an optional control that is not set (so older specs keep their hash)."""
        assert isinstance(params, GeminiParams)
        entry, sent = cls.entry(model), params.model_dump(mode="json")
        del sent["variants"]  # the planner makes one row per variant, each with its own seed
        if not entry.takes_image_size:
            del sent["image_size"]
        if not entry.takes_response_modalities:
            del sent["response_modalities"]
        if not entry.tools:
            del sent["google_search"]
        for name in OPTIONAL:
            if sent[name] is None:
                del sent[name]
        return sent

    @classmethod
    def tokens_per_image(cls, model: str | ModelEntry, params: dict[str, Any]) -> int:
        entry = cls.entry(model)
        if not entry.sizes:
            return 0
        size = params.get("image_size", "1K") if entry.takes_image_size else entry.sizes[0]
        return entry.tokens_per_image(size) or 0

    @classmethod
    def describe_request(cls, model: str | ModelEntry, base_url: str, spec: ItemSpec) -> dict[str, Any]:
        parts = [
            {"inline_data": {"mime_type": "image/*", "data": f"<base64 of {r.src}>"}} for r in spec.images
        ]
        name = cls.entry(model).name
        return {"url": cls.endpoint(base_url, name), "body": cls.build_body(name, spec, parts)}

    @classmethod
    def body_size(cls, entry: ModelEntry, spec: ItemSpec, image_b64: list[int]) -> int:
        parts = [{"inline_data": {"mime_type": "image/jpeg", "data": ""}} for _ in image_b64]
        skeleton = json.dumps(cls.build_body(entry.name, spec, parts), ensure_ascii=False).encode("utf-8")
        return len(skeleton) + sum(image_b64)

    @staticmethod
    def endpoint(base_url: str, model: str) -> str:
        return f"{base_url}/v1beta/models/{model}:generateContent"

    @classmethod
    def build_body(cls, model: str, spec: ItemSpec, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """The request body; every field comes from the spec's parameters (which hold only what
        the model takes: see :meth:`request_params`)."""
        params = spec.params
        image_config: dict[str, Any] = {"aspectRatio": params["aspect_ratio"]}
        generation: dict[str, Any] = {"imageConfig": image_config}
        body: dict[str, Any] = {
            "contents": [{"parts": [{"text": spec.prompt}, *parts]}],
            "generationConfig": generation,
        }
        if "response_modalities" in params:
            generation["responseModalities"] = list(params["response_modalities"])
        if "image_size" in params:
            image_config["imageSize"] = params["image_size"]
        if params.get("google_search"):
            body["tools"] = [{"google_search": {}}]
        if "seed" in params:
            generation["seed"] = params["seed"]
        if "temperature" in params:
            generation["temperature"] = params["temperature"]
        thinking = {}
        if "thinking_level" in params:
            thinking["thinkingLevel"] = params["thinking_level"]
        if "include_thoughts" in params:
            thinking["includeThoughts"] = params["include_thoughts"]
        if thinking:
            generation["thinkingConfig"] = thinking
        if "system_instruction" in params:
            body["systemInstruction"] = {"parts": [{"text": params["system_instruction"]}]}
        if "safety_settings" in params:
            body["safetySettings"] = [dict(s) for s in params["safety_settings"]]
        return body

    async def generate(self, spec: ItemSpec, resume: dict[str, Any] | None = None) -> Reply:
        refs = await encoded_refs(self.ctx, spec.images)
        entry = self.entry(self.ctx.model, self.ctx.config)
        limit = self.request_limit(entry)
        if limit is not None and (size := self.body_size(entry, spec, [len(r.b64) for r in refs])) > limit:
            raise RejectedError(  # not sent: the API would refuse it (a URL image larger than planned)
                f"request body {size:,} bytes is over the API's limit of {limit:,}; not sent", code="too_large"
            )
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
                images.append(image_data(inline.get("data", "")))
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
        thoughts_tokens=_count(usage.get("thoughtsTokenCount")),
        finish_reason=finish,
    )


def _count(value: Any) -> int | None:
    """A token count as the API should send it (a whole number), else ``None``: nothing else
    the API puts there is stored."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
