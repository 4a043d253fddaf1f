"""Message padding to a small set of size buckets (PROTOCOL.md Part I §6).

The relay sees every envelope's length. Without padding, a message's length leaks its
content ("ok" vs. a paragraph, a typing indicator vs. a reaction). We therefore pad every
plaintext *before* ratchet encryption to one of a few bucket sizes, so the server learns
only which bucket a message fell into.

Encoding (ISO/IEC 7816-4 padding, as Signal's ``PushTransportDetails``)::

    padded = data || 0x80 || 0x00 * (bucket - len(data) - 1)

where ``bucket`` is the *smallest* entry of :data:`BUCKETS` that is ``>= len(data) + 1``.
Unlike Signal (multiples of 160 bytes, which leak length at 160-byte resolution) the buckets
grow geometrically, so a message anywhere below 64 KiB lands in one of ten classes; the
price is at most ~2x overhead, and nothing for the common case (under 159 bytes).

:func:`unpad` is strict: the input length must be a bucket, the marker must be present, the
tail must be zeros, and the bucket must be the canonical (smallest) one for the data. Any
other input is :class:`~xchat.errors.DecodeError`, so exactly one padded form exists per
plaintext and a peer cannot smuggle a side channel into the padding.

Attachments use a different rule (:func:`padme_size`): files are far larger and a fixed
bucket list would either waste a lot or leak a lot; Padmé bounds both.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

from xchat.errors import DecodeError, TooLarge

#: The marker byte that ends the data (ISO/IEC 7816-4 §5.2.3.1).
PAD_MARKER: Final = 0x80

#: Bucket sizes in bytes. 160 comes from Signal (an SMS-sized message fits the first
#: bucket); doubling up to 40960, then 64 KiB and 128 KiB. 128 KiB is the largest padded
#: plaintext: a session message (ratchet header + AES-GCM tag, up to ~3.3 KiB more for a
#: PQXDH prekey message) must stay below the session layer's 256 KiB parse limit with room
#: to spare, and anything bigger travels as an attachment (§9), not as a message.
BUCKETS: Final[tuple[int, ...]] = (
    160,
    320,
    640,
    1280,
    2560,
    5120,
    10240,
    20480,
    40960,
    65536,
    131072,
)

#: Largest padded size; :data:`MAX_DATA_LEN` is the largest plaintext :func:`pad` accepts.
MAX_PADDED_LEN: Final = BUCKETS[-1]
MAX_DATA_LEN: Final = MAX_PADDED_LEN - 1


def padded_length(data_len: int) -> int:
    """The bucket a plaintext of ``data_len`` bytes is padded to; TooLarge past the last."""
    if data_len < 0:
        raise DecodeError("negative length")
    i = bisect_left(BUCKETS, data_len + 1)
    if i == len(BUCKETS):
        raise TooLarge(f"message of {data_len} bytes exceeds the {MAX_DATA_LEN}-byte limit")
    return BUCKETS[i]


def pad(data: bytes) -> bytes:
    """``data || 0x80 || zeros`` up to the smallest bucket (PROTOCOL Part I §6)."""
    target = padded_length(len(data))
    return data + bytes([PAD_MARKER]) + bytes(target - len(data) - 1)


def unpad(padded: bytes) -> bytes:
    """Inverse of :func:`pad`; DecodeError unless ``padded`` is exactly what pad produces."""
    n = len(padded)
    if n > MAX_PADDED_LEN:
        raise TooLarge("padded message exceeds the largest bucket")
    i = bisect_left(BUCKETS, n)
    if i == len(BUCKETS) or BUCKETS[i] != n:
        raise DecodeError("padded message has a length that is not a bucket size")
    end = len(padded.rstrip(b"\x00"))
    if end == 0 or padded[end - 1] != PAD_MARKER:
        raise DecodeError("padding marker missing")
    data_len = end - 1
    if padded_length(data_len) != n:
        raise DecodeError("non-canonical padding (a smaller bucket would fit)")
    return padded[:data_len]


def padme_size(length: int) -> int:
    """Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and
    Communication with PURBs", PETS 2019, §4): round ``length`` up so that only
    O(log log L) bits of it remain, with at most ~12% overhead. Used for attachments.
    """
    if length < 0:
        raise DecodeError("negative length")
    if length < 2:
        return length
    e = length.bit_length() - 1  # floor(log2 L)
    s = e.bit_length()  # floor(log2 E) + 1
    last_bits = e - s
    mask = (1 << last_bits) - 1
    return (length + mask) & ~mask
