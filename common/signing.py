"""Ed25519 identities of cameras, and verification of frames and key envelopes.

Verification order matters (verify before you trust): the signature is checked over the raw
header bytes first; only then are the hashes it covers compared with the public image and the
zone ciphertexts (version 2: the public access unit and every encrypted stream access unit).
Nothing in a header is acted on before both pass.

The hash-chain rules (what follows what in a camera's sequence) are here once, in
``ChainTracker``: the store applies them to live frames, ``veilcam verify`` to archived ones.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from veilcam.common.errors import VerificationError
from veilcam.common.format import ZERO_DIGEST, FrameMessage, GapNotice, KeyEnvelope, sha256
from veilcam.common.pki import NodeIdentity, load_private_key


class RejectReason(StrEnum):
    """Why a message (or a query, a log-in) is refused: the ``reason`` of a VerificationError
    and the label of the store's ``veilcam_store_messages_rejected_total{reason}`` counter.
    The values are what metrics, logs, ``veilcam verify`` reports and docs show: never change
    one."""

    # the message itself (common.format, common.signing)
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    BAD_TIMESTAMP = "bad_timestamp"
    IMAGE_HASH_MISMATCH = "image_hash_mismatch"
    ZONE_HASH_MISMATCH = "zone_hash_mismatch"
    REPLAY = "replay"
    CHAIN_BREAK = "chain_break"
    # the camera's certificate (common.pki, TrustedCameras)
    UNKNOWN_CAMERA = "unknown_camera"
    UNTRUSTED_CERTIFICATE = "untrusted_certificate"
    BAD_CERTIFICATE = "bad_certificate"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_REVOKED = "certificate_revoked"
    WRONG_ROLE = "wrong_role"
    # the store's own refusals (store_node.node)
    WRONG_CAMERA_IDENTITY = "wrong_camera_identity"
    STORAGE_ERROR = "storage_error"
    OVERSIZED_MESSAGE = "oversized_message"
    QUERY_WRONG_ROLE = "query_wrong_role"
    LOGIN_RATE_LIMITED = "login_rate_limited"
    LOGIN_FAILED = "login_failed"


class ChainLink(StrEnum):
    """How a frame relates to the last one accepted from its camera (``ChainTracker``)."""

    FIRST = "first"  # nothing known yet for this camera
    NEXT = "next"  # seq is last+1 and prev_digest links to it
    GAP = "gap"  # seq jumped ahead: frames missing in between (declared or lost)
    CHAIN_START = "chain_start"  # a new chain (zero prev digest) at a higher seq
    REPLAY = "replay"  # seq not above the last: replayed, duplicated or reordered
    CHAIN_BREAK = "chain_break"  # seq is last+1 but prev_digest links elsewhere (a fork)


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    return load_private_key(path, Ed25519PrivateKey)


@dataclass(frozen=True)
class CameraKey:
    """One certified signing key of a camera and the period its certificate covers."""

    key: Ed25519PublicKey
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None

    def valid_at(self, at: dt.datetime) -> bool:
        return (self.not_before is None or at >= self.not_before) and (
            self.not_after is None or at <= self.not_after
        )


def _time_of(us: int, what: str) -> dt.datetime:
    """A signed timestamp as a datetime, to pick the certificate valid then. The field is not
    yet authenticated here, so a value no datetime holds is a clean rejection, not a crash."""
    try:
        return dt.datetime.fromtimestamp(us / 1e6, dt.UTC)
    except (OverflowError, ValueError, OSError):
        raise VerificationError(
            RejectReason.BAD_TIMESTAMP, f"{what}: time {us} µs since the epoch is out of range"
        ) from None


class TrustedCameras:
    """The camera signing keys a verifier accepts, by camera id, each within its certificate's
    validity period. A live verifier (store, viewer) judges at the current time; an audit of
    the archive judges each frame at its capture time, with earlier certificates kept."""

    def __init__(
        self,
        keys: Mapping[str, Ed25519PublicKey | list[CameraKey]],
        refused: dict[str, VerificationError] | None = None,
    ) -> None:
        self._keys = {
            cam: (list(v) if isinstance(v, list) else [CameraKey(v)]) for cam, v in keys.items()
        }
        self._refused = dict(refused or {})

    @classmethod
    def from_identities(
        cls, identities: list[NodeIdentity], refused: dict[str, VerificationError] | None = None
    ) -> TrustedCameras:
        """From verified camera certificates (common.pki): the CN is the camera id.
        ``refused`` names cameras whose certificate failed, with why (expired, revoked...)."""
        keys: dict[str, list[CameraKey]] = {}
        for i in identities:
            keys.setdefault(i.name, []).append(CameraKey(i.signing_key, i.not_before, i.not_after))
        return cls(keys, {k: v for k, v in (refused or {}).items() if k not in keys})

    @property
    def camera_ids(self) -> list[str]:
        return sorted(self._keys)

    def keys_for(self, camera_id: str, at: dt.datetime | None = None) -> list[Ed25519PublicKey]:
        """The keys of ``camera_id`` whose certificate covers ``at`` (default: now)."""
        entries = self._keys.get(camera_id)
        if entries is None:
            if camera_id in self._refused:
                raise self._refused[camera_id]
            raise VerificationError(
                RejectReason.UNKNOWN_CAMERA,
                f"camera {camera_id!r} is not a trusted camera (no valid, unrevoked certificate)",
            )
        at = at or dt.datetime.now(dt.UTC)
        keys = [e.key for e in entries if e.valid_at(at)]
        if not keys:
            last = max((e.not_after for e in entries if e.not_after), default=None)
            when = f" (the latest expired on {last:%Y-%m-%d %H:%M} UTC)" if last else ""
            raise VerificationError(
                RejectReason.CERTIFICATE_EXPIRED,
                f"no certificate of camera "
                f"{camera_id!r} was valid at {at:%Y-%m-%d %H:%M:%S} UTC" + when,
            )
        return keys

    def key_for(self, camera_id: str) -> Ed25519PublicKey:
        return self.keys_for(camera_id)[0]

    def _check(
        self, camera_id: str, signature: bytes, data: bytes, what: str, at: dt.datetime | None
    ) -> None:
        for key in self.keys_for(camera_id, at):
            try:
                key.verify(signature, data)
                return
            except InvalidSignature:
                continue
        when = at or dt.datetime.now(dt.UTC)
        for entry in self._keys.get(camera_id, []):  # a key of this camera, out of its period?
            if entry.valid_at(when):
                continue
            try:
                entry.key.verify(signature, data)
            except InvalidSignature:
                continue
            ended = f"ended {entry.not_after:%Y-%m-%d %H:%M:%S} UTC" if entry.not_after else ""
            raise VerificationError(
                RejectReason.CERTIFICATE_EXPIRED,
                f"{what}: signed with an earlier key of camera {camera_id!r} whose certificate "
                f"{ended or 'did not cover that time'} (replaced or expired) before "
                f"{when:%Y-%m-%d %H:%M:%S} UTC: a camera that kept signing with its old key "
                "after a renewal (renew with the camera stopped), or a stolen old key",
            )
        raise VerificationError(RejectReason.BAD_SIGNATURE, f"{what}: signature does not verify")

    def verify_frame(self, msg: FrameMessage, at_capture_time: bool = False) -> None:
        """Signature over the raw header, then the hashes it binds. Raises VerificationError.

        ``at_capture_time``: judge the certificate at the frame's capture time (archive audit)."""
        what = f"frame {msg.camera_id}#{msg.header.seq}"
        at = _time_of(msg.header.capture_time_us, what) if at_capture_time else None
        self._check(msg.camera_id, msg.signature, msg.header_bytes, what, at)
        if not hmac.compare_digest(sha256(msg.public_image), msg.header.image_sha256):
            raise VerificationError(
                RejectReason.IMAGE_HASH_MISMATCH,
                f"{what}: public image does not match its signed hash",
            )
        for i, (zone, ct) in enumerate(zip(msg.header.zones, msg.zone_ciphertexts, strict=True)):
            if not hmac.compare_digest(sha256(ct), zone.ciphertext_sha256):
                raise VerificationError(
                    RejectReason.ZONE_HASH_MISMATCH,
                    f"{what}: zone[{i}] ciphertext does not match its signed hash",
                )
        # version 2: every encrypted stream access unit, as the zone crops of version 1
        for i, (stream, au) in enumerate(zip(msg.streams, msg.stream_ciphertexts, strict=True)):
            if not hmac.compare_digest(sha256(au), stream.au_sha256):
                raise VerificationError(
                    RejectReason.ZONE_HASH_MISMATCH,
                    f"{what}: stream[{i}] ({stream.zone_class.label}) access unit does not "
                    "match its signed hash",
                )

    def verify_gap(self, notice: GapNotice, at_creation_time: bool = False) -> None:
        at = _time_of(notice.created_us, "gap notice") if at_creation_time else None
        self._check(
            notice.camera_id,
            notice.signature,
            notice.body_bytes,
            f"offline notice {notice.camera_id}#{notice.first_seq}"
            if notice.offline
            else f"gap notice {notice.camera_id}#{notice.first_seq}..#{notice.last_seq}",
            at,
        )

    def verify_envelope(self, env: KeyEnvelope, at_creation_time: bool = False) -> None:
        at = _time_of(env.body.created_us, "key envelope") if at_creation_time else None
        self._check(
            env.camera_id,
            env.signature,
            env.body_bytes,
            f"key envelope {env.camera_id}/{env.body.epoch_id.hex()[:8]}",
            at,
        )


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


@dataclass
class ChainState:
    seq: int
    digest: bytes


class ChainTracker:
    """Follows each camera's hash chain and sequence numbers across accepted frames.

    ``classify`` says how a (verified) frame relates to the last accepted one of its camera,
    as a ``ChainLink``; ``check`` does the same but raises VerificationError for a replayed
    or reordered frame (seq not increasing) and for a fork (seq is last+1 but prev_digest
    links elsewhere), which a live store refuses. ``accept`` records the frame as the last
    one. The rules are checked in this order: replay, chain start, next or fork, gap.
    """

    def __init__(self) -> None:
        self._state: dict[str, ChainState] = {}

    def last(self, camera_id: str) -> ChainState | None:
        return self._state.get(camera_id)

    def set(self, camera_id: str, seq: int, digest: bytes) -> None:
        self._state[camera_id] = ChainState(seq, digest)

    def classify(self, msg: FrameMessage) -> ChainLink:
        last = self._state.get(msg.camera_id)
        h = msg.header
        if last is None:
            return ChainLink.FIRST
        if h.seq <= last.seq:
            return ChainLink.REPLAY
        if h.prev_digest == ZERO_DIGEST:
            return ChainLink.CHAIN_START
        if h.seq == last.seq + 1:
            if not hmac.compare_digest(h.prev_digest, last.digest):
                return ChainLink.CHAIN_BREAK
            return ChainLink.NEXT
        return ChainLink.GAP

    def check(self, msg: FrameMessage) -> ChainLink:
        link = self.classify(msg)
        if link is ChainLink.REPLAY:
            last = self._state[msg.camera_id]
            raise VerificationError(
                RejectReason.REPLAY,
                f"frame {msg.camera_id}#{msg.header.seq} is not newer than "
                f"the last accepted #{last.seq} (replayed or reordered)",
            )
        if link is ChainLink.CHAIN_BREAK:
            last = self._state[msg.camera_id]
            raise VerificationError(
                RejectReason.CHAIN_BREAK,
                f"frame {msg.camera_id}#{msg.header.seq} does not "
                f"link to #{last.seq} (hash chain broken)",
            )
        return link

    def accept(self, msg: FrameMessage) -> None:
        self._state[msg.camera_id] = ChainState(msg.header.seq, msg.digest)
