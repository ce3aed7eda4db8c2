"""Google's JSON mapping of a ``generateContent`` request: field names, types, and the refusals.

The real API reads protobuf JSON: each field may be spelt lowerCamel (``inlineData``) or with
its proto name (``inline_data``) at every level, ``bytes`` are base64 (standard or URL-safe,
with or without padding), 64-bit and 32-bit integers may come as strings, enums by name. An
unknown name is refused with ``Invalid JSON payload received. Unknown name "x" at 'path':
Cannot find field.`` (the path in proto names). :func:`normalize_request` applies exactly that
and returns the body in one canonical spelling (lowerCamel, decoded bytes, upper-case enums),
so the rest of the mock checks meaning, not spelling.

The message list follows the v1beta ``GenerateContentRequest`` reference
(ai.google.dev/api/generate-content) and what google-genai 3.x sends for it
(``google/genai/models.py``, ``_GenerateContentConfig_to_mldev``): e.g. ``topK`` as ``10.0``,
``thinkingConfig`` with snake_case inner names, ``inlineData.data`` URL-safe base64.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

from .validation import InvalidRequest

#: Field kinds: a nested message (dict of lowerCamel name -> kind), a repeated field
#: (``("list", kind)``), or a scalar named by a string.
Kind = dict[str, Any] | tuple[str, Any] | str

ANY = "any"  # a Struct / Value / message the mock does not look into
STR, INT, NUM, BOOL, BYTES, ENUM = "string", "int", "float", "bool", "bytes", "enum"

BLOB: dict[str, Kind] = {"mimeType": STR, "data": BYTES}
FILE_DATA: dict[str, Kind] = {"mimeType": STR, "fileUri": STR}
PART: dict[str, Kind] = {
    "text": STR,
    "inlineData": BLOB,
    "fileData": FILE_DATA,
    "functionCall": ANY,
    "functionResponse": ANY,
    "executableCode": ANY,
    "codeExecutionResult": ANY,
    "thought": BOOL,
    "thoughtSignature": BYTES,
    "videoMetadata": ANY,
    "mediaResolution": ANY,
    "partMetadata": ANY,
}
#: The members of ``Part``'s ``data`` oneof: a part carries exactly one.
PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
             "codeExecutionResult")
CONTENT: dict[str, Kind] = {"role": STR, "parts": ("list", PART)}
THINKING_CONFIG: dict[str, Kind] = {"includeThoughts": BOOL, "thinkingBudget": INT, "thinkingLevel": ENUM}
IMAGE_CONFIG: dict[str, Kind] = {"aspectRatio": STR, "imageSize": STR}
GENERATION_CONFIG: dict[str, Kind] = {
    "stopSequences": ("list", STR),
    "responseMimeType": STR,
    "responseSchema": ANY,
    "responseJsonSchema": ANY,
    "responseModalities": ("list", ENUM),
    "candidateCount": INT,
    "maxOutputTokens": INT,
    "temperature": NUM,
    "topP": NUM,
    "topK": INT,
    "seed": INT,
    "presencePenalty": NUM,
    "frequencyPenalty": NUM,
    "responseLogprobs": BOOL,
    "logprobs": INT,
    "enableEnhancedCivicAnswers": BOOL,
    "speechConfig": ANY,
    "thinkingConfig": THINKING_CONFIG,
    "imageConfig": IMAGE_CONFIG,
    "mediaResolution": ENUM,
}
GOOGLE_SEARCH: dict[str, Kind] = {"timeRangeFilter": ANY, "searchTypes": ANY}
TOOL: dict[str, Kind] = {
    "functionDeclarations": ANY,
    "googleSearchRetrieval": ANY,
    "codeExecution": ANY,
    "googleSearch": GOOGLE_SEARCH,
    "urlContext": {},
    "computerUse": ANY,
    "fileSearch": ANY,
    "googleMaps": ANY,
}
SAFETY_SETTING: dict[str, Kind] = {"category": ENUM, "threshold": ENUM}
REQUEST: dict[str, Kind] = {
    "model": STR,
    "contents": ("list", CONTENT),
    "tools": ("list", TOOL),
    "toolConfig": ANY,
    "safetySettings": ("list", SAFETY_SETTING),
    "systemInstruction": CONTENT,
    "generationConfig": GENERATION_CONFIG,
    "cachedContent": STR,
    "serviceTier": ENUM,
    "store": BOOL,
}

_PROTO_TYPE = {STR: "TYPE_STRING", INT: "TYPE_INT32", NUM: "TYPE_FLOAT", BOOL: "TYPE_BOOL",
               BYTES: "TYPE_BYTES", ENUM: "TYPE_ENUM"}
_INT_TEXT = re.compile(r"-?\d+")
_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/\-_]*={0,2}")


def snake(name: str) -> str:
    """``inlineData`` -> ``inline_data`` (the proto name Google's messages use)."""
    return re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def camel(name: str) -> str:
    """``inline_data`` -> ``inlineData``; lowerCamel names are returned as they are."""
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def decode_bytes(text: str) -> bytes:
    """Protobuf JSON ``bytes``: standard or URL-safe base64, padding optional; ``ValueError`` else."""
    compact = "".join(text.split())
    if not _B64_ALPHABET.fullmatch(compact) or len(compact.rstrip("=")) % 4 == 1:
        raise ValueError("not base64")
    unpadded = compact.rstrip("=").translate(str.maketrans("-_", "+/"))
    try:
        return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


def _invalid_value(path: str, kind: str, value: Any) -> InvalidRequest:
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    return InvalidRequest(f"Invalid value at '{path}' ({_PROTO_TYPE[kind]}), {shown[:80]}")


def _scalar(kind: str, value: Any, path: str) -> Any:
    if kind == ANY:
        return value
    if kind == STR and isinstance(value, str):
        return value
    if kind == BOOL and isinstance(value, bool):
        return value
    if kind == ENUM and isinstance(value, str) and value:
        return value.upper()  # enum names; Google's docs and SDKs use both cases
    if kind == INT and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # google-genai sends topK as 10.0
        if isinstance(value, str) and _INT_TEXT.fullmatch(value):
            return int(value)
    if kind == NUM and not isinstance(value, bool):
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    if kind == BYTES and isinstance(value, str):
        try:
            return decode_bytes(value)
        except ValueError:
            pass
    raise _invalid_value(path, kind, value)


def _value(kind: Kind, value: Any, path: str) -> Any:
    if isinstance(kind, tuple):
        if value is None:
            return []
        if not isinstance(value, list):
            raise InvalidRequest(f"Invalid value at '{path}', expected a list.")
        return [_value(kind[1], item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            raise InvalidRequest(
                f"Invalid JSON payload received. Expected an object at '{path}', got {type(value).__name__}."
            )
        return _message(kind, value, path)
    return _scalar(kind, value, path)


def _message(fields: dict[str, Kind], obj: dict[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = camel(key)
        if name not in fields:
            where = f" at '{path}'" if path else ""
            raise InvalidRequest(f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.')
        child = f"{path}.{snake(name)}" if path else snake(name)
        if name in out:
            raise InvalidRequest(f"Invalid JSON payload received. Duplicate value for field '{child}'.")
        if value is None:
            continue  # JSON null means "not set"
        out[name] = _value(fields[name], value, child)
    return out


def normalize_message(fields: dict[str, Kind], body: dict[str, Any]) -> dict[str, Any]:
    """Any message in one spelling (lowerCamel names, typed scalars), e.g. a batch resource."""
    return _message(fields, body, "")


def normalize_request(body: dict[str, Any]) -> dict[str, Any]:
    """The request in one spelling (lowerCamel names, decoded bytes); refuses what Google refuses."""
    normalized = _message(REQUEST, body, "")
    for c_index, content in enumerate(normalized.get("contents", [])):
        for p_index, part in enumerate(content.get("parts", [])):
            data = [name for name in PART_DATA if name in part]
            if len(data) > 1:
                raise InvalidRequest(
                    f"Invalid value at 'contents[{c_index}].parts[{p_index}].data' (oneof), oneof field "
                    f"'data' is already set. Cannot set '{snake(data[1])}'"
                )
    return normalized
