"""Gemini ``generateContent`` request checks: contents, inline images, generation config, tools,
each refused as the real service refuses it (:class:`InvalidRequest`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchfuse.model_catalog import ModelEntry

from .faults import Marker, parse_markers
from .google_json import PART_DATA, normalize_request, snake
from .images import ImageDataError, Reference, ReferenceDecoder
from .validation import InvalidRequest

#: Image input types the Gemini image models take (model cards: "Supported MIME types").
IMAGE_MIME_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"})
_MODALITIES = ({"IMAGE"}, {"TEXT", "IMAGE"})
#: Resolves a ``fileData`` part to ``{"mimeType", "data"}`` (Files API uploads), or refuses it.
FileResolver = Callable[[dict[str, Any], str], dict[str, Any]]


@dataclass(frozen=True)
class GeminiRequest:
    """The parts of a valid request that shape the reply."""

    prompt: str
    refs: list[Reference]
    markers: list[Marker]
    #: ``TEXT`` in here puts a text part before the image.
    modalities: frozenset[str]
    ratio: str
    image_size: str
    #: ``thinkingConfig.includeThoughts`` as sent (``None``: not set, thoughts shown by default).
    include_thoughts: bool | None = None


# -- request checks --------------------------------------------------------------------------


def _image_format(raw: bytes) -> str | None:
    """The image type the bytes really are, by their signature (``None``: not one we know)."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if raw.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    if raw[4:8] == b"ftyp" and raw[8:12] in HEIF_BRANDS:
        return "image/heif"
    if raw[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def _check_image(blob: dict[str, Any], where: str) -> tuple[str, bytes]:
    """The mime type and bytes of an inline image; refuses a type the API does not take, or
    bytes that are not the type the request claims."""
    mime = str(blob.get("mimeType", "")).lower()
    raw = blob.get("data", b"")
    if mime not in IMAGE_MIME_TYPES:
        raise InvalidRequest(f"Unsupported MIME type: {mime or '(none)'} at '{where}.inline_data'.")
    if not raw:
        raise InvalidRequest(f"{where}.inline_data.data is empty.")
    actual = _image_format(raw)
    claimed = "image/heif" if mime == "image/heic" else mime
    if actual != claimed:
        looks = f"its bytes are {actual}" if actual else "its bytes are not a known image format"
        raise InvalidRequest(
            f"Unable to process input image at '{where}': mime_type is {mime} but {looks}."
        )
    return mime, raw


def _check_contents(
    req: dict[str, Any], files: FileResolver | None = None
) -> tuple[str, list[tuple[str, bytes]]]:
    """The prompt (the user turns' text) and each reference image (mime, bytes), in order.

    Google accepts parts in any order, image-only turns and earlier ``model`` turns (history):
    only ``user`` turns feed the picture here. ``fileData`` parts name files uploaded to this
    mock's Files API (``files``); the mock fetches nothing else.
    """
    contents = req.get("contents") or []
    if not contents:
        raise InvalidRequest("* GenerateContentRequest.contents: contents is not specified")
    texts: list[str] = []
    images: list[tuple[str, bytes]] = []
    for c_index, content in enumerate(contents):
        role = content.get("role", "user")
        if role not in ("user", "model"):
            raise InvalidRequest(f"Please use a valid role: user, model. (contents[{c_index}].role is {role!r})")
        parts = content.get("parts") or []
        if not parts:
            raise InvalidRequest(
                f"* GenerateContentRequest.contents[{c_index}].parts: contents.parts must not be empty."
            )
        if role == "model":
            continue
        for p_index, part in enumerate(parts):
            where = f"contents[{c_index}].parts[{p_index}]"
            if "text" in part:
                if not part["text"].strip():
                    raise InvalidRequest(
                        f"Unable to submit request because it has an empty text parameter at '{where}'. "
                        "Add a value to the parameter and try again."
                    )
                texts.append(part["text"])
            elif "inlineData" in part:
                images.append(_check_image(part["inlineData"], where))
            elif "fileData" in part:
                if files is None:
                    raise InvalidRequest(f"{where}: fileData (Files API) is not served by this mock; send inline_data.")
                blob = files(part["fileData"], where)
                images.append(_check_image(blob, where))
            elif any(name in part for name in PART_DATA):
                raise InvalidRequest(f"{where}: only text and inline_data parts are taken by image models.")
    if not texts and not images:
        raise InvalidRequest("* GenerateContentRequest.contents: the user turns carry no text and no image.")
    return "\n".join(texts), images


def _check_number(config: dict[str, Any], name: str, low: float, high: float) -> None:
    if name in config and not low <= config[name] <= high:
        raise InvalidRequest(f"{name} must be from {low:g} to {high:g}, got {config[name]!r}")


def _check_thinking(config: dict[str, Any], spec: ModelEntry) -> bool | None:
    """Checks ``thinkingConfig``; returns its ``includeThoughts`` (``None`` if not set)."""
    thinking = config.get("thinkingConfig")
    if thinking is None:
        return None
    if not spec.thought_images:
        raise InvalidRequest(f"thinkingConfig is not supported for {spec.name}; it does not think.")
    if "thinkingBudget" in thinking:
        raise InvalidRequest(f"thinkingConfig.thinkingBudget is not supported for {spec.name}.")
    if "thinkingLevel" in thinking:
        level = thinking["thinkingLevel"].lower()
        if spec.thinking_levels is None:
            raise InvalidRequest(f"thinkingConfig.thinkingLevel is not supported for {spec.name}.")
        if level not in spec.thinking_levels:
            raise InvalidRequest(
                f"thinkingConfig.thinkingLevel must be one of {', '.join(spec.thinking_levels)} for "
                f"{spec.name}, got {thinking['thinkingLevel']!r}"
            )
    if "includeThoughts" in thinking and not spec.include_thoughts:
        raise InvalidRequest(f"thinkingConfig.includeThoughts is not supported for {spec.name}.")
    return thinking.get("includeThoughts")


def _check_generation_config(
    req: dict[str, Any], spec: ModelEntry
) -> tuple[frozenset[str], str, str, bool | None]:
    """Modalities, aspect ratio, image size and includeThoughts from ``generationConfig``."""
    config = req.get("generationConfig", {})
    modalities = frozenset({"TEXT", "IMAGE"})  # the API's default
    if "responseModalities" in config:
        if not spec.takes_response_modalities:
            raise InvalidRequest(f"responseModalities is not supported for {spec.name}; leave it out.")
        value = config["responseModalities"]
        if len(set(value)) != len(value) or set(value) not in _MODALITIES:
            raise InvalidRequest(f'responseModalities must be ["IMAGE"] or ["TEXT", "IMAGE"], got {value!r}')
        modalities = frozenset(value)
    if config.get("candidateCount", 1) != 1:
        # Image models make one candidate (model cards: "candidateCount: 1").
        raise InvalidRequest(f"Multiple candidates is not enabled for models/{spec.name}")
    _check_number(config, "temperature", 0, 2)
    _check_number(config, "topP", 0, 1)
    include_thoughts = _check_thinking(config, spec)
    image_config = config.get("imageConfig", {})
    ratio = image_config.get("aspectRatio", "1:1")
    if ratio not in spec.aspect_ratios:
        raise InvalidRequest(
            f"imageConfig.aspectRatio must be one of {', '.join(spec.aspect_ratios)} for {spec.name}, got {ratio!r}"
        )
    image_size = "1K"
    if "imageSize" in image_config:
        if not spec.takes_image_size:
            raise InvalidRequest(f"imageConfig.imageSize is not supported for {spec.name}; it makes 1K only.")
        image_size = image_config["imageSize"]
        if image_size not in spec.sizes:
            raise InvalidRequest(
                f"imageConfig.imageSize must be one of {', '.join(spec.sizes)} for {spec.name}, got {image_size!r}"
            )
    return modalities, ratio, image_size, include_thoughts


def _check_tools(req: dict[str, Any], spec: ModelEntry, modalities: frozenset[str]) -> None:
    for index, tool in enumerate(req.get("tools", [])):
        for name in tool:
            if not spec.tools:
                raise InvalidRequest(f"tools are not supported for {spec.name}; leave them out.")
            if name not in spec.tools:
                allowed = ", ".join(snake(t) for t in spec.tools)
                raise InvalidRequest(
                    f"tools[{index}].{snake(name)} is not supported for {spec.name}; it takes {allowed}."
                )
            if name == "googleSearch" and "TEXT" not in modalities:
                raise InvalidRequest('the google_search tool needs responseModalities ["TEXT", "IMAGE"].')


async def parse_request(
    body: dict[str, Any], spec: ModelEntry, decoder: ReferenceDecoder, files: FileResolver | None = None
) -> GeminiRequest:
    """Check a ``generateContent`` body for ``spec``; raise :class:`InvalidRequest` if refused."""
    req = normalize_request(body)
    prompt, blobs = _check_contents(req, files)
    modalities, ratio, image_size, include_thoughts = _check_generation_config(req, spec)
    _check_tools(req, spec, modalities)
    if len(blobs) > spec.max_reference_images:
        raise InvalidRequest(
            f"too many images: {len(blobs)}; {spec.name} accepts at most {spec.max_reference_images}."
        )
    try:
        markers = parse_markers(prompt)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    refs = []
    for index, (mime, raw) in enumerate(blobs, start=1):
        try:
            refs.append(await decoder.from_bytes(raw, mime, ""))
        except ImageDataError as exc:
            raise InvalidRequest(f"reference image {index}: {exc}") from None
    return GeminiRequest(prompt, refs, markers, modalities, ratio, image_size, include_thoughts)
