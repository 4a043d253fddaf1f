"""Image metadata stripping (PROTOCOL.md Part VI §8). Pillow is a test-only dependency:
it builds real images with EXIF/GPS and checks the stripped output still decodes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from xchat.client.metadata import (
    JPEG,
    PNG,
    WEBP,
    detect_image,
    strip_file,
    strip_jpeg,
    strip_png,
    strip_webp,
)
from xchat.errors import DecodeError

GPS_IFD = 0x8825


def _exif_with_gps() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "SpyCam Inc"  # Make
    exif[0x0110] = "Model X-1234"  # Model
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    return exif


def _jpeg_with_exif() -> bytes:
    img = Image.new("RGB", (32, 24), (200, 30, 30))
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=_exif_with_gps(), comment=b"secret comment", icc_profile=b"x" * 64)
    return buf.getvalue()


def _strip(fn, data: bytes) -> bytes:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    fn(io.BytesIO(data), out)
    return out.getvalue()


def test_jpeg_exif_gps_comment_icc_removed() -> None:
    data = _jpeg_with_exif()
    before = Image.open(io.BytesIO(data))
    assert before.getexif().get_ifd(GPS_IFD)
    assert b"SpyCam" in data and b"secret comment" in data and b"ICC_PROFILE" in data
    out = _strip(strip_jpeg, data)
    for marker in (b"Exif", b"SpyCam", b"secret comment", b"ICC_PROFILE"):
        assert marker not in out
    img = Image.open(io.BytesIO(out))
    assert not img.getexif()
    assert img.info.get("icc_profile") is None
    assert img.tobytes() == before.tobytes()  # pixels untouched


def test_progressive_jpeg_keeps_scans() -> None:
    img = Image.new("RGB", (64, 64))
    img.putdata([(x * 4 % 256, y * 4 % 256, 77) for y in range(64) for x in range(64)])
    buf = io.BytesIO()
    img.save(buf, "JPEG", progressive=True, exif=_exif_with_gps(), quality=90)
    out = _strip(strip_jpeg, buf.getvalue())
    assert b"Exif" not in out
    assert Image.open(io.BytesIO(out)).tobytes() == Image.open(io.BytesIO(buf.getvalue())).tobytes()


def _seg(code: int, body: bytes) -> bytes:
    return bytes((0xFF, code)) + struct.pack(">H", len(body) + 2) + body


def test_hand_assembled_jpeg_segments() -> None:
    jfif = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x02\x01" + b"T" * 6  # 2x1 thumbnail
    adobe = b"Adobe\x00\x64\x00\x00\x00\x00\x01"
    scan = b"\x12\xff\x00\x34\xff\xd0\x56\xff\xff"  # stuffed byte, RST0, fill byte
    data = (
        b"\xff\xd8"
        + _seg(0xE0, jfif)
        + _seg(0xE1, b"Exif\x00\x00GPS-HERE")
        + _seg(0xED, b"Photoshop 3.0\x00IPTC")
        + _seg(0xEE, adobe)
        + _seg(0xFE, b"comment")
        + _seg(0xDB, b"\x00" + b"\x01" * 64)
        + _seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + scan
        + _seg(0xE1, b"http://ns.adobe.com/xap/1.0/\x00XMP-BETWEEN-SCANS")
        + _seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + b"\x99"
        + b"\xff\xd9"
        + b"TRAILER-EXIF"
    )
    out = _strip(strip_jpeg, data)
    expected = (
        b"\xff\xd8"
        + _seg(0xE0, jfif[:12] + b"\x00\x00")
        + _seg(0xEE, adobe)
        + _seg(0xDB, b"\x00" + b"\x01" * 64)
        + _seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + b"\x12\xff\x00\x34\xff\xd0\x56"
        + _seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + b"\x99\xff\xd9"
    )
    assert out == expected


@pytest.mark.parametrize(
    "data",
    [b"\xff\xd8", b"\xff\xd8\xff\xe1\x00", b"\xff\xd8\xff\xe1\x00\x10abc", b"\xff\xd8\x00\x00"],
)
def test_truncated_jpeg_is_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        _strip(strip_jpeg, data)


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(ctype + body)
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def test_png_text_exif_time_removed() -> None:
    img = Image.new("RGB", (8, 8), (1, 2, 3))
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Alice Secret")
    info.add_itxt("Location", "Somewhere", zip=True)
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=info, exif=_exif_with_gps())
    data = buf.getvalue()
    # add a tIME chunk and trailing junk by hand
    iend = data.rindex(b"IEND") - 4
    data = data[:iend] + _png_chunk(b"tIME", b"\x07\xe8\x01\x02\x03\x04\x05") + data[iend:]
    data += b"junk after IEND"
    out = _strip(strip_png, data)
    for marker in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"tIME", b"Alice", b"junk"):
        assert marker not in out
    assert Image.open(io.BytesIO(out)).tobytes() == img.tobytes()


def test_png_malformed() -> None:
    with pytest.raises(DecodeError):
        _strip(strip_png, b"\x89PNG\r\n\x1a\n\x00\x00\x00\x05IHD")
    with pytest.raises(DecodeError):
        _strip(strip_png, b"\x89PNG\r\n\x1a\n\xff\xff\xff\xffIHDR")


def test_webp_exif_removed_and_flags_fixed() -> None:
    img = Image.new("RGB", (16, 16), (9, 99, 199))
    buf = io.BytesIO()
    img.save(buf, "WEBP", exif=_exif_with_gps(), lossless=True)
    data = buf.getvalue()
    assert b"EXIF" in data
    out = _strip(strip_webp, data)
    assert b"EXIF" not in out and b"SpyCam" not in out
    assert struct.unpack("<I", out[4:8])[0] == len(out) - 8
    vp8x = out.find(b"VP8X")
    if vp8x >= 0:
        assert out[vp8x + 8] & 0x0C == 0
    assert Image.open(io.BytesIO(out)).tobytes() == img.tobytes()


def test_detect_and_strip_file(tmp_path: Path) -> None:
    p = tmp_path / "photo.bin"
    p.write_bytes(_jpeg_with_exif())
    out = io.BytesIO()
    assert strip_file(p, out) == JPEG
    assert b"Exif" not in out.getvalue()
    assert detect_image(b"\x89PNG\r\n\x1a\n0000") == PNG
    assert detect_image(b"RIFF\x00\x00\x00\x00WEBP") == WEBP
    assert detect_image(b"hello world!") is None
    txt = tmp_path / "a.txt"
    txt.write_bytes(b"Exif plain text")
    out = io.BytesIO()
    assert strip_file(txt, out) is None and out.getvalue() == b""
