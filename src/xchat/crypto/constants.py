"""Limits and labels of pairwise sessions (PQXDH + Double Ratchet), with the reason for each.

Modelled on libsignal ``rust/protocol/src/consts.rs``: every number that bounds memory or work
spent on attacker-controlled input lives here, next to why it has the value it has. The
byte-level meaning of each label is specified in ``PROTOCOL.md Part II``.
"""

from __future__ import annotations

from typing import Final

# --- wire versions and type bytes (PROTOCOL Part II §5) ---------------------------------------

#: Version byte that starts every session message. Anything else is ``UnsupportedVersion``:
#: a v2 sender must not be misparsed as v1.
MESSAGE_VERSION: Final = 0x01
#: Type byte of an ordinary Double Ratchet message.
MESSAGE_TYPE_NORMAL: Final = 0x01
#: Type byte of a PreKey message (PQXDH initial data wrapping a ratchet message).
MESSAGE_TYPE_PREKEY: Final = 0x02

#: Version byte of ``Session.to_bytes()``. Bumped on any layout change so a stored session
#: from an older build is either migrated or refused, never misread.
SESSION_RECORD_VERSION: Final = 0x01
#: Version byte of serialized private prekey records (PROTOCOL Part II §1.4).
PREKEY_RECORD_VERSION: Final = 0x01

# --- key encodings (PROTOCOL Part I §1) ---------------------------------------------------------

#: The type prefixes (0x05 X25519, 0x08 ML-KEM-1024) are ``xchat.crypto.keys``'s.
X25519_LEN: Final = 32
MLKEM1024_PUBLIC_RAW_LEN: Final = 1568
MLKEM1024_CIPHERTEXT_LEN: Final = 1568
#: ML-KEM private keys are stored as their 64-byte (d || z) seed (FIPS 203 §7.1), the most
#: compact form and the one ``MLKEM1024PrivateKey.from_seed_bytes`` takes.
MLKEM_SEED_LEN: Final = 64
IDENTITY_KEY_LEN: Final = 65
SIGNATURE_LEN: Final = 64

#: Domain-separation prefix for prekey signatures (PROTOCOL Part I §1): a prekey signature can
#: never be replayed as a signature on any other XChat structure.
PREKEY_SIGNATURE_LABEL: Final = b"XChat-v1-prekey"

#: Largest prekey id. Ids are u32 on the wire; the client picks them (sequentially from a
#: random start) and the server only stores them.
MAX_PREKEY_ID: Final = 0xFFFFFFFF

# --- PQXDH (PROTOCOL Part II §3; PQXDH rev. 3 §2.2, §3.3) -------------------------------------

#: HKDF ``info`` of PQXDH: names protocol, curve, KEM and hash so that keys derived for one
#: parameter set are unrelated to any other (PQXDH §2.1 "info").
PQXDH_INFO: Final = b"XChat_PQXDH_X25519_MLKEM1024_SHA-256_v1"
#: PQXDH §2.2: 32 0xFF bytes prepended to the KDF input for curve25519, so the input can
#: never be a valid XEdDSA-related scalar encoding (cryptographic domain separation).
PQXDH_F: Final = b"\xff" * 32
#: PQXDH §2.2: HKDF salt is a zero-filled byte sequence of the hash output length.
PQXDH_SALT: Final = b"\x00" * 32
#: Length of the PQXDH output SK, the initial Double Ratchet root key.
SHARED_SECRET_LEN: Final = 32

# --- Double Ratchet (PROTOCOL Part II §4; Signal Double Ratchet spec §2–§3, §5.2) --------------

#: HKDF ``info`` of KDF_RK (spec §5.2): root key + DH output -> new root key, chain key.
RATCHET_ROOT_INFO: Final = b"XChat_Ratchet_v1"
#: HKDF ``info`` that expands a 32-byte message key into AES-256-GCM key and nonce.
MESSAGE_KEYS_INFO: Final = b"XChat_MessageKeys_v1"
#: KDF_CK input bytes (spec §5.2 recommendation, same as libsignal).
CHAIN_MESSAGE_KEY_SEED: Final = b"\x01"
CHAIN_NEXT_KEY_SEED: Final = b"\x02"
AES_KEY_LEN: Final = 32
AES_NONCE_LEN: Final = 12
AES_TAG_LEN: Final = 16

#: MAX_SKIP (spec §3.2): how far ahead of the next expected counter a header may point in one
#: chain. Each skipped key costs two HMACs and 32+ bytes of state, so a forged header with
#: n = 2^32-1 would otherwise make us compute and store billions of keys. 2000 covers any
#: realistic loss/reorder burst of a messenger (libsignal allows 25,000; we are smaller
#: because our store is serialized on every message).
MAX_SKIP: Final = 2000
#: Total skipped message keys kept across all chains (libsignal MAX_MESSAGE_KEYS = 2000).
#: Oldest are evicted first, so repeated skips across many ratchet steps cannot grow the
#: state without bound; a message whose key was evicted is reported as a duplicate.
MAX_SKIPPED_KEYS: Final = 2000
#: How many past remote ratchet public keys we remember (libsignal MAX_RECEIVER_CHAINS = 5).
#: Used only to tell a replayed/stale message (``DuplicateMessage``) from a new ratchet step
#: without spending DH work on it.
MAX_PREVIOUS_RATCHET_KEYS: Final = 5

# --- sizes (PROTOCOL Part II §5) --------------------------------------------------------------

#: Largest session message we parse. Sealed-sender content is padded and bounded by the
#: relay; 256 KiB leaves room for any text/control message while keeping a hostile input
#: from costing more than one bounded AES-GCM pass. Larger payloads (files) travel as
#: attachments encrypted separately.
MAX_MESSAGE_LEN: Final = 256 * 1024
#: Largest serialized session we accept back: header + skipped keys at the cap with slack.
MAX_SESSION_RECORD_LEN: Final = 4096 + MAX_SKIPPED_KEYS * 80
