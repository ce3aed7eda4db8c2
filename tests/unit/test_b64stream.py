"""batchfuse.b64stream: base64 decoded piece by piece into sinks, exactly as strict as
``base64.b64decode(validate=True)`` after removing whitespace."""

from __future__ import annotations

import base64
import hashlib
import io
import os

import pytest

from batchfuse import b64stream
from batchfuse.b64stream import Base64Problem, decode_into

_DECODERS = [b64stream._strict_stdlib]
try:
    import pybase64  # noqa: F401

    _DECODERS.append(b64stream._strict_pybase64)
except ImportError:
    pass


@pytest.fixture(autouse=True, params=_DECODERS, ids=lambda f: f.__name__)
def small_pieces(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many pieces even for short texts, with binascii and (where installed) pybase64."""
    monkeypatch.setattr(b64stream, "PIECE_CHARS", 16)
    monkeypatch.setattr(b64stream, "_strict", request.param)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 11, 12, 13, 100, 1000])
def test_decodes_into_every_sink_what_b64decode_gives(size: int) -> None:
    data = os.urandom(size)
    text = base64.b64encode(data)
    out, digest = io.BytesIO(), hashlib.sha256()
    assert decode_into(text, [out.write, digest.update]) == size
    assert out.getvalue() == data
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert decode_into(text.decode(), [out.write]) == size  # str in, same result
    assert decode_into(memoryview(b"xx" + text)[2:], []) == size


def test_whitespace_anywhere_is_skipped() -> None:
    data = os.urandom(200)
    text = base64.b64encode(data)
    spaced = b"\n".join(text[i : i + 15] for i in range(0, len(text), 15)) + b"\r\n  "
    out = io.BytesIO()
    decode_into(spaced, [out.write])
    assert out.getvalue() == data
    padded = base64.b64encode(os.urandom(31))  # ends with "="
    assert padded.endswith(b"=")
    out = io.BytesIO()
    decode_into(padded[:-2] + b" \n" + padded[-2:] + b"\n" * 40, [out.write])
    assert len(out.getvalue()) == 31


@pytest.mark.parametrize(
    "text",
    [
        b"QUJD" * 10 + b"QU",  # cut short: not a whole group
        b"QUJD" * 10 + b"Q",
        b"QUJD" * 3 + b"QQ==" + b"QUJD" * 5,  # padding in the middle
        b"QUJD" * 10 + b"Q===",
        b"QUJD" * 5 + b"QU-D" + b"QUJD",  # URL-safe alphabet is not the standard one
        b"QUJD" * 5 + b"QU\x00D",
        b"QUJD" * 20 + b"*",
    ],
)
def test_invalid_or_cut_off_text_is_refused(text: bytes) -> None:
    with pytest.raises(Base64Problem):
        decode_into(text, [])


def test_non_ascii_text_is_refused() -> None:
    with pytest.raises(Base64Problem, match="non-ASCII"):
        decode_into("QUJD\u00e9QUJD", [])
