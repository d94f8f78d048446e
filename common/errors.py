"""The error types veilcam raises for bad input.

Every error a user can cause (bad config, wrong password, tampered message, corrupt archive)
is one of these, carries a message a person can act on, and is printed by the command line
without a traceback. Anything else escaping is a bug.
"""

from __future__ import annotations


class VeilcamError(Exception):
    """Base of every user-facing error."""


class ConfigError(VeilcamError):
    """A config file is missing, unreadable or invalid (message names file, key and reason)."""


class FormatError(VeilcamError):
    """A message or archive record is malformed (bad magic, version, length or field)."""


class VerificationError(VeilcamError):
    """A message is well-formed but not authentic: bad signature, hash mismatch, replay, chain break.

    ``reason`` is a short machine-readable token (used for counters and the verify report).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class KeystoreError(VeilcamError):
    """A user keystore cannot be opened (wrong password, missing or corrupt file)."""


class NotARecipientError(VeilcamError):
    """A key envelope holds no key for this user ("not for me"): try another identity or give up."""


class IdentityError(VeilcamError):
    """A signing or identity key file is missing, unreadable or of the wrong type."""


class ArchiveError(VeilcamError):
    """The archive on disk is unreadable or inconsistent."""


class TransportError(VeilcamError):
    """A peer failed authentication on the wire (CurveZMQ handshake refused or failed)."""
