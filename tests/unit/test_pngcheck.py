"""batchfuse.pngcheck: a PNG is proved whole without decoding its pixels, and every way a reply's
image can be broken (cut short, a flipped byte, a zlib stream that stops early, an IHDR that
does not match the data) is refused, fed whole or piece by piece."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from batchfuse import pngcheck
from batchfuse.pngcheck import SIGNATURE, PngChecker, PngProblem, check_png, raw_size

_LIBS = [zlib]
try:
    from isal import isal_zlib

    _LIBS.append(isal_zlib)
except ImportError:
    pass


@pytest.fixture(autouse=True, params=_LIBS, ids=lambda lib: lib.__name__)
def inflate_lib(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check runs with the standard zlib and, where installed, with ISA-L's."""
    monkeypatch.setattr(pngcheck, "_inflate_lib", request.param)


def chunk(ctype: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(ctype + data) if crc is None else crc
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", crc)


def png(width: int = 20, height: int = 10, *, idat: bytes | None = None, ihdr_size: tuple[int, int] | None = None,
        interlace: int = 0, split: int = 0) -> bytes:
    """An 8-bit RGB PNG built by hand (so tests can break exactly one thing)."""
    w, h = ihdr_size or (width, height)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, interlace)
    if idat is None:
        rows = b"".join(b"\x00" + bytes((x * 7 + y * 3) % 256 for x in range(width * 3)) for y in range(height))
        raw = rows if not interlace else bytes(raw_size(width, height, 8, 2, True))
        idat = zlib.compress(raw)
    parts = [idat[i : i + split] for i in range(0, len(idat), split)] if split else [idat]
    return SIGNATURE + chunk(b"IHDR", ihdr) + b"".join(chunk(b"IDAT", p) for p in parts) + chunk(b"IEND", b"")


def feed_in_pieces(data: bytes, size: int, inflate: bool = True) -> None:
    checker = PngChecker(inflate)
    for i in range(0, len(data), size):
        checker.feed(data[i : i + size])
    checker.finish()


@pytest.mark.parametrize("inflate", [True, False])
def test_whole_images_pass_with_their_facts(inflate: bool) -> None:
    buf = io.BytesIO()
    Image.effect_noise((301, 77), 40).convert("RGB").save(buf, "PNG")
    data = buf.getvalue()
    info = check_png(data, inflate)
    assert (info.width, info.height, info.size, info.inflated) == (301, 77, len(data), inflate)
    assert data[info.ihdr_end - 8 : info.ihdr_end - 4] != b""  # just past IHDR's CRC
    assert data[info.ihdr_end + 4 : info.ihdr_end + 8] != b"IHDR"
    for size in (1, 7, 4096):
        feed_in_pieces(data, size, inflate)
    assert check_png(png(split=5)).idat_bytes > 5  # many IDAT chunks
    assert check_png(png(33, 9, interlace=1)).interlaced


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "I;16"])
def test_every_colour_type_pillow_writes_passes(mode: str) -> None:
    buf = io.BytesIO()
    Image.new(mode, (13, 5)).save(buf, "PNG")
    assert check_png(buf.getvalue()).width == 13


@pytest.mark.parametrize("inflate", [True, False])
@pytest.mark.parametrize("cut", [1, 5, 12, 40])
def test_a_truncated_file_is_refused(inflate: bool, cut: int) -> None:
    data = png()
    with pytest.raises(PngProblem, match="truncated|IEND"):
        check_png(data[:-cut], inflate)
    with pytest.raises(PngProblem):
        feed_in_pieces(data[:-cut], 3, inflate)


@pytest.mark.parametrize("inflate", [True, False])
def test_a_flipped_byte_fails_its_crc(inflate: bool) -> None:
    data = bytearray(png())
    data[len(SIGNATURE) + 8 + 13 + 4 + 8 + 3] ^= 0x01  # inside the IDAT data
    # inflating may stumble on the bad byte before the chunk's CRC is reached: refused either way
    with pytest.raises(PngProblem, match="CRC mismatch in IDAT" if not inflate else "CRC mismatch in IDAT|corrupt"):
        check_png(bytes(data), inflate)
    bad_ihdr = SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 20, 10, 8, 2, 0, 0, 0), crc=1)
    with pytest.raises(PngProblem, match="CRC mismatch in IHDR"):
        check_png(bad_ihdr + png()[len(bad_ihdr):], inflate)


def test_a_truncated_zlib_stream_with_good_crcs_is_refused() -> None:
    whole = png(idat=None)
    idat = zlib.compress(b"".join(b"\x00" + bytes(60) for _ in range(10)), 0)  # stored: cut anywhere
    cut = png(idat=idat[: len(idat) // 2])
    assert check_png(whole).inflated
    with pytest.raises(PngProblem, match="truncated|does not end"):
        check_png(cut)
    with pytest.raises(PngProblem, match="truncated|does not end"):
        feed_in_pieces(cut, 11)


def test_a_corrupt_zlib_stream_with_good_crcs_is_refused() -> None:
    idat = bytearray(zlib.compress(bytes(range(256)) * 3))
    idat[-1] ^= 0xFF  # the Adler-32
    with pytest.raises(PngProblem, match="corrupt"):
        check_png(png(idat=bytes(idat)))


def test_ihdr_dimensions_that_do_not_match_the_data_are_refused() -> None:
    with pytest.raises(PngProblem, match="needs"):
        check_png(png(20, 10, ihdr_size=(20, 11)))  # data for fewer rows than IHDR says
    with pytest.raises(PngProblem, match="more than"):
        check_png(png(20, 10, ihdr_size=(20, 9)))  # more data than IHDR holds
    with pytest.raises(PngProblem, match="more than"):
        check_png(png(20, 10, ihdr_size=(19, 10)))


def test_without_inflate_impossible_sizes_are_still_refused() -> None:
    big = png(200, 50, idat=zlib.compress(bytes(raw_size(200, 50, 8, 2, False)), 0))
    with pytest.raises(PngProblem, match="more than"):
        check_png(png(2, 2, idat=zlib.compress(bytes(range(256)) * 4, 0)), inflate=False)
    assert not check_png(big, inflate=False).inflated


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a" + bytes(40), "signature"),
        (SIGNATURE + chunk(b"IDAT", b"x") + chunk(b"IEND", b""), "not IHDR"),
        (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)), "out of range"),
        (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 5, 3, 2, 0, 0, 0)), "bit depth"),
        (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 5, 8, 3, 0, 0, 0))
         + chunk(b"IDAT", zlib.compress(bytes(30))) + chunk(b"IEND", b""), "PLTE"),
        (png()[:-12] + chunk(b"IDAT", b"") + chunk(b"tEXt", b"a\x00b") + chunk(b"IDAT", b"") + chunk(b"IEND", b""),
         "consecutive"),
        (png() + b"junk", "after IEND"),
        (png()[:33] + chunk(b"IEND", b""), "no IDAT"),
        (png(idat=b"\x00\x00" + zlib.compress(bytes(310))[2:]), "zlib stream"),
        (png(idat=zlib.compress(bytes(310)) + b"\x00"), "after the end of the zlib stream"),
    ],
)
def test_malformed_structure_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(PngProblem, match=message):
        check_png(data)
