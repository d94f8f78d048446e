"""What the files of a deployment home hold, read once per process.

``Home`` (common/home.py) only names paths. Reading them happens here: a process loads its
config, its keys and the deployment's trust (CA, CRL, verified certificates) once at start and
hands each component exactly what it uses, instead of every component re-reading files on every
use. Trust is the one part that changes while nodes run (a renewed camera certificate, a
revocation): ``TrustWatcher`` re-reads it when, and only when, a certificate file or the CRL
changed, for the store and the viewers alike.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from veilcam.common.config import CameraConfig, StoreConfig, ViewerConfig, load_config
from veilcam.common.errors import IdentityError, VeilcamError, VerificationError
from veilcam.common.home import Home
from veilcam.common.pki import CertificateAuthority, NodeIdentity, load_cert, load_private_key
from veilcam.common.secretfiles import write_secret
from veilcam.common.signing import TrustedCameras

log = logging.getLogger("veilcam.deployment")

IDENTITY_CHECK_S = 1.0  # how often running nodes look for changed certificates or CRL


# ---------------------------------------------------------------------------- configs


def camera_config(home: Home) -> CameraConfig:
    return load_config(home.camera_config_path, CameraConfig)


def store_config(home: Home) -> StoreConfig:
    return load_config(home.store_config_path, StoreConfig)


def viewer_config(home: Home) -> ViewerConfig:
    return load_config(home.viewer_config_path, ViewerConfig)


def archive_dir(home: Home, cfg: StoreConfig | None = None) -> Path:
    """The archive folder the store config names (relative paths are inside the home)."""
    return home.resolve((cfg or store_config(home)).archive.path)


# ---------------------------------------------------------------------------- keys


def ca_key(home: Home) -> Ed25519PrivateKey:
    """The admin (CA) key: present on the admin machine only."""
    if not home.ca_key_path.exists():
        raise IdentityError(
            f"the admin (CA) key {home.ca_key_path} is not on this machine; "
            "run this command where the deployment was initialised"
        )
    return load_private_key(home.ca_key_path, Ed25519PrivateKey)


def transport_key(home: Home, role: str, name: str) -> X25519PrivateKey:
    return load_private_key(home.transport_key_path(role, name), X25519PrivateKey)


def account_secret(home: Home) -> bytes:
    """The store's own secret for decoy salts (created on first use, 0600)."""
    path = home.root / "identities" / "store" / "account-secret"
    if not path.exists():
        write_secret(path, os.urandom(32))
    return path.read_bytes()


# ---------------------------------------------------------------------------- trust


def load_ca(home: Home) -> CertificateAuthority:
    return CertificateAuthority.load(home.ca_cert_path, home.crl_path)


def node_identities(
    home: Home,
    role: str,
    ca: CertificateAuthority | None = None,
    refused: dict[str, VerificationError] | None = None,
) -> list[NodeIdentity]:
    """Every certificate of ``role`` that verifies now; the others are logged, skipped,
    and put in ``refused`` (by name) when given."""
    ca = ca or load_ca(home)
    found = []
    for path in sorted(home.certs_dir.glob(f"{role}-*.crt")):
        name = path.stem[len(role) + 1 :]
        try:
            found.append(ca.verify_node(load_cert(path), role))
        except VerificationError as exc:
            log.warning("not trusting %s: %s", path.name, exc)
            if refused is not None:
                refused[name] = exc
        except IdentityError as exc:
            log.warning("not trusting %s: %s", path.name, exc)
    return found


def trusted_cameras(
    home: Home, ca: CertificateAuthority | None = None, history: bool = False
) -> TrustedCameras:
    """Cameras whose certificate verifies now; with ``history``, also their earlier
    (replaced or expired, but not revoked) certificates, each valid for its own period:
    what an audit of old frames needs."""
    ca = ca or load_ca(home)
    refused: dict[str, VerificationError] = {}
    cameras = node_identities(home, "camera", ca, refused)
    if history:
        for path in sorted(home.cert_archive_dir.glob("camera-*.crt")) + sorted(
            home.certs_dir.glob("camera-*.crt")
        ):
            cert = load_cert(path)
            try:  # chain, revocation and role; the period is judged per frame
                cameras.append(ca.verify_node(cert, "camera", at=cert.not_valid_before_utc))
            except VerificationError as exc:
                log.warning("not trusting %s: %s", path.name, exc)
    return TrustedCameras.from_identities(cameras, refused)


def store_identity(home: Home, ca: CertificateAuthority | None = None) -> NodeIdentity:
    """The store's verified certificate: clients pin its transport key."""
    ca = ca or load_ca(home)
    path = home.cert_path("store", "store")
    try:
        return ca.verify_node(load_cert(path), "store")
    except VerificationError as exc:
        raise IdentityError(f"refusing the store certificate {path}: {exc}") from None


def identity_stamp(home: Home) -> tuple:
    """Changes whenever a certificate or the CRL changes (nodes poll it to reload)."""
    paths = [home.crl_path, home.ca_cert_path, *sorted(home.certs_dir.glob("*.crt"))]
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in paths if p.exists())


@dataclass(frozen=True)
class Trust:
    """The deployment's trust as of one reading of the files: the CA with its CRL, and the
    cameras whose certificates verify."""

    ca: CertificateAuthority
    cameras: TrustedCameras
    stamp: tuple

    @classmethod
    def load(cls, home: Home) -> Trust:
        stamp = identity_stamp(home)  # before reading: a change while reading shows next poll
        ca = load_ca(home)
        return cls(ca, trusted_cameras(home, ca), stamp)


class TrustWatcher:
    """Keeps a ``Trust`` current. Call ``poll()`` often (the nodes' loops do): at most every
    IDENTITY_CHECK_S it compares the files' stamp and reloads only when a certificate or the
    CRL changed; a half-copied file keeps the trust already loaded until the next check.
    ``on_change`` receives each new trust (the store re-checks its connected peers with it)."""

    def __init__(
        self,
        home: Home,
        trust: Trust | None = None,
        on_change: Callable[[Trust], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.home = home
        self.current = trust or Trust.load(home)
        self.on_change = on_change
        self.clock = clock
        self.next_check = clock() + IDENTITY_CHECK_S
        self.reloads = 0

    def poll(self) -> bool:
        """Whether the trust was reloaded now."""
        now = self.clock()
        if now < self.next_check:
            return False
        self.next_check = now + IDENTITY_CHECK_S
        try:
            if identity_stamp(self.home) == self.current.stamp:
                return False
            trust = Trust.load(self.home)
        except (VeilcamError, OSError) as exc:  # half-copied files: try again next time
            log.error("cannot reload certificates (%s); keeping the ones loaded", exc)
            return False
        self.current = trust
        self.reloads += 1
        log.info(
            "certificates or CRL changed: reloaded, %d trusted camera(s)",
            len(trust.cameras.camera_ids),
        )
        if self.on_change is not None:
            self.on_change(trust)
        return True
