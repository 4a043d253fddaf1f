"""The one exception hierarchy of XChat.

Every bad input anywhere in the system ends as a subclass of :class:`XChatError`.
Library exceptions (``cryptography``, ``struct``, ``json``, ``sqlite3``, ``httpx``,
``websockets``) are translated at the boundary where they occur, so callers never see a
foreign traceback and never need to know which library is underneath.

Crypto errors are deliberately coarse where detail would help an attacker: every AEAD
or MAC failure is :class:`DecryptionError`, whatever check failed (cf. pyca's Fernet).
"""

from __future__ import annotations


class XChatError(Exception):
    """Base of every error XChat raises on purpose."""


# --- crypto and wire formats -------------------------------------------------------------


class CryptoError(XChatError):
    """A cryptographic operation refused its input."""


class DecodeError(CryptoError):
    """Bytes do not parse as the structure they claim to be (truncated, trailing data, bad
    lengths, bad key encoding)."""


class UnsupportedVersion(DecodeError):
    """A structure carries a version or type byte this implementation does not speak."""


class TooLarge(DecodeError):
    """An input exceeds a documented size limit."""


class InvalidSignature(CryptoError):
    """A signature does not verify under the key it claims."""


class DecryptionError(CryptoError):
    """Authenticated decryption failed (tampered, wrong key, or not for us). Opaque on
    purpose."""


class DuplicateMessage(CryptoError):
    """A message whose key was already used: a replay or a redelivery."""


class TooManySkipped(CryptoError):
    """A message claims a counter further ahead than the skipped-key window allows."""


class UnknownSenderKey(CryptoError):
    """A group message under a sender key we have not (yet) received: the caller may keep it
    until the sender's key distribution message arrives."""


class UnknownPreKey(CryptoError):
    """A PreKey message names a prekey id this device does not hold (already used, rotated
    away, or never issued)."""


class UntrustedIdentity(CryptoError):
    """The peer's identity is not the one expected (changed, or mismatched certificate)."""


class InvalidCertificate(CryptoError):
    """A sender certificate is malformed, forged, or issued for someone else."""


class ExpiredCertificate(InvalidCertificate):
    """A sender certificate that was valid but has expired."""


class UntrustedDevice(CryptoError):
    """An account's device list is forged, rolled back or forked, or the relay names a
    device that the newest signed list does not contain (PROTOCOL.md Part VII)."""


class InvalidAddress(DecodeError):
    """A string is not a valid XChat address (bad checksum, prefix or length)."""


class InvalidMnemonic(DecodeError):
    """A recovery phrase has unknown words or a bad checksum."""


class InvalidProofOfWork(CryptoError):
    """A proof-of-work stamp does not meet the required difficulty."""


class OprfError(CryptoError):
    """An (V)OPRF operation refused its input (RFC 9497): an input that hashes to the
    identity, a key derivation that found no non-zero scalar, a bad mode."""


class InvalidProof(OprfError):
    """A VOPRF DLEQ proof does not verify: the server did not evaluate with the key it
    published (RFC 9497 VerifyError)."""


class InvalidToken(CryptoError):
    """An anonymous access token is malformed, for an unknown key epoch, or does not verify
    under the issuer's key (PROTOCOL.md Part XI)."""


class ProtocolError(XChatError):
    """A peer or server broke the protocol (an unexpected frame, a bad state transition)."""


class UnauthorizedGroupChange(ProtocolError):
    """A group update by someone the group state does not allow to make it (not an admin,
    not a member), or one that would break a group invariant."""


# --- server / API ------------------------------------------------------------------------


class ApiError(XChatError):
    """An error with an HTTP status, raised by the server's handlers and reconstructed
    by the client from the server's response."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class StorageUnavailable(ApiError):
    """The relay's database cannot be reached (a scaled-out node whose PostgreSQL is down):
    503 with Retry-After, so clients retry instead of giving up."""

    def __init__(self, message: str = "storage unavailable", retry_after: float = 1.0) -> None:
        super().__init__(503, message, retry_after)


# --- client ------------------------------------------------------------------------------


class ClientError(XChatError):
    """A client-side failure a user can act on."""


class ServerUnreachable(ClientError):
    """The server could not be reached."""


class Displaced(ServerUnreachable):
    """The relay closed our receive socket because another copy of this account's device
    connected (close 4409): reconnecting by ourselves would take it back, and the two
    copies would trade the connection forever (PROTOCOL Part III §5)."""


class ProfileError(ClientError):
    """The profile directory is missing, corrupt, or not initialised."""


class DeviceRemoved(ProfileError):
    """This device was removed from its account's device list (PROTOCOL.md Part VII §2):
    the relay no longer knows it, so it can neither receive nor send."""


class ProfileLocked(ProfileError):
    """The profile is in use by another process, or its key is unavailable/wrong."""


class UnknownContact(ClientError):
    """A handle or address that does not resolve to an account."""


class IdentityChanged(ClientError):
    """A verified contact's identity key changed; sending is blocked until re-verified."""


class RelayKeyMismatch(IdentityChanged):
    """The relay's signing key does not match the fingerprint in the address the user was
    given (``http://host:port#<fingerprint>``, PROTOCOL Part III §3.1): not that relay."""


class LinkError(ClientError):
    """Linking a device failed: a wrong, used or expired link code, or no answer in time
    (PROTOCOL.md Part VII §3)."""


class NotAllowed(ClientError):
    """A rich-messaging rule refuses the action (PROTOCOL.md Part VIII): editing or deleting
    someone else's message for everyone, an edit after 24 h, sending to a blocked contact."""


# --- calls (PROTOCOL.md Part IX) -----------------------------------------------------------


class CallStateError(ProtocolError):
    """A call signal or action that the call's state does not allow (PROTOCOL Part IX §3)."""


class CallError(ClientError):
    """A call could not be placed, answered or carried (no such call, already in a call,
    relay-only without a TURN server, no calls support installed)."""


class MediaError(CallError):
    """Call media could not be read, written or negotiated (a bad WAV file, bad SDP)."""


# --- backup and recovery (PROTOCOL.md Part X) ----------------------------------------------


class WeakPin(ClientError):
    """A backup PIN the policy refuses (too short, too common, a pattern)."""


class WrongPin(ClientError):
    """The realms did not release the shares for this PIN; ``guesses_remaining`` is the
    smallest count any realm reported (0: the backup is gone for good)."""

    def __init__(self, message: str, guesses_remaining: int) -> None:
        super().__init__(message)
        self.guesses_remaining = guesses_remaining


class BackupUnavailable(ClientError):
    """No usable PIN backup or history backup (not enrolled, deleted at the guess limit,
    too few realms reachable, or not this account's)."""
