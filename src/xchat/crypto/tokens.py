"""Anonymous single-use access tokens (PROTOCOL.md Part XI), sans-I/O.

Why: a bundle fetch (``GET /bundles/{address}``) or a directory lookup made with the
account's bearer token tells the relay *who* starts a conversation with *whom* — the social
graph sealed sender hides everywhere else. Privacy Pass (RFC 9576/9578) splits the two
steps: an authenticated account obtains a batch of tokens the issuer signs *blindly*, and
later spends them one per request with no identity attached. The issuer cannot link a
redeemed token to the issuance that produced it, because it only ever saw blinded inputs.

The construction is RFC 9578's type 1 ("VOPRF") with the ristretto255-SHA512 suite of
RFC 9497 (``xchat.crypto.oprf``) instead of P-384:

- token input = ``token_type u16 || epoch u32 || nonce(32) || key_id(32)`` (70 bytes),
  ``key_id = SHA-256(pkE)`` of the epoch's public key;
- the client blinds the input, the issuer evaluates the batch and proves with one DLEQ
  proof that it used ``pkE`` (the key every client fetches), so it cannot tag a batch
  with a per-account key;
- token = token input || authenticator(64), authenticator = VOPRF output;
- the issuer checks a redeemed token with ``Evaluate(skE, input)`` and remembers
  ``spent_key(token)`` until the epoch's tokens expire (double spend).

Keys rotate by epoch: ``(skE, pkE) = DeriveKeyPair(seed, "XChat-v1-token-key" || u32 E)``
from one secret seed, so the issuer stores no per-epoch state. Tokens of epoch E are
accepted during epochs E and E+1 (a client's stock survives one rotation).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xchat import encoding
from xchat.crypto import oprf
from xchat.errors import DecodeError, InvalidToken

TOKEN_TYPE = 0x5801  # private-use type: "type 1 shape, ristretto255-SHA512 VOPRF"
NONCE_LEN = 32
KEY_ID_LEN = 32
_HEAD = struct.Struct(">HI")  # token_type, epoch
INPUT_LEN = _HEAD.size + NONCE_LEN + KEY_ID_LEN  # 70
TOKEN_LEN = INPUT_LEN + oprf.NH  # 134
LABEL_KEY = b"XChat-v1-token-key"
LABEL_SPENT = b"XChat-v1-token-spent"
MAX_BATCH = 64  # tokens per issuance request
VALID_EPOCHS = 2  # a token of epoch E is good in E and E+1


def key_id(public_key: bytes) -> bytes:
    """``SHA-256(pkE)``: names the key inside every token (RFC 9578 ``token_key_id``)."""
    return hashlib.sha256(public_key).digest()


def epoch_of(now_ms: int, epoch_seconds: int) -> int:
    return now_ms // (epoch_seconds * 1000)


def epoch_expires_ms(epoch: int, epoch_seconds: int) -> int:
    """When the last token of ``epoch`` stops being accepted (and its spent hash may go)."""
    return (epoch + VALID_EPOCHS) * epoch_seconds * 1000


def epoch_key(seed: bytes, epoch: int) -> tuple[bytes, bytes]:
    """The issuer's key pair for one epoch, derived from its 32-byte secret seed."""
    if not 0 <= epoch < 2**32:
        raise InvalidToken("epoch out of range")
    return oprf.derive_key_pair(seed, LABEL_KEY + struct.pack(">I", epoch), oprf.MODE_VOPRF)


@dataclass(frozen=True, slots=True)
class Token:
    """One spendable token. ``to_bytes()`` is what goes on the wire (134 bytes)."""

    epoch: int
    nonce: bytes
    key_id: bytes
    authenticator: bytes

    @property
    def token_input(self) -> bytes:
        return _token_input(self.epoch, self.nonce, self.key_id)

    def to_bytes(self) -> bytes:
        return self.token_input + self.authenticator

    @classmethod
    def from_bytes(cls, data: bytes) -> Token:
        if not isinstance(data, bytes | bytearray) or len(data) != TOKEN_LEN:
            raise InvalidToken(f"an access token is {TOKEN_LEN} bytes")
        token_type, epoch = _HEAD.unpack_from(data)
        if token_type != TOKEN_TYPE:
            raise InvalidToken(f"unknown token type {token_type:#06x}")
        pos = _HEAD.size
        nonce = bytes(data[pos : pos + NONCE_LEN])
        kid = bytes(data[pos + NONCE_LEN : INPUT_LEN])
        return cls(epoch, nonce, kid, bytes(data[INPUT_LEN:]))


def _token_input(epoch: int, nonce: bytes, kid: bytes) -> bytes:
    if len(nonce) != NONCE_LEN or len(kid) != KEY_ID_LEN:
        raise InvalidToken("bad token nonce or key id length")
    return _HEAD.pack(TOKEN_TYPE, epoch) + nonce + kid


def encode_token(token: Token) -> str:
    """The header form: base64url without padding (``PrivateToken token="..."``)."""
    return encoding.b64url_encode(token.to_bytes())


def decode_token(text: str) -> Token:
    """Parse the header form; :class:`InvalidToken` on bad base64url, length or type."""
    try:
        raw = encoding.b64url_decode(text, "access token")
    except DecodeError:
        raise InvalidToken("access token is not base64url") from None
    return Token.from_bytes(raw)


def spent_key(token: Token) -> bytes:
    """What the issuer stores for a spent token (32 bytes). Derived from the token input
    alone, so it says nothing the issuer did not see at redemption."""
    return hashlib.sha256(LABEL_SPENT + token.token_input).digest()


# --- client ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingBatch:
    """The client's secret state between an issuance request and its response."""

    epoch: int
    public_key: bytes
    nonces: tuple[bytes, ...]
    blinds: tuple[bytes, ...]
    blinded: tuple[bytes, ...]

    @property
    def inputs(self) -> list[bytes]:
        kid = key_id(self.public_key)
        return [_token_input(self.epoch, n, kid) for n in self.nonces]


def begin_batch(
    epoch: int,
    public_key: bytes,
    count: int,
    *,
    rng: Callable[[int], bytes] = secrets.token_bytes,
) -> PendingBatch:
    """Pick ``count`` fresh nonces and blind their token inputs; send ``blinded``."""
    if not 1 <= count <= MAX_BATCH:
        raise InvalidToken(f"a token batch holds 1..{MAX_BATCH} tokens")
    oprf.deserialize_element(public_key)
    kid = key_id(public_key)
    nonces, blinds, blinded = [], [], []
    for _ in range(count):
        nonce = rng(NONCE_LEN)
        r, be = oprf.blind(_token_input(epoch, nonce, kid), mode=oprf.MODE_VOPRF)
        nonces.append(nonce)
        blinds.append(r)
        blinded.append(be)
    return PendingBatch(epoch, public_key, tuple(nonces), tuple(blinds), tuple(blinded))


def finish_batch(pending: PendingBatch, evaluated: Sequence[bytes], proof: bytes) -> list[Token]:
    """Verify the issuer's DLEQ proof against the epoch key and unblind: the tokens.
    Raises :class:`~xchat.errors.InvalidProof` if the issuer did not use that key."""
    if len(evaluated) != len(pending.blinded):
        raise InvalidToken("issuer answered a different number of elements")
    outputs = oprf.finalize_verifiable(
        pending.inputs, pending.blinds, evaluated, pending.blinded, pending.public_key, proof
    )
    kid = key_id(pending.public_key)
    return [
        Token(pending.epoch, n, kid, out) for n, out in zip(pending.nonces, outputs, strict=True)
    ]


# --- issuer ---------------------------------------------------------------------------------


def issue(
    secret_key: bytes, public_key: bytes, blinded: Sequence[bytes]
) -> tuple[list[bytes], bytes]:
    """Evaluate a batch of blinded token inputs with one proof (nothing is kept)."""
    if not 1 <= len(blinded) <= MAX_BATCH:
        raise InvalidToken(f"a token batch holds 1..{MAX_BATCH} tokens")
    return oprf.blind_evaluate_verifiable(secret_key, public_key, blinded)


def verify(secret_key: bytes, public_key: bytes, token: Token) -> None:
    """Check a redeemed token against the key of its epoch; :class:`InvalidToken` if not."""
    if not hmac.compare_digest(token.key_id, key_id(public_key)):
        raise InvalidToken("token names another key")
    expected = oprf.evaluate(secret_key, token.token_input, oprf.MODE_VOPRF)
    if not hmac.compare_digest(expected, token.authenticator):
        raise InvalidToken("token does not verify")
