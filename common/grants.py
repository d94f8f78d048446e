"""Grants: which user may unlock which zone classes of which camera, signed by the admin key.

A grant is a small JSON document signed with the deployment CA key (the admin key, kept on
the admin's machine). Stores keep and serve grants but cannot make one: a camera wraps epoch
keys only for recipients whose grant verifies against the CA certificate, and ignores (and
logs) anything else. Revocation is a newer grant for the same user and camera with
``revoked: true``; per (user, camera) the grant with the highest serial wins, and a camera
never goes back to a lower serial than one it has seen.

Limitation, stated in docs/SECURITY.md: a store that withholds a revocation it received can
keep a camera on the older grant until the camera is given the newer one another way.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from veilcam.common.errors import FormatError, VerificationError
from veilcam.common.format import ZoneClass, validate_camera_id
from veilcam.common.keywrap import Grant, Recipient
from veilcam.common.pki import CertificateAuthority
from veilcam.common.secretfiles import write_atomic

log = logging.getLogger("veilcam.grants")

GRANT_FORMAT = "veilcam-grant-v1"


@dataclass(frozen=True)
class SignedGrant:
    user: str
    camera: str
    classes: frozenset[ZoneClass]
    serial: int
    revoked: bool
    public_key: bytes
    pq_public_key: bytes

    def recipient(self) -> Recipient:
        return Recipient.from_raw(self.user, self.public_key, self.pq_public_key)


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign_grant(
    ca_key: Ed25519PrivateKey,
    user: str,
    camera: str,
    classes: list[ZoneClass],
    public_key: bytes,
    pq_public_key: bytes = b"",
    revoked: bool = False,
) -> bytes:
    """A signed grant document (JSON bytes)."""
    validate_camera_id(camera)
    body = {
        "format": GRANT_FORMAT,
        "user": user,
        "camera": camera,
        "classes": sorted(c.label for c in classes),
        "serial": time.time_ns(),
        "revoked": revoked,
        "public_key": public_key.hex(),
        "pq_public_key": pq_public_key.hex(),
    }
    signature = ca_key.sign(_canonical(body))
    return (
        json.dumps({**body, "signature": base64.b64encode(signature).decode()}, indent=2) + "\n"
    ).encode("utf-8")


def verify_grant(data: bytes, ca: CertificateAuthority) -> SignedGrant:
    """Parse and verify one grant; VerificationError("forged_grant" / "bad_grant") if not."""
    try:
        doc = json.loads(data)
        signature = base64.b64decode(doc.pop("signature"), validate=True)
        if doc.get("format") != GRANT_FORMAT:
            raise ValueError("not a veilcam grant")
        grant = SignedGrant(
            str(doc["user"]),
            validate_camera_id(doc["camera"]),
            frozenset(ZoneClass.from_label(c) for c in doc["classes"]),
            int(doc["serial"]),
            bool(doc["revoked"]),
            bytes.fromhex(doc["public_key"]),
            bytes.fromhex(doc["pq_public_key"]),
        )
        grant.recipient()  # the keys must parse
    except (
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        OverflowError,
        RecursionError,
        FormatError,
    ) as exc:  # FormatError: bad camera id; the others: hostile JSON
        raise VerificationError("bad_grant", f"malformed grant: {exc}") from None
    if not ca.verify_signed(signature, _canonical(doc)):
        raise VerificationError(
            "forged_grant",
            f"grant for user {grant.user!r} on camera "
            f"{grant.camera!r} is not signed by the deployment CA",
        )
    return grant


class GrantBook:
    """A camera's view of its grants: verified, newest serial per user, never rolled back."""

    def __init__(self, ca: CertificateAuthority, camera_id: str) -> None:
        self.ca, self.camera_id = ca, camera_id
        self._latest: dict[str, SignedGrant] = {}
        self._documents: dict[str, bytes] = {}  # the signed document behind each _latest

    def update(self, documents: list[bytes]) -> bool:
        """Take a batch of grant documents; True if the effective grants changed."""
        before = self.effective_key()
        for data in documents:
            try:
                grant = verify_grant(data, self.ca)
            except VerificationError as exc:
                log.warning("ignoring grant: %s", exc)
                continue
            if grant.camera != self.camera_id:
                continue
            current = self._latest.get(grant.user)
            if current is None or grant.serial > current.serial:
                self._latest[grant.user] = grant
                self._documents[grant.user] = data
            elif grant.serial < current.serial:
                log.warning(
                    "ignoring an older grant for user %r on camera %r (serial %d < %d):"
                    " a replayed grant or a revocation being rolled back",
                    grant.user,
                    grant.camera,
                    grant.serial,
                    current.serial,
                )
        return self.effective_key() != before

    def documents(self) -> list[bytes]:
        """The newest signed document per user (revocations included): what to cache, so a
        restart cannot be rolled back to an older grant."""
        return [self._documents[user] for user in sorted(self._documents)]

    def effective(self) -> list[Grant]:
        return [
            Grant(g.recipient(), g.classes)
            for g in sorted(self._latest.values(), key=lambda g: g.user)
            if not g.revoked and g.classes
        ]

    def effective_key(self) -> tuple:
        return tuple(
            sorted((g.user, g.serial) for g in self._latest.values() if not g.revoked and g.classes)
        )


def grant_path(grants_dir: Path, user: str, camera: str) -> Path:
    return Path(grants_dir) / f"{user}@{camera}.grant.json"


def write_grant(grants_dir: Path, user: str, camera: str, document: bytes) -> Path:
    path = grant_path(grants_dir, user, camera)
    write_atomic(path, document)
    return path
