"""Typed URL path parameters of the relay API (PROTOCOL Part III §3).

Each alias carries the value's syntax (pattern and length) into the route signature, so
FastAPI refuses a malformed value before the handler runs (422, ``{"error": ...}``) and
``/openapi.json`` states it, which lets a schema-driven fuzzer (schemathesis) generate the
invalid values too. The patterns admit everything the handlers accept (a handle in any
case, with leading ``@``; padded or unpadded base64url); the handlers keep their checks of
what a pattern cannot say (an address checksum, a base64 value's canonical form).
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path

from xchat.crypto.keys import ADDRESS_MAX_LEN

#: bech32m ``xc1…`` (all lower or all upper case, as BIP-350 allows); the checksum, version
#: and hash length are checked by :func:`xchat.crypto.keys.decode_address` (400).
ADDRESS_PATTERN: Final = r"^(xc1[02-9ac-hj-np-z]+|XC1[02-9AC-HJ-NP-Z]+)$"
#: What :func:`xchat.server.directory.normalize_handle` accepts: leading ``@`` and upper
#: case are folded (``@Alice`` finds ``alice``).
HANDLE_PATTERN: Final = r"^@*[A-Za-z][A-Za-z0-9_]{2,31}$"
HANDLE_MAX_LEN: Final = 64
#: 16 bytes in base64url: 22 characters whose last carries 2 zero bits, ``==`` optional.
ENVELOPE_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{21}[AQgw](==)?$"
#: A blob id: 16 random bytes in lower-case hex (:data:`xchat.storage.blobs.BLOB_ID_RE`).
BLOB_ID_PATTERN: Final = r"^[0-9a-f]{32}$"
#: A link slot id: 16 random bytes in unpadded base64url (Part VII §3).
SLOT_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{22}$"

Address = Annotated[
    str,
    Path(
        description="An XChat address (bech32m, `xc1…`)",
        pattern=ADDRESS_PATTERN,
        min_length=8,
        max_length=ADDRESS_MAX_LEN,
    ),
]
Handle = Annotated[
    str,
    Path(
        description="A handle, optionally with leading `@`, in any case",
        pattern=HANDLE_PATTERN,
        min_length=3,
        max_length=HANDLE_MAX_LEN,
    ),
]
EnvelopeId = Annotated[
    str,
    Path(
        description="An envelope id (16 bytes, base64url)",
        pattern=ENVELOPE_ID_PATTERN,
        min_length=22,
        max_length=24,
    ),
]
BlobId = Annotated[
    str,
    Path(
        description="A blob id (16 bytes, lower-case hex)",
        pattern=BLOB_ID_PATTERN,
        min_length=32,
        max_length=32,
    ),
]
SlotId = Annotated[
    str,
    Path(
        description="A link slot id (16 bytes, unpadded base64url)",
        pattern=SLOT_ID_PATTERN,
        min_length=22,
        max_length=22,
    ),
]
