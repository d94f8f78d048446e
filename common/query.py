"""The store's query protocol: commands, requests, replies, limits and who may ask what.

A query is a ZeroMQ multipart message from a camera or viewer (DEALER) to the store's query
socket (ROUTER, CurveZMQ): ``command | field*``; the answer is ``OK | field*`` or
``ERR | reason``. Every frame of either is built and parsed here (docs/FORMAT.md, "Queries",
byte for byte: change both together), so the store's handlers and the clients work on typed
values. Decoding refuses malformed input with a :class:`QueryError` that names the command
and the field: a wrong frame count, a field above its size limit, a number that is not
plain decimal ASCII or out of its range, a bad camera id or user name.

What each side checks beyond the bytes (signatures, the KDF floor, the hash chain) stays with
the caller: a reply that decodes is well-formed, not trustworthy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, TypeAlias

from veilcam.common.errors import FormatError, KeystoreError, VeilcamError
from veilcam.common.format import CAMERA_ID_RE, KEY_ID_LEN, KIND_FRAME, pack_parts, unpack_parts
from veilcam.common.home import check_user_name
from veilcam.common.keystore import KdfParams

QUERY_PROTOCOL_VERSION = 4  # 1: ENVELOPE .. TIME; 2: PASSWD and TRUST; 3: CHAIN and KEYS; 4: LIVE

# Limits of a request (what the store's query socket reads; above them a message is dropped
# unanswered, or answered ERR when only one field is too long).
MAX_REQUEST_FRAMES = 7  # after the routing id; the longest request (PASSWD) has 5
MAX_REQUEST_BYTES = 256 * 2**10  # the whole request
MAX_FIELD_BYTES = 64 * 2**10  # one frame (the socket's MAXMSGSIZE; a keystore is ~3 KB)
LOGIN_SECRET_BYTES = 32
EPOCH_ID_BYTES = 16
MAX_INT_DIGITS = 19  # every number below 2**63 fits
MAX_RANGE_FRAMES = 64  # frames in one RANGE answer, whatever the limit asked
MAX_LIVE_FRAMES = 300  # frames in one LIVE answer (a camera's current group of pictures)
MAX_COVERAGE_BUCKETS = 2000
MAX_TRUST_CERTIFICATES = 4096
MLKEM768_PUBLIC_KEY_LEN = 1184
I63 = 2**63

OK = b"OK"
ERR = b"ERR"
UNKNOWN_QUERY = "unknown query"


class QueryError(FormatError):
    """A query or its answer is malformed (wrong frame count, oversized field, bad number)."""


class QueryRefused(VeilcamError):
    """The store answered ``ERR``; ``reason`` is its text, ``command`` what was asked."""

    def __init__(self, command: Command, reason: str) -> None:
        super().__init__(reason)
        self.command = command
        self.reason = reason

    @property
    def unknown_command(self) -> bool:
        """The store does not know the command: a store older than it."""
        return self.reason == UNKNOWN_QUERY


class Command(Enum):
    """A query command; its value is the first frame on the wire."""

    ENVELOPE = b"ENVELOPE"
    RANGE = b"RANGE"
    SPAN = b"SPAN"
    COVERAGE = b"COVERAGE"
    SALT = b"SALT"
    REGISTER = b"REGISTER"
    LOGIN = b"LOGIN"
    PASSWD = b"PASSWD"
    GRANTS = b"GRANTS"
    TIME = b"TIME"
    TRUST = b"TRUST"
    CHAIN = b"CHAIN"
    KEYS = b"KEYS"
    LIVE = b"LIVE"

    @property
    def label(self) -> str:
        return self.value.decode("ascii")

    @classmethod
    def from_wire(cls, frame: bytes) -> Command:
        try:
            return cls(bytes(frame))
        except ValueError:
            raise QueryError(UNKNOWN_QUERY) from None


# which certified role may send each command (the ZAP User-Id is "role:name")
ALLOWED_ROLES: dict[Command, frozenset[str]] = {
    Command.ENVELOPE: frozenset({"viewer"}),
    Command.RANGE: frozenset({"viewer"}),
    Command.SPAN: frozenset({"viewer"}),
    Command.COVERAGE: frozenset({"viewer"}),
    Command.SALT: frozenset({"viewer"}),
    Command.REGISTER: frozenset({"viewer"}),
    Command.LOGIN: frozenset({"viewer"}),
    Command.PASSWD: frozenset({"viewer"}),
    Command.GRANTS: frozenset({"camera"}),
    Command.TIME: frozenset({"camera", "viewer"}),
    Command.TRUST: frozenset({"camera", "viewer"}),
    Command.CHAIN: frozenset({"camera"}),
    Command.KEYS: frozenset({"viewer"}),
    Command.LIVE: frozenset({"viewer"}),
}


def role_allowed(command: Command, role: str) -> bool:
    return role in ALLOWED_ROLES[command]


def refusal_for_role(command: Command, role: str) -> str:
    """The ``ERR`` text for a peer whose role may not send ``command``."""
    return f"{command.label} is not allowed for a {role or 'peer without a certified role'} certificate"


# --------------------------------------------------------------------------- fields


def _count(command: Command, what: str, fields: list[bytes], n: int) -> None:
    if len(fields) != n:
        raise QueryError(
            f"{command.label} {what} has {len(fields)} field(s) after its first frame; it takes {n}"
        )


def _field(command: Command, name: str, value: bytes, limit: int = MAX_FIELD_BYTES) -> bytes:
    if len(value) > limit:
        raise QueryError(f"{command.label}: {name} is {len(value)} bytes; at most {limit}")
    return bytes(value)


_DECIMAL = re.compile(rb"-?[0-9]{1,%d}\Z" % MAX_INT_DIGITS)


def _int(command: Command, name: str, value: bytes, low: int, high: int) -> int:
    """Plain decimal ASCII (an optional '-', at most 19 digits) within [low, high]."""
    if not _DECIMAL.match(bytes(value)):
        shown = bytes(value[:24])
        raise QueryError(f"{command.label}: {name} is not a decimal number ({shown!r})")
    number = int(value)
    if not low <= number <= high:
        raise QueryError(f"{command.label}: {name} {number} is out of range ({low}..{high})")
    return number


def _num(value: int) -> bytes:
    return str(int(value)).encode("ascii")


def _camera(command: Command, value: bytes) -> str:
    try:
        text = bytes(value[:65]).decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if not CAMERA_ID_RE.fullmatch(text) or len(value) > 64:
        raise QueryError(
            f"{command.label}: invalid camera id {bytes(value[:24])!r} (1-64 of letters, "
            "digits, '_', '.', '-', starting with a letter or digit)"
        )
    return text


def _user(command: Command, value: bytes) -> str:
    try:
        return check_user_name(_field(command, "user", value, 64).decode("utf-8"))
    except (UnicodeDecodeError, VeilcamError):
        raise QueryError(
            f"{command.label}: invalid user name {bytes(value[:24])!r} (1-64 letters, "
            "digits, '_', '.', '-', '@')"
        ) from None


def _secret(command: Command, name: str, value: bytes) -> bytes:
    if len(value) != LOGIN_SECRET_BYTES:
        raise QueryError(
            f"{command.label}: {name} is {len(value)} bytes; it must be {LOGIN_SECRET_BYTES}"
        )
    return bytes(value)


def _text(command: Command, name: str, value: bytes) -> str:
    try:
        return _field(command, name, value).decode("utf-8")
    except UnicodeDecodeError:
        raise QueryError(f"{command.label}: {name} is not UTF-8") from None


def _json(command: Command, name: str, value: bytes) -> object:
    try:
        return json.loads(_text(command, name, value))
    except ValueError:
        raise QueryError(f"{command.label}: {name} is not JSON") from None


# --------------------------------------------------------------------------- requests


class Request:
    """A query: ``command`` and typed fields; ``to_frames`` / ``decode_request``."""

    command: ClassVar[Command]

    def fields(self) -> list[bytes]:
        return []

    def to_frames(self) -> list[bytes]:
        frames = [self.command.value, *self.fields()]
        for f in frames[1:]:
            _field(self.command, "a field", f)
        return frames

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> Request:
        _count(cls.command, "request", fields, 0)
        return cls()


@dataclass(frozen=True)
class EnvelopeRequest(Request):
    """The archived key envelope of a camera's epoch."""

    command: ClassVar[Command] = Command.ENVELOPE
    camera_id: str
    epoch_id: bytes

    def fields(self) -> list[bytes]:
        return [self.camera_id.encode("ascii"), self.epoch_id]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> EnvelopeRequest:
        _count(cls.command, "request", fields, 2)
        if len(fields[1]) != EPOCH_ID_BYTES:
            raise QueryError(
                f"ENVELOPE: epoch id is {len(fields[1])} bytes; it must be {EPOCH_ID_BYTES}"
            )
        return cls(_camera(cls.command, fields[0]), bytes(fields[1]))


@dataclass(frozen=True)
class RangeRequest(Request):
    """Archived frames of a camera from ``from_us`` (or after frame ``after_seq``)."""

    command: ClassVar[Command] = Command.RANGE
    camera_id: str
    from_us: int
    after_seq: int | None  # None: start at from_us (-1 on the wire)
    limit: int

    def fields(self) -> list[bytes]:
        after = -1 if self.after_seq is None else self.after_seq
        return [
            self.camera_id.encode("ascii"),
            _num(self.from_us),
            _num(after),
            _num(self.limit),
        ]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> RangeRequest:
        c = cls.command
        _count(c, "request", fields, 4)
        after = _int(c, "after_seq", fields[2], -1, I63 - 1)
        return cls(
            _camera(c, fields[0]),
            _int(c, "from_us", fields[1], 0, I63 - 1),
            None if after < 0 else after,
            _int(c, "limit", fields[3], 1, I63 - 1),
        )


@dataclass(frozen=True)
class SpanRequest(Request):
    """First and last capture time and frame count of a camera's archive."""

    command: ClassVar[Command] = Command.SPAN
    camera_id: str

    def fields(self) -> list[bytes]:
        return [self.camera_id.encode("ascii")]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> SpanRequest:
        _count(cls.command, "request", fields, 1)
        return cls(_camera(cls.command, fields[0]))


@dataclass(frozen=True)
class CoverageRequest(Request):
    """Frames archived in each of ``buckets`` equal slices of [from_us, to_us)."""

    command: ClassVar[Command] = Command.COVERAGE
    camera_id: str
    from_us: int
    to_us: int
    buckets: int

    def fields(self) -> list[bytes]:
        return [
            self.camera_id.encode("ascii"),
            _num(self.from_us),
            _num(self.to_us),
            _num(self.buckets),
        ]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> CoverageRequest:
        c = cls.command
        _count(c, "request", fields, 4)
        request = cls(
            _camera(c, fields[0]),
            _int(c, "from_us", fields[1], 0, I63 - 1),
            _int(c, "to_us", fields[2], 1, I63 - 1),
            _int(c, "buckets", fields[3], 1, MAX_COVERAGE_BUCKETS),
        )
        if request.from_us >= request.to_us:
            raise QueryError("COVERAGE: bad coverage range (from_us must be below to_us)")
        return request


@dataclass(frozen=True)
class GrantsRequest(Request):
    """Every grant document for the asking camera."""

    command: ClassVar[Command] = Command.GRANTS
    camera_id: str

    def fields(self) -> list[bytes]:
        return [self.camera_id.encode("ascii")]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> GrantsRequest:
        _count(cls.command, "request", fields, 1)
        return cls(_camera(cls.command, fields[0]))


@dataclass(frozen=True)
class SaltRequest(Request):
    """The scrypt parameters and salt of a user's keystore (a decoy for an unknown user)."""

    command: ClassVar[Command] = Command.SALT
    user: str

    def fields(self) -> list[bytes]:
        return [self.user.encode("utf-8")]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> SaltRequest:
        _count(cls.command, "request", fields, 1)
        return cls(_user(cls.command, fields[0]))


@dataclass(frozen=True, repr=False)
class RegisterRequest(Request):
    """A new account: the login secret and the sealed keystore (JSON)."""

    command: ClassVar[Command] = Command.REGISTER
    user: str
    login_secret: bytes
    keystore_json: str

    def fields(self) -> list[bytes]:
        return [self.user.encode("utf-8"), self.login_secret, self.keystore_json.encode("utf-8")]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> RegisterRequest:
        c = cls.command
        _count(c, "request", fields, 3)
        return cls(
            _user(c, fields[0]),
            _secret(c, "login secret", fields[1]),
            _text(c, "keystore", fields[2]),
        )

    def __repr__(self) -> str:
        return f"RegisterRequest(user={self.user!r}, login_secret=<hidden>, keystore=...)"


@dataclass(frozen=True, repr=False)
class LoginRequest(Request):
    """A log-in with the login secret; the answer is the sealed keystore."""

    command: ClassVar[Command] = Command.LOGIN
    user: str
    login_secret: bytes

    def fields(self) -> list[bytes]:
        return [self.user.encode("utf-8"), self.login_secret]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> LoginRequest:
        c = cls.command
        _count(c, "request", fields, 2)
        return cls(_user(c, fields[0]), _secret(c, "login secret", fields[1]))

    def __repr__(self) -> str:
        return f"LoginRequest(user={self.user!r}, login_secret=<hidden>)"


@dataclass(frozen=True, repr=False)
class PasswdRequest(Request):
    """A password change: authenticated by the old login secret, it replaces the login
    verifier (from the new login secret) and the keystore (the same keys, re-sealed)."""

    command: ClassVar[Command] = Command.PASSWD
    user: str
    old_login_secret: bytes
    new_login_secret: bytes
    keystore_json: str

    def fields(self) -> list[bytes]:
        return [
            self.user.encode("utf-8"),
            self.old_login_secret,
            self.new_login_secret,
            self.keystore_json.encode("utf-8"),
        ]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> PasswdRequest:
        c = cls.command
        _count(c, "request", fields, 4)
        return cls(
            _user(c, fields[0]),
            _secret(c, "old login secret", fields[1]),
            _secret(c, "new login secret", fields[2]),
            _text(c, "keystore", fields[3]),
        )

    def __repr__(self) -> str:
        return f"PasswdRequest(user={self.user!r}, secrets=<hidden>, keystore=...)"


@dataclass(frozen=True)
class TimeRequest(Request):
    """The store's clock (``veilcam doctor``'s and the viewer's clock-skew measurement)."""

    command: ClassVar[Command] = Command.TIME


@dataclass(frozen=True)
class TrustRequest(Request):
    """The store's view of trust: fingerprints of its CA, CRL and certificates."""

    command: ClassVar[Command] = Command.TRUST


@dataclass(frozen=True)
class ChainRequest(Request):
    """The last sequence number the store holds for the asking camera: a camera that lost
    its state folder resumes after it instead of repeating numbers the store would refuse."""

    command: ClassVar[Command] = Command.CHAIN
    camera_id: str

    def fields(self) -> list[bytes]:
        return [self.camera_id.encode("ascii")]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> ChainRequest:
        _count(cls.command, "request", fields, 1)
        return cls(_camera(cls.command, fields[0]))


@dataclass(frozen=True)
class KeysRequest(Request):
    """A registered user's public keys, for an admin granting them on a home without the
    store's account folder. Answered only when ``key_id`` (which 'veilcam register' shows the
    user) matches the registered key, so the query tells nothing about who is registered to
    anyone who does not already know the key id."""

    command: ClassVar[Command] = Command.KEYS
    user: str
    key_id: bytes

    def fields(self) -> list[bytes]:
        return [self.user.encode(), self.key_id]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> KeysRequest:
        c = cls.command
        _count(c, "request", fields, 2)
        if len(fields[1]) != KEY_ID_LEN:
            raise QueryError(f"KEYS: key_id is {len(fields[1])} bytes; it must be {KEY_ID_LEN}")
        return cls(_user(c, fields[0]), bytes(fields[1]))


@dataclass(frozen=True)
class LiveRequest(Request):
    """A camera's current group of pictures (its last keyframe and the archived frames
    after it): what a viewer joining live decodes first, so a picture shows at once."""

    command: ClassVar[Command] = Command.LIVE
    camera_id: str

    def fields(self) -> list[bytes]:
        return [self.camera_id.encode("ascii")]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> LiveRequest:
        _count(cls.command, "request", fields, 1)
        return cls(_camera(cls.command, fields[0]))


REQUEST_TYPES: dict[Command, type[Request]] = {
    cls.command: cls
    for cls in (
        EnvelopeRequest,
        RangeRequest,
        SpanRequest,
        CoverageRequest,
        GrantsRequest,
        SaltRequest,
        RegisterRequest,
        LoginRequest,
        PasswdRequest,
        TimeRequest,
        TrustRequest,
        ChainRequest,
        KeysRequest,
        LiveRequest,
    )
}


def command_of(frames: list[bytes]) -> Command:
    """The command of a request (its first frame): what the role check needs before the
    rest is decoded. Raises QueryError("unknown query") for anything else."""
    if not frames:
        raise QueryError(UNKNOWN_QUERY)
    return Command.from_wire(frames[0])


def decode_request(frames: list[bytes]) -> Request:
    """A request from its frames (without the routing id), every field checked."""
    command = command_of(frames)
    if len(frames) > MAX_REQUEST_FRAMES:
        raise QueryError(f"{command.label}: {len(frames)} frames; at most {MAX_REQUEST_FRAMES}")
    total = sum(len(f) for f in frames)
    if total > MAX_REQUEST_BYTES:
        raise QueryError(f"{command.label}: {total} bytes; at most {MAX_REQUEST_BYTES}")
    for i, f in enumerate(frames[1:], 1):
        _field(command, f"field {i}", f)
    return REQUEST_TYPES[command].from_fields(list(frames[1:]))


# --------------------------------------------------------------------------- replies


class Reply:
    """An ``OK`` answer to ``command``; ``to_frames`` / ``decode_reply``."""

    command: ClassVar[Command]

    def fields(self) -> list[bytes]:
        return []

    def to_frames(self) -> list[bytes]:
        return [OK, *self.fields()]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> Reply:
        _count(cls.command, "answer", fields, 0)
        return cls()


@dataclass(frozen=True)
class ErrorReply:
    """``ERR | reason``: the store refused or could not answer."""

    reason: str

    def to_frames(self) -> list[bytes]:
        return [ERR, self.reason.encode("utf-8")]


@dataclass(frozen=True)
class EnvelopeReply(Reply):
    command: ClassVar[Command] = Command.ENVELOPE
    body_parts: list[bytes]  # the envelope's body and signature, as archived

    def fields(self) -> list[bytes]:
        return list(self.body_parts)

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> EnvelopeReply:
        _count(cls.command, "answer", fields, 2)
        return cls([bytes(f) for f in fields])


def _frames_field(command: Command, fields: list[bytes], limit: int) -> list[list[bytes]]:
    """Archived frames, one field each: ``pack_parts('F', body parts)``."""
    if len(fields) > limit:
        raise QueryError(f"{command.label} answer has {len(fields)} frames; at most {limit}")
    frames = []
    for i, packed in enumerate(fields, 1):
        try:
            kind, parts = unpack_parts(bytes(packed))
        except FormatError as exc:
            raise QueryError(f"{command.label} answer, frame {i}: {exc}") from None
        if kind != KIND_FRAME:
            raise QueryError(f"{command.label} answer, frame {i}: a record of kind {kind!r}")
        frames.append(parts)
    return frames


@dataclass(frozen=True)
class RangeReply(Reply):
    command: ClassVar[Command] = Command.RANGE
    frames: list[list[bytes]]  # each frame's body parts (header, signature, image, zones)

    def fields(self) -> list[bytes]:
        return [pack_parts(KIND_FRAME, parts) for parts in self.frames]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> RangeReply:
        return cls(_frames_field(cls.command, fields, MAX_RANGE_FRAMES))


@dataclass(frozen=True)
class LiveReply(Reply):
    command: ClassVar[Command] = Command.LIVE
    frames: list[list[bytes]]  # body parts of each frame, from the keyframe, in order

    def fields(self) -> list[bytes]:
        return [pack_parts(KIND_FRAME, parts) for parts in self.frames]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> LiveReply:
        return cls(_frames_field(cls.command, fields, MAX_LIVE_FRAMES))


@dataclass(frozen=True)
class SpanReply(Reply):
    command: ClassVar[Command] = Command.SPAN
    first_us: int
    last_us: int
    frames: int

    def fields(self) -> list[bytes]:
        return [_num(self.first_us), _num(self.last_us), _num(self.frames)]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> SpanReply:
        c = cls.command
        _count(c, "answer", fields, 3)
        return cls(
            _int(c, "first capture time", fields[0], 0, I63 - 1),
            _int(c, "last capture time", fields[1], 0, I63 - 1),
            _int(c, "frame count", fields[2], 0, I63 - 1),
        )


@dataclass(frozen=True)
class CoverageReply(Reply):
    command: ClassVar[Command] = Command.COVERAGE
    counts: list[int]

    def fields(self) -> list[bytes]:
        return [",".join(map(str, self.counts)).encode("ascii")]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> CoverageReply:
        c = cls.command
        _count(c, "answer", fields, 1)
        items = bytes(fields[0]).split(b",")
        if len(items) > MAX_COVERAGE_BUCKETS:
            raise QueryError(f"COVERAGE answer has {len(items)} counts; at most 2000")
        return cls([_int(c, "count", v, 0, I63 - 1) for v in items])


@dataclass(frozen=True)
class GrantsReply(Reply):
    command: ClassVar[Command] = Command.GRANTS
    documents: list[bytes]  # grant JSON documents (verified by the camera, not here)

    def fields(self) -> list[bytes]:
        return list(self.documents)

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> GrantsReply:
        return cls([bytes(f) for f in fields])


@dataclass(frozen=True)
class SaltReply(Reply):
    command: ClassVar[Command] = Command.SALT
    kdf: KdfParams

    def fields(self) -> list[bytes]:
        return [json.dumps(self.kdf.to_json()).encode("utf-8")]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> SaltReply:
        _count(cls.command, "answer", fields, 1)
        doc = _json(cls.command, "kdf", fields[0])
        try:
            if not isinstance(doc, dict):
                raise TypeError("not an object")
            return cls(KdfParams.from_json(doc))
        except (KeystoreError, KeyError, TypeError, ValueError) as exc:
            raise QueryError(f"SALT answer: not a kdf object ({exc})") from None


@dataclass(frozen=True)
class RegisterReply(Reply):
    command: ClassVar[Command] = Command.REGISTER


@dataclass(frozen=True)
class LoginReply(Reply):
    command: ClassVar[Command] = Command.LOGIN
    keystore_json: str

    def fields(self) -> list[bytes]:
        return [self.keystore_json.encode("utf-8")]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> LoginReply:
        _count(cls.command, "answer", fields, 1)
        return cls(_text(cls.command, "keystore", fields[0]))


@dataclass(frozen=True)
class PasswdReply(Reply):
    command: ClassVar[Command] = Command.PASSWD


@dataclass(frozen=True)
class TimeReply(Reply):
    command: ClassVar[Command] = Command.TIME
    time_us: int  # the store's clock, µs since the Unix epoch

    def fields(self) -> list[bytes]:
        return [_num(self.time_us)]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> TimeReply:
        _count(cls.command, "answer", fields, 1)
        return cls(_int(cls.command, "time", fields[0], 0, I63 - 1))


@dataclass(frozen=True)
class ChainReply(Reply):
    command: ClassVar[Command] = Command.CHAIN
    last_seq: int  # -1: the store holds no frame of that camera

    def fields(self) -> list[bytes]:
        return [str(self.last_seq).encode("ascii")]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> ChainReply:
        _count(cls.command, "answer", fields, 1)
        if bytes(fields[0]) == b"-1":
            return cls(-1)
        return cls(_int(cls.command, "last sequence number", fields[0], 0, I63 - 1))


@dataclass(frozen=True)
class KeysReply(Reply):
    command: ClassVar[Command] = Command.KEYS
    public_key: bytes  # X25519, raw (its key id is what was asked)
    pq_public_key: bytes  # ML-KEM-768, raw; empty when the user has none

    def fields(self) -> list[bytes]:
        return [self.public_key, self.pq_public_key]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> KeysReply:
        _count(cls.command, "answer", fields, 2)
        if len(fields[0]) != 32:
            raise QueryError(f"KEYS answer: public key is {len(fields[0])} bytes, not 32")
        if len(fields[1]) not in (0, MLKEM768_PUBLIC_KEY_LEN):
            raise QueryError(
                f"KEYS answer: post-quantum key is {len(fields[1])} bytes, not "
                f"{MLKEM768_PUBLIC_KEY_LEN} (ML-KEM-768) or none"
            )
        return cls(bytes(fields[0]), bytes(fields[1]))


@dataclass(frozen=True)
class CertFingerprint:
    """A certificate the store holds: ``identities/certs/<role>-<name>.crt``."""

    role: str
    name: str
    sha256: str  # hex SHA-256 of the DER
    not_before_us: int

    @property
    def label(self) -> str:
        return f"{self.role}:{self.name}"


@dataclass(frozen=True)
class CrlInfo:
    sha256: str  # hex SHA-256 of the DER
    last_update_us: int
    number: int | None  # the CRLNumber extension, when the CRL has one


@dataclass(frozen=True)
class TrustReply(Reply):
    command: ClassVar[Command] = Command.TRUST
    ca_sha256: str
    crl: CrlInfo | None
    certificates: list[CertFingerprint] = field(default_factory=list)

    def fields(self) -> list[bytes]:
        doc = {
            "ca": self.ca_sha256,
            "crl": None
            if self.crl is None
            else {
                "sha256": self.crl.sha256,
                "last_update_us": self.crl.last_update_us,
                "number": self.crl.number,
            },
            "certificates": [
                {
                    "role": c.role,
                    "name": c.name,
                    "sha256": c.sha256,
                    "not_before_us": c.not_before_us,
                }
                for c in self.certificates
            ],
        }
        return [json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> TrustReply:
        _count(cls.command, "answer", fields, 1)
        doc = _json(cls.command, "trust document", fields[0])
        try:
            if not isinstance(doc, dict):
                raise TypeError("not an object")
            crl = doc["crl"]
            certs = doc["certificates"]
            if not isinstance(certs, list) or len(certs) > MAX_TRUST_CERTIFICATES:
                raise ValueError("certificates is not a list of at most 4096")
            return cls(
                _hex_digest(doc["ca"]),
                None
                if crl is None
                else CrlInfo(
                    _hex_digest(crl["sha256"]),
                    _json_int(crl["last_update_us"]),
                    None if crl["number"] is None else _json_int(crl["number"]),
                ),
                [
                    CertFingerprint(
                        _json_name(c["role"]),
                        _json_name(c["name"]),
                        _hex_digest(c["sha256"]),
                        _json_int(c["not_before_us"]),
                    )
                    for c in certs
                ],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise QueryError(f"TRUST answer: malformed trust document ({exc})") from None


def _hex_digest(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"not a hex SHA-256: {str(value)[:80]!r}")
    return value


def _json_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**160:
        raise ValueError(f"not a non-negative integer: {str(value)[:40]!r}")
    return value


def _json_name(value: object) -> str:
    if not isinstance(value, str) or not CAMERA_ID_RE.fullmatch(value):
        raise ValueError(f"not a role or node name: {str(value)[:80]!r}")
    return value


REPLY_TYPES: dict[Command, type[Reply]] = {
    cls.command: cls
    for cls in (
        EnvelopeReply,
        RangeReply,
        SpanReply,
        CoverageReply,
        GrantsReply,
        SaltReply,
        RegisterReply,
        LoginReply,
        PasswdReply,
        TimeReply,
        TrustReply,
        ChainReply,
        KeysReply,
        LiveReply,
    )
}

AnyReply: TypeAlias = Reply | ErrorReply


def decode_reply(command: Command, frames: list[bytes]) -> AnyReply:
    """The store's answer to ``command``: a typed reply, or ErrorReply for ``ERR``."""
    if not frames:
        raise QueryError(f"{command.label} answer is empty")
    status = bytes(frames[0])
    if status == ERR:
        reason = bytes(frames[1]) if len(frames) > 1 else b"no reason given"
        return ErrorReply(reason[:4096].decode("utf-8", errors="replace"))
    if status != OK:
        raise QueryError(f"{command.label} answer starts with {status[:16]!r}, not OK or ERR")
    return REPLY_TYPES[command].from_fields(list(frames[1:]))
