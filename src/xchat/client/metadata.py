"""Strip identifying metadata from images before they are encrypted (PROTOCOL Part VI §8).

Photos carry EXIF (camera serial numbers, GPS position, timestamps), XMP (editing history),
IPTC, embedded thumbnails (which can show the picture *before* it was cropped) and
comments. None of it is needed to display the picture, so by default the sender removes
it; ``keep_metadata=True`` on the send path skips this filter.

The filters are pure-Python segment/chunk copiers: they never decode pixels, stream in
constant memory, and copy the image data byte for byte.

* JPEG (ITU T.81 §B.1): drop APP1..APP15 (EXIF, XMP, ICC profiles, MPF, Photoshop/IPTC,
  maker notes) and COM, *except* APP14 ``Adobe`` (a 12-byte colour-transform flag needed
  to decode CMYK/YCCK images correctly, no personal data). APP0 is kept only when it is
  JFIF, rewritten without its optional thumbnail; JFXX/other APP0 are dropped. Markers
  between progressive scans are filtered the same way. Everything after EOI (trailers,
  MPF secondary images with their own EXIF) is dropped.
* PNG (PNG 3rd ed. §5.3): drop ``tEXt``, ``zTXt``, ``iTXt``, ``eXIf``, ``tIME``; keep
  everything else (``iCCP`` too: a dedicated colour chunk, unlike JPEG's catch-all APP2).
  Data after ``IEND`` is dropped.
* WebP (RIFF container): drop ``EXIF`` and ``XMP `` chunks, clear the matching VP8X flags,
  fix the RIFF size; keep ``ICCP``.

A file that claims to be one of these formats but does not parse is a
:class:`~xchat.errors.DecodeError` rather than being sent half-stripped.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Final

from xchat.errors import DecodeError

JPEG: Final = "image/jpeg"
PNG: Final = "image/png"
WEBP: Final = "image/webp"

_PNG_SIG: Final = b"\x89PNG\r\n\x1a\n"
_PNG_DROP: Final = frozenset({b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"})
_WEBP_DROP: Final = frozenset({b"EXIF", b"XMP "})
_COPY: Final = 1024 * 1024


def detect_image(head: bytes) -> str | None:
    """The MIME type of a JPEG/PNG/WebP file from its first 12 bytes, else ``None``."""
    if head[:3] == b"\xff\xd8\xff":
        return JPEG
    if head[:8] == _PNG_SIG:
        return PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    return None


def strip_file(src: Path, dst: BinaryIO) -> str | None:
    """Write ``src`` without metadata to ``dst``; return the detected MIME type, or ``None``
    (and write nothing) if ``src`` is not a supported image."""
    with open(src, "rb") as fh:
        kind = detect_image(fh.read(12))
        fh.seek(0)
        if kind == JPEG:
            strip_jpeg(fh, dst)
        elif kind == PNG:
            strip_png(fh, dst)
        elif kind == WEBP:
            strip_webp(fh, dst)
        return kind


class _Reader:
    """A tiny buffered reader over a binary stream (constant memory)."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._buf = b""
        self._pos = 0

    def _fill(self, n: int) -> bool:
        """Make at least ``n`` unread bytes available; False at EOF before that."""
        while len(self._buf) - self._pos < n:
            more = self._fh.read(max(_COPY, n))
            if not more:
                return False
            self._buf = self._buf[self._pos :] + more
            self._pos = 0
        return True

    def read_exact(self, n: int, what: str) -> bytes:
        if not self._fill(n):
            raise DecodeError(f"image truncated in {what}")
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def copy(self, n: int, dst: BinaryIO | None, what: str) -> None:
        """Copy (or with ``dst=None`` skip) exactly ``n`` bytes."""
        while n > 0:
            if not self._fill(1):
                raise DecodeError(f"image truncated in {what}")
            take = min(n, len(self._buf) - self._pos)
            if dst is not None:
                dst.write(self._buf[self._pos : self._pos + take])
            self._pos += take
            n -= take

    def copy_entropy(self, dst: BinaryIO) -> int | None:
        """Copy JPEG entropy-coded data up to the next real marker (T.81 §B.1.1.5: 0xFF00
        is a stuffed byte, 0xFFD0..D7 are restart markers, extra 0xFF are fill); return that
        marker's code, or ``None`` at EOF."""
        while True:
            if not self._fill(2):
                if self._fill(1):
                    dst.write(self._buf[self._pos :])
                    self._pos = len(self._buf)
                return None
            i = self._buf.find(b"\xff", self._pos)
            if i == -1 or i == len(self._buf) - 1:
                end = len(self._buf) if i == -1 else i
                dst.write(self._buf[self._pos : end])
                self._pos = end
                continue
            nxt = self._buf[i + 1]
            if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                dst.write(self._buf[self._pos : i + 2])
                self._pos = i + 2
            elif nxt == 0xFF:
                dst.write(self._buf[self._pos : i])
                self._pos = i + 1
            else:
                dst.write(self._buf[self._pos : i])
                self._pos = i + 2
                return nxt


# --- JPEG -----------------------------------------------------------------------------

_SOI: Final = 0xD8
_EOI: Final = 0xD9
_SOS: Final = 0xDA
_COM: Final = 0xFE
_APP0: Final = 0xE0
_APP14: Final = 0xEE
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})


def _read_marker(r: _Reader) -> int:
    b = r.read_exact(1, "JPEG marker")
    if b != b"\xff":
        raise DecodeError("JPEG marker expected")
    while True:
        code = r.read_exact(1, "JPEG marker")[0]
        if code != 0xFF:  # T.81 §B.1.1.2: any number of fill bytes may precede a marker
            return code


def strip_jpeg(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy a JPEG without APPn (n ≥ 1, except Adobe APP14), COM, JFIF thumbnails and
    trailing data (§8.1)."""
    r = _Reader(src)
    if r.read_exact(2, "JPEG header") != b"\xff\xd8":
        raise DecodeError("not a JPEG file")
    dst.write(b"\xff\xd8")
    in_scan = False
    while True:
        if in_scan:
            code = r.copy_entropy(dst)
            if code is None:
                raise DecodeError("JPEG ends without an EOI marker")
        else:
            code = _read_marker(r)
        if code == _EOI:
            dst.write(b"\xff\xd9")
            return  # trailing data (MPF images, vendor trailers) is dropped on purpose
        if code == _SOI:
            raise DecodeError("JPEG has a nested SOI marker")
        if code in _STANDALONE:
            dst.write(bytes((0xFF, code)))
            continue
        (length,) = struct.unpack(">H", r.read_exact(2, "JPEG segment length"))
        if length < 2:
            raise DecodeError("JPEG segment length is too small")
        body = length - 2
        if code in (_APP0, _APP14, _COM) or 0xE1 <= code <= 0xEF:
            _filter_app(r, dst, code, body)
            continue
        dst.write(bytes((0xFF, code)) + struct.pack(">H", length))
        r.copy(body, dst, "JPEG segment")
        if code == _SOS:
            in_scan = True


def _filter_app(r: _Reader, dst: BinaryIO, code: int, body: int) -> None:
    if code == _APP0 and body >= 14:
        head = r.read_exact(14, "APP0")
        if head[:5] == b"JFIF\x00":
            # Keep the JFIF header (version, density) but drop the thumbnail.
            dst.write(b"\xff\xe0" + struct.pack(">H", 16) + head[:12] + b"\x00\x00")
        r.copy(body - 14, None, "APP0")
        return
    if code == _APP14 and body >= 12:
        head = r.read_exact(5, "APP14")
        if head == b"Adobe":
            dst.write(b"\xff\xee" + struct.pack(">H", body + 2) + head)
            r.copy(body - 5, dst, "APP14")
        else:
            r.copy(body - 5, None, "APP14")
        return
    r.copy(body, None, "JPEG metadata segment")


# --- PNG ------------------------------------------------------------------------------


def strip_png(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy a PNG without text, EXIF and time chunks, or anything after IEND (§8.2)."""
    r = _Reader(src)
    if r.read_exact(8, "PNG signature") != _PNG_SIG:
        raise DecodeError("not a PNG file")
    dst.write(_PNG_SIG)
    while True:
        head = r.read_exact(8, "PNG chunk header")
        (length,) = struct.unpack(">I", head[:4])
        ctype = head[4:]
        if length > 0x7FFFFFFF or not ctype.isalpha():
            raise DecodeError("malformed PNG chunk")
        if ctype in _PNG_DROP:
            r.copy(length + 4, None, "PNG chunk")
            continue
        dst.write(head)
        r.copy(length + 4, dst, "PNG chunk")
        if ctype == b"IEND":
            return


# --- WebP -----------------------------------------------------------------------------


def _webp_chunks(src: BinaryIO, riff_end: int) -> list[tuple[bytes, int, int]]:
    """(fourcc, offset of payload, payload size) for each top-level chunk."""
    chunks: list[tuple[bytes, int, int]] = []
    pos = 12
    while pos < riff_end:
        src.seek(pos)
        head = src.read(8)
        if len(head) != 8:
            raise DecodeError("WebP truncated in a chunk header")
        fourcc = head[:4]
        (size,) = struct.unpack("<I", head[4:])
        if pos + 8 + size > riff_end:
            raise DecodeError("WebP chunk runs past the end of the file")
        chunks.append((fourcc, pos + 8, size))
        pos += 8 + size + (size & 1)
    return chunks


def strip_webp(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy a WebP without EXIF/XMP chunks, with VP8X flags and RIFF size fixed (§8.3).
    Needs a seekable source (two passes: sizes first, then copy)."""
    head = src.read(12)
    if len(head) != 12 or head[:4] != b"RIFF" or head[8:] != b"WEBP":
        raise DecodeError("not a WebP file")
    (riff_size,) = struct.unpack("<I", head[4:8])
    src.seek(0, 2)
    riff_end = min(8 + riff_size, src.tell())
    kept = [c for c in _webp_chunks(src, riff_end) if c[0] not in _WEBP_DROP]
    total = 4 + sum(8 + size + (size & 1) for _, _, size in kept)
    dst.write(b"RIFF" + struct.pack("<I", total) + b"WEBP")
    for fourcc, off, size in kept:
        src.seek(off)
        dst.write(fourcc + struct.pack("<I", size))
        if fourcc == b"VP8X" and size >= 1:
            flags = src.read(1)
            if not flags:
                raise DecodeError("WebP truncated in VP8X")
            dst.write(bytes((flags[0] & ~0x0C,)))  # clear EXIF (0x08) and XMP (0x04)
            _copy_n(src, dst, size - 1)
        else:
            _copy_n(src, dst, size)
        if size & 1:
            dst.write(b"\x00")


def _copy_n(src: BinaryIO, dst: BinaryIO, n: int) -> None:
    while n > 0:
        piece = src.read(min(_COPY, n))
        if not piece:
            raise DecodeError("WebP truncated in a chunk")
        dst.write(piece)
        n -= len(piece)
