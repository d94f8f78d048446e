"""Wrapping epoch content keys for recipients with HPKE (RFC 9180), as age wraps file keys.

A ``Recipient`` (public key) wraps; an ``Identity`` (private key) unwraps, and says
``NotARecipientError`` ("not for me, try the next") when an envelope holds nothing for it.
Every sealed key is bound by HPKE's ``info`` to its camera, epoch, zone class and recipient,
so a sealed key cannot be moved to another context by whoever stores the envelope.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from veilcam.common.errors import NotARecipientError, VerificationError
from veilcam.common.format import (
    KEY_ID_LEN,
    EnvelopeBody,
    KemSuite,
    KeyEnvelope,
    SealedKey,
    ZoneClass,
    sha256,
)

SUITES = {
    KemSuite.X25519_HKDF_SHA256_AES256GCM: hpke.Suite(
        hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    ),
    KemSuite.MLKEM768X25519_HKDF_SHA256_AES256GCM: hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    ),
}
INFO_PREFIX = b"veilcam/v1/epoch-key\x00"


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public_raw: bytes) -> bytes:
    """A recipient's id in envelopes: the first 16 bytes of SHA-256 of its raw public key."""
    return sha256(public_raw)[:KEY_ID_LEN]


def wrap_info(camera_id: str, epoch_id: bytes, zone_class: ZoneClass, key_id: bytes) -> bytes:
    return (
        INFO_PREFIX + camera_id.encode("ascii") + b"\x00" + epoch_id + bytes([zone_class]) + key_id
    )


@dataclass(frozen=True)
class Recipient:
    """Someone who may unlock: a name (for logs only), an X25519 public key, and optionally
    an ML-KEM-768 public key for the hybrid post-quantum suite."""

    name: str
    public_key: X25519PublicKey
    pq_public_key: mlkem.MLKEM768PublicKey | None = None

    @classmethod
    def from_raw(cls, name: str, public_raw: bytes, pq_public_raw: bytes = b"") -> Recipient:
        if len(public_raw) != 32:
            raise ValueError(f"X25519 public key must be 32 bytes, got {len(public_raw)}")
        pq = mlkem.MLKEM768PublicKey.from_public_bytes(pq_public_raw) if pq_public_raw else None
        return cls(name, X25519PublicKey.from_public_bytes(public_raw), pq)

    @property
    def public_raw(self) -> bytes:
        return _raw_public(self.public_key)

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.public_raw)

    def wrap(
        self,
        content_key: bytes,
        camera_id: str,
        epoch_id: bytes,
        zone_class: ZoneClass,
        suite: KemSuite = KemSuite.X25519_HKDF_SHA256_AES256GCM,
    ) -> SealedKey:
        info = wrap_info(camera_id, epoch_id, zone_class, self.key_id)
        public: X25519PublicKey | hpke.MLKEM768X25519PublicKey
        if suite == KemSuite.X25519_HKDF_SHA256_AES256GCM:
            public = self.public_key
        elif self.pq_public_key is None:
            raise ValueError(f"recipient {self.name} has no post-quantum key")
        else:
            public = hpke.MLKEM768X25519PublicKey(self.pq_public_key, self.public_key)
        return SealedKey(self.key_id, zone_class, SUITES[suite].encrypt(content_key, public, info))


@dataclass(frozen=True)
class Identity:
    """A user's private keys, once unlocked from their keystore."""

    name: str
    private_key: X25519PrivateKey
    pq_private_key: mlkem.MLKEM768PrivateKey | None = None

    @property
    def key_id(self) -> bytes:
        return key_id_of(_raw_public(self.private_key.public_key()))

    def _private_for(self, suite: KemSuite):
        if suite == KemSuite.X25519_HKDF_SHA256_AES256GCM:
            return self.private_key
        if self.pq_private_key is None:
            raise NotARecipientError(f"user {self.name!r} has no post-quantum key")
        return hpke.MLKEM768X25519PrivateKey(self.pq_private_key, self.private_key)

    def unwrap_envelope(self, body: EnvelopeBody) -> dict[ZoneClass, bytes]:
        """The content keys this identity may use for the envelope's epoch, per zone class."""
        keys: dict[ZoneClass, bytes] = {}
        for entry in body.entries:
            if entry.recipient_key_id != self.key_id:
                continue
            info = wrap_info(body.camera_id, body.epoch_id, entry.zone_class, self.key_id)
            try:
                keys[entry.zone_class] = SUITES[body.suite].decrypt(
                    entry.sealed, self._private_for(body.suite), info
                )
            except (InvalidTag, ValueError):
                raise VerificationError(
                    "bad_sealed_key",
                    f"sealed key for {self.name} in envelope of camera "
                    f"{body.camera_id} does not open (tampered)",
                ) from None
        if not keys:
            raise NotARecipientError(
                f"user {self.name!r} is not a recipient of camera "
                f"{body.camera_id!r} epoch {body.epoch_id.hex()[:8]}"
            )
        return keys


@dataclass(frozen=True)
class Grant:
    """Which zone classes of a camera a recipient may unlock."""

    recipient: Recipient
    classes: frozenset[ZoneClass]


def effective_classes(granted: frozenset[ZoneClass]) -> frozenset[ZoneClass]:
    """What a grant opens: its classes, plus FULL (whole-frame, fail-closed zones) only for
    whoever holds every grantable class, since such a zone uncovers all of them."""
    basic = frozenset(ZoneClass.grantable())
    classes = granted & basic
    return classes | {ZoneClass.FULL} if classes == basic else classes


def build_envelope(
    signing_key: Ed25519PrivateKey,
    camera_id: str,
    epoch_id: bytes,
    first_seq: int,
    class_keys: dict[ZoneClass, bytes],
    grants: list[Grant],
    suite: KemSuite = KemSuite.X25519_HKDF_SHA256_AES256GCM,
) -> KeyEnvelope:
    """Seal every class key to every recipient granted that class, and sign the result.

    With the hybrid suite, recipients without a post-quantum key are left out (and the caller
    is expected to say so): sealing them classically would defeat the point.
    """
    pq = suite == KemSuite.MLKEM768X25519_HKDF_SHA256_AES256GCM
    entries = [
        grant.recipient.wrap(key, camera_id, epoch_id, zclass, suite)
        for grant in grants
        if not pq or grant.recipient.pq_public_key is not None
        for zclass, key in sorted(class_keys.items())
        if zclass in effective_classes(grant.classes)
    ]
    body = EnvelopeBody(
        camera_id, epoch_id, time.time_ns() // 1000, first_seq, suite, tuple(entries)
    )
    body_bytes = body.to_bytes()
    return KeyEnvelope(body, body_bytes, signing_key.sign(body_bytes))
