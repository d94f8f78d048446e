"""Ed25519 identities of cameras, and verification of frames and key envelopes.

Verification order matters (verify before you trust): the signature is checked over the raw
header bytes first; only then are the hashes it covers compared with the public image and the
zone ciphertexts. Nothing in a header is acted on before both pass.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import IdentityError, VerificationError
from common.format import ZERO_DIGEST, FrameMessage, KeyEnvelope, sha256
from common.pki import NodeIdentity
from common.secretfiles import write_atomic, write_secret


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_signing_key(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_secret(path, pem)


def save_public_key(path: Path, key: Ed25519PublicKey) -> None:
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    write_atomic(path, pem)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise IdentityError(f"signing key {path} not found (run 'veilcam init')") from None
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"signing key {path} is not a readable PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"signing key {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        raise IdentityError(f"public key {path} not found") from None
    except ValueError as exc:
        raise IdentityError(f"public key {path} is not a readable PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError(f"public key {path} is not an Ed25519 key")
    return key


def _check_signature(key: Ed25519PublicKey, signature: bytes, data: bytes, what: str) -> None:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise VerificationError("bad_signature", f"{what}: signature does not verify") from None


class TrustedCameras:
    """The camera public keys a verifier accepts, by camera id, until their certificates expire."""

    def __init__(self, keys: dict[str, Ed25519PublicKey],
                 not_after: dict[str, dt.datetime] | None = None,
                 refused: dict[str, VerificationError] | None = None) -> None:
        self._keys = dict(keys)
        self._not_after = dict(not_after or {})
        self._refused = dict(refused or {})

    @classmethod
    def from_identities(cls, identities: list[NodeIdentity],
                        refused: dict[str, VerificationError] | None = None) -> TrustedCameras:
        """From verified camera certificates (common.pki): the CN is the camera id.
        ``refused`` names cameras whose certificate failed, with why (expired, revoked...)."""
        return cls({i.name: i.signing_key for i in identities},
                   {i.name: i.not_after for i in identities}, refused)

    @property
    def camera_ids(self) -> list[str]:
        return sorted(self._keys)

    def key_for(self, camera_id: str) -> Ed25519PublicKey:
        try:
            key = self._keys[camera_id]
        except KeyError:
            if camera_id in self._refused:
                raise self._refused[camera_id] from None
            raise VerificationError("unknown_camera", f"camera {camera_id!r} is not a trusted "
                                    "camera (no valid, unrevoked certificate)") from None
        not_after = self._not_after.get(camera_id)
        if not_after is not None and dt.datetime.now(dt.UTC) > not_after:
            raise VerificationError("certificate_expired", f"the certificate of camera "
                                    f"{camera_id!r} expired on {not_after:%Y-%m-%d %H:%M} UTC")
        return key

    def verify_frame(self, msg: FrameMessage) -> None:
        """Signature over the raw header, then the hashes it binds. Raises VerificationError."""
        what = f"frame {msg.camera_id}#{msg.header.seq}"
        _check_signature(self.key_for(msg.camera_id), msg.signature, msg.header_bytes, what)
        if not hmac.compare_digest(sha256(msg.public_image), msg.header.image_sha256):
            raise VerificationError("image_hash_mismatch",
                                    f"{what}: public image does not match its signed hash")
        for i, (zone, ct) in enumerate(zip(msg.header.zones, msg.zone_ciphertexts, strict=True)):
            if not hmac.compare_digest(sha256(ct), zone.ciphertext_sha256):
                raise VerificationError("zone_hash_mismatch",
                                        f"{what}: zone[{i}] ciphertext does not match its signed hash")

    def verify_envelope(self, env: KeyEnvelope) -> None:
        _check_signature(self.key_for(env.camera_id), env.signature, env.body_bytes,
                         f"key envelope {env.camera_id}/{env.body.epoch_id.hex()[:8]}")


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


@dataclass
class ChainState:
    seq: int
    digest: bytes


class ChainTracker:
    """Follows each camera's hash chain and sequence numbers across accepted frames.

    ``check`` classifies a verified frame against the last accepted one:
    - ``"next"``: seq is last+1 and prev_digest links to it;
    - ``"gap"``: seq jumped ahead (frames missing in between; declared or lost in transit);
    - ``"chain_start"``: the camera declared a new chain (zero prev digest) at a higher seq;
    - ``"first"``: nothing known yet for this camera.
    It raises VerificationError for a replayed or reordered frame (seq not increasing) and for
    a fork (seq is last+1 but prev_digest links elsewhere). ``accept`` records the frame.
    """

    def __init__(self) -> None:
        self._state: dict[str, ChainState] = {}

    def last(self, camera_id: str) -> ChainState | None:
        return self._state.get(camera_id)

    def set(self, camera_id: str, seq: int, digest: bytes) -> None:
        self._state[camera_id] = ChainState(seq, digest)

    def check(self, msg: FrameMessage) -> str:
        last = self._state.get(msg.camera_id)
        h = msg.header
        if last is None:
            return "first"
        if h.seq <= last.seq:
            raise VerificationError("replay", f"frame {msg.camera_id}#{h.seq} is not newer than "
                                    f"the last accepted #{last.seq} (replayed or reordered)")
        if h.prev_digest == ZERO_DIGEST:
            return "chain_start"
        if h.seq == last.seq + 1:
            if not hmac.compare_digest(h.prev_digest, last.digest):
                raise VerificationError("chain_break", f"frame {msg.camera_id}#{h.seq} does not "
                                        f"link to #{last.seq} (hash chain broken)")
            return "next"
        return "gap"

    def accept(self, msg: FrameMessage) -> None:
        self._state[msg.camera_id] = ChainState(msg.header.seq, msg.digest)
