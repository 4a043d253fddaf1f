"""Exit statuses of the ``xchat`` command and the one-line message for each error.

Kept apart from the commands so that every command module, and the entry point in
:mod:`xchat.cli.main`, maps an error to the same stable status (documented in README.md)
without importing each other.
"""

from __future__ import annotations

from xchat.cli.messages import BadInput
from xchat.errors import (
    ApiError,
    ClientError,
    IdentityChanged,
    InvalidAddress,
    InvalidMnemonic,
    LinkError,
    NotAllowed,
    ProfileLocked,
    ServerUnreachable,
    UnknownContact,
    UntrustedDevice,
    WeakPin,
    WrongPin,
    XChatError,
)

# Exit statuses (stable; documented in README.md).
EXIT_ERROR = 1
EXIT_USAGE = 2  # also bad input: an empty message, a mistyped address
EXIT_UNREACHABLE = 3
EXIT_RATE_LIMITED = 4
EXIT_PROFILE_LOCKED = 5
EXIT_IDENTITY_CHANGED = 6
EXIT_UNKNOWN_CONTACT = 7
EXIT_BAD_PHRASE = 8
EXIT_NOT_ALLOWED = 9  # a rich-messaging rule refused it (PROTOCOL Part VIII)
EXIT_LINK = 14  # a wrong, used or expired link code, or no approval in time (Part VII)
EXIT_UNTRUSTED_DEVICE = 15  # a forged/rolled-back device list or an unlisted device
EXIT_INTERRUPTED = 130


class InvalidInput(ClientError):
    """An argument the command refuses before doing any work (exit status 2)."""


EXIT_CODES: list[tuple[type[XChatError], int]] = [
    (InvalidInput, EXIT_USAGE),
    (InvalidAddress, EXIT_USAGE),
    (ServerUnreachable, EXIT_UNREACHABLE),
    (ProfileLocked, EXIT_PROFILE_LOCKED),
    (IdentityChanged, EXIT_IDENTITY_CHANGED),
    (UnknownContact, EXIT_UNKNOWN_CONTACT),
    (InvalidMnemonic, EXIT_BAD_PHRASE),
    (WrongPin, EXIT_BAD_PHRASE),  # backup PIN: the message says how many guesses remain
    (WeakPin, EXIT_USAGE),
    (BadInput, EXIT_USAGE),
    (NotAllowed, EXIT_NOT_ALLOWED),
    (LinkError, EXIT_LINK),
    (UntrustedDevice, EXIT_UNTRUSTED_DEVICE),
]


def error_line(exc: XChatError) -> tuple[str, int]:
    """The one-line message and exit status for an error."""
    if isinstance(exc, ApiError):
        if exc.status == 429:
            wait = f"; try again in {exc.retry_after:.0f} s" if exc.retry_after else ""
            return f"rate limited by the server{wait}", EXIT_RATE_LIMITED
        return f"server refused the request: {exc.message} (HTTP {exc.status})", EXIT_ERROR
    if isinstance(exc, InvalidMnemonic):
        return f"wrong recovery phrase: {exc}", EXIT_BAD_PHRASE
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return str(exc), code
    return str(exc) or type(exc).__name__, EXIT_ERROR
