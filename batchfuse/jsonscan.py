"""Parse a large JSON reply without turning its image data into Python strings.

A Gemini reply at 4K is ~29 MB of JSON, almost all of it one base64 string
(``inlineData.data``). ``json.loads`` on it builds that 29 MB string (and spends ~60 ms), only for
the caller to decode it again. :func:`loads_skeleton` finds the long string values of the named
keys by jumping from quote to quote with ``bytes.find`` (a handful of steps for a reply, however
large), cuts them out, parses the small rest with ``json.loads``, and puts a :class:`RawString`
where each long value was: a zero-copy view of its bytes in the body.

The cut strings must be plain (no backslash escapes, which base64 never needs); when one is not,
or the body is not well-formed enough to scan, it returns ``None`` and the caller uses
``json.loads`` as before, so a malformed or truncated body fails the same way it always did.
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from typing import Any

#: String values shorter than this are left in the JSON.
MIN_CHARS = 64 * 1024
_MARKER = "\x00batchfuse-raw-string:"
_MARKER_JSON = b"\\u0000batchfuse-raw-string:"
_WS = b" \t\r\n"


@dataclass(frozen=True)
class RawString:
    """A long JSON string value left in the body: its bytes, without the quotes (plain ASCII or
    UTF-8 with no escapes, so they are the value's exact encoding)."""

    body: Any  # bytes, bytearray or mmap: anything with the buffer protocol
    start: int
    end: int

    def view(self) -> memoryview:
        return memoryview(self.body)[self.start : self.end]

    def __len__(self) -> int:
        return self.end - self.start

    def text(self) -> str:
        """The value as a ``str`` (a copy: for the rare caller that needs one)."""
        return bytes(self.view()).decode("utf-8")

    def release(self, start: int = 0, end: int | None = None) -> None:
        """Done with ``[start:end]`` of the value: its pages leave memory if the body is an ``mmap``."""
        stop = self.end if end is None else self.start + end
        release_pages(self.body, self.start + start, stop)


def release_pages(body: Any, start: int = 0, end: int | None = None) -> None:
    """Drop the pages of ``body[start:end]`` from this process's memory when ``body`` is an
    ``mmap`` of a file (they stay in the file; touching them again reads them back); for
    anything else, nothing."""
    if not isinstance(body, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    end = len(body) if end is None else min(end, len(body))
    start -= start % mmap.PAGESIZE
    if end > start:
        try:
            body.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):  # a mapping that cannot take the advice is just kept
            pass


def _string_end(body: Any, opening: int) -> int:
    """Index of the quote closing the string that opens at ``opening``; -1 if there is none."""
    end = opening + 1
    while True:
        end = body.find(b'"', end)
        if end < 0:
            return -1
        back = end - 1
        while body[back] == 0x5C:  # count the backslashes right before the quote
            back -= 1
        if (end - 1 - back) % 2 == 0:
            return end
        end += 1


def _value_of(body: Any, opening: int, keys: tuple[bytes, ...]) -> bool:
    """Whether the string opening at ``opening`` is the value of one of ``keys`` in an object."""
    k = opening - 1
    while k >= 0 and body[k] in _WS:
        k -= 1
    if k < 0 or body[k] != 0x3A:  # ':'
        return False
    k -= 1
    while k >= 0 and body[k] in _WS:
        k -= 1
    if k < 0 or body[k] != 0x22:  # the key's closing quote
        return False
    for key in keys:
        start = k - len(key)
        if start >= 1 and body[start:k] == key and body[start - 1] == 0x22:
            j = start - 2
            while j >= 0 and body[j] in _WS:
                j -= 1
            if j >= 0 and body[j] in b"{,":
                return True
    return False


def loads_skeleton(body: Any, keys: tuple[str, ...] = ("data",), min_chars: int = MIN_CHARS) -> Any:
    """``json.loads(body)`` with each string value of ``keys`` of at least ``min_chars`` bytes
    replaced by a :class:`RawString`; ``None`` when the fast path does not apply (nothing long
    to cut, an escape inside a long value, a body that cannot be scanned)."""
    wanted = tuple(k.encode("utf-8") for k in keys)
    pieces: list[bytes] = []
    raws: list[RawString] = []
    last = pos = 0
    while True:
        opening = body.find(b'"', pos)
        if opening < 0:
            break
        closing = _string_end(body, opening)
        if closing < 0:
            return None  # unterminated string: let json.loads say what is wrong
        if closing - opening - 1 >= min_chars and _value_of(body, opening, wanted):
            if body.find(b"\\", opening + 1, closing) >= 0:
                return None
            pieces.append(bytes(body[last:opening]))
            pieces.append(b'"' + _MARKER_JSON + str(len(raws)).encode() + b'"')
            raws.append(RawString(body, opening + 1, closing))
            last = closing + 1
        pos = closing + 1
    if not raws:
        return None
    pieces.append(bytes(body[last:]))
    skeleton = b"".join(pieces)
    if skeleton.count(_MARKER_JSON) != len(raws):  # the body itself spells the marker: no fast path
        return None
    used: list[int] = []
    value = _restore(json.loads(skeleton), raws, used)
    return value if sorted(used) == list(range(len(raws))) else None


def _restore(value: Any, raws: list[RawString], used: list[int]) -> Any:
    if isinstance(value, dict):
        return {k: _restore(v, raws, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, raws, used) for v in value]
    if isinstance(value, str) and value.startswith(_MARKER):
        index = value[len(_MARKER) :]
        if index.isdigit() and int(index) < len(raws):
            used.append(int(index))
            return raws[int(index)]
    return value
