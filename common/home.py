"""The deployment home: one folder holding configs, identities, users, grants, archive, state.

    HOME/config/{camera,store,viewer}.toml
    HOME/identities/ca/ca.crt, crl.pem             deployment CA certificate and revocation list
    HOME/identities/ca/ca.key.pem                  CA = admin key (0600; admin machine only)
    HOME/identities/certs/<role>-<name>.crt        node certificates (everyone)
    HOME/identities/<role>/<name>.key.pem          node signing key (0600; that node only)
    HOME/identities/<role>/<name>.transport.key.pem node CurveZMQ key (0600; that node only)
    HOME/users/<name>/keystore.json                a user's sealed keys (0600; user only)
    HOME/grants/<user>@<camera>.grant.json         CA-signed grants (store serves them)
    HOME/accounts/accounts.sqlite3                 store: login verifiers + sealed keystores
    HOME/archive/                                  store: segments and index
    HOME/state/                                    camera chain state, grant cache

On one machine (the demo) all of it lives together; on several, each machine keeps only the
parts named for it (docs/ARCHITECTURE.md, "Who holds what").
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import string
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from veilcam.common.config import CameraConfig, StoreConfig, ViewerConfig, load_config
from veilcam.common.errors import ConfigError, IdentityError, VeilcamError, VerificationError
from veilcam.common.format import validate_camera_id
from veilcam.common.pki import (
    CertificateAuthority,
    NodeIdentity,
    build_crl,
    create_ca,
    issue_node_cert,
    load_cert,
    load_private_key,
    save_cert,
    save_crl,
    save_private_key,
)
from veilcam.common.secretfiles import write_atomic, write_secret
from veilcam.common.signing import TrustedCameras

log = logging.getLogger("veilcam.home")

USER_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-@")


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def camera_config_path(self) -> Path:
        return self.config_dir / "camera.toml"

    @property
    def store_config_path(self) -> Path:
        return self.config_dir / "store.toml"

    @property
    def viewer_config_path(self) -> Path:
        return self.config_dir / "viewer.toml"

    @property
    def ca_dir(self) -> Path:
        return self.root / "identities" / "ca"

    @property
    def ca_cert_path(self) -> Path:
        return self.ca_dir / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.ca_dir / "ca.key.pem"

    @property
    def crl_path(self) -> Path:
        return self.ca_dir / "crl.pem"

    @property
    def certs_dir(self) -> Path:
        return self.root / "identities" / "certs"

    def cert_path(self, role: str, name: str) -> Path:
        return self.certs_dir / f"{role}-{name}.crt"

    def signing_key_path(self, role: str, name: str) -> Path:
        return self.root / "identities" / role / f"{name}.key.pem"

    def transport_key_path(self, role: str, name: str) -> Path:
        return self.root / "identities" / role / f"{name}.transport.key.pem"

    def camera_key_path(self, camera_id: str) -> Path:
        return self.signing_key_path("camera", camera_id)

    @property
    def grants_dir(self) -> Path:
        return self.root / "grants"

    @property
    def accounts_path(self) -> Path:
        return self.root / "accounts" / "accounts.sqlite3"

    @property
    def users_dir(self) -> Path:
        return self.root / "users"

    def user_dir(self, name: str) -> Path:
        return self.users_dir / check_user_name(name)

    def keystore_path(self, name: str) -> Path:
        return self.user_dir(name) / "keystore.json"

    def recipient_path(self, name: str) -> Path:
        return self.user_dir(name) / "recipient.json"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.root / p

    def camera_config(self) -> CameraConfig:
        return load_config(self.camera_config_path, CameraConfig)

    def store_config(self) -> StoreConfig:
        return load_config(self.store_config_path, StoreConfig)

    def viewer_config(self) -> ViewerConfig:
        return load_config(self.viewer_config_path, ViewerConfig)

    def archive_dir(self) -> Path:
        return self.resolve(self.store_config().archive.path)

    def ca(self) -> CertificateAuthority:
        return CertificateAuthority.load(self.ca_cert_path, self.crl_path)

    def ca_key(self) -> Ed25519PrivateKey:
        if not self.ca_key_path.exists():
            raise IdentityError(
                f"the admin (CA) key {self.ca_key_path} is not on this machine; "
                "run this command where the deployment was initialised"
            )
        return load_private_key(self.ca_key_path, Ed25519PrivateKey)

    def node_identities(
        self,
        role: str,
        ca: CertificateAuthority | None = None,
        refused: dict[str, VerificationError] | None = None,
    ) -> list[NodeIdentity]:
        """Every certificate of ``role`` that verifies now; the others are logged, skipped,
        and put in ``refused`` (by name) when given."""
        ca = ca or self.ca()
        found = []
        for path in sorted(self.certs_dir.glob(f"{role}-*.crt")):
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
        self, ca: CertificateAuthority | None = None, history: bool = False
    ) -> TrustedCameras:
        """Cameras whose certificate verifies now; with ``history``, also their earlier
        (replaced or expired, but not revoked) certificates, each valid for its own period:
        what an audit of old frames needs."""
        ca = ca or self.ca()
        refused: dict[str, VerificationError] = {}
        cameras = self.node_identities("camera", ca, refused)
        if history:
            for path in sorted(self.cert_archive_dir.glob("camera-*.crt")) + sorted(
                self.certs_dir.glob("camera-*.crt")
            ):
                cert = load_cert(path)
                try:  # chain, revocation and role; the period is judged per frame
                    cameras.append(ca.verify_node(cert, "camera", at=cert.not_valid_before_utc))
                except VerificationError as exc:
                    log.warning("not trusting %s: %s", path.name, exc)
        return TrustedCameras.from_identities(cameras, refused)

    @property
    def cert_archive_dir(self) -> Path:
        return self.certs_dir / "archive"

    def identity_stamp(self) -> tuple:
        """Changes whenever a certificate or the CRL changes (nodes poll it to reload)."""
        paths = [self.crl_path, self.ca_cert_path, *sorted(self.certs_dir.glob("*.crt"))]
        return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in paths if p.exists())

    def store_identity(self, ca: CertificateAuthority | None = None) -> NodeIdentity:
        """The store's verified certificate: clients pin its transport key."""
        ca = ca or self.ca()
        try:
            return ca.verify_node(load_cert(self.cert_path("store", "store")), "store")
        except VerificationError as exc:
            raise IdentityError(
                f"refusing the store certificate {self.cert_path('store', 'store')}: {exc}"
            ) from None

    def transport_key(self, role: str, name: str) -> X25519PrivateKey:
        return load_private_key(self.transport_key_path(role, name), X25519PrivateKey)

    def account_secret(self) -> bytes:
        """The store's own secret for decoy salts (created on first use, 0600)."""
        path = self.root / "identities" / "store" / "account-secret"
        if not path.exists():
            write_secret(path, os.urandom(32))
        return path.read_bytes()

    def require(self) -> Home:
        if not self.config_dir.is_dir():
            raise ConfigError(
                f"{self.root} is not a veilcam home (no config/ folder); "
                f"create one with 'veilcam init {self.root}'"
            )
        return self


def open_home(path: str | Path) -> Home:
    return Home(Path(path).expanduser().resolve()).require()


def check_user_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= USER_NAME_CHARS or name[0] in ".-":
        raise VeilcamError(f"invalid user name {name!r}: 1-64 letters, digits, '_', '.', '-', '@'")
    return name


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def config_template(role: str) -> string.Template:
    """The commented TOML file `init` writes for ``role`` (config/ROLE.toml in the source tree)."""
    text = importlib.resources.files("veilcam.config").joinpath(f"{role}.toml").read_text()
    return string.Template(text)


def init_home(
    root: Path,
    camera_id: str,
    source: str,
    port_base: int = 7700,
    web_port: int = 7780,
    loop: bool = False,
) -> Home:
    """Create a deployment home with configs, a camera identity and an empty archive."""
    validate_camera_id(camera_id)
    home = Home(Path(root).expanduser().resolve())
    if home.config_dir.exists():
        raise VeilcamError(f"{home.root} already holds a veilcam deployment; choose another folder")
    home.root.mkdir(parents=True, exist_ok=True)
    ingest, relay, query = (f"tcp://127.0.0.1:{port_base + i}" for i in range(3))
    fields = {
        "camera_id": _toml_str(camera_id),
        "source": _toml_str(source),
        "loop": str(loop).lower(),
        "ingest": _toml_str(ingest),
        "relay": _toml_str(relay),
        "query": _toml_str(query),
        "web_port": str(web_port),
    }
    for role, path in (
        ("camera", home.camera_config_path),
        ("store", home.store_config_path),
        ("viewer", home.viewer_config_path),
    ):
        write_atomic(path, config_template(role).substitute(fields).encode())
    ca_key, ca_cert = create_ca()
    save_private_key(home.ca_key_path, ca_key)
    save_cert(home.ca_cert_path, ca_cert)
    save_crl(home.crl_path, build_crl(ca_key, ca_cert, []))
    for role, name in (("camera", camera_id), ("store", "store"), ("viewer", "viewer")):
        issue_identity(home, role, name, ca_key=ca_key, ca_cert=ca_cert)
    for folder in (home.users_dir, home.state_dir, home.grants_dir, home.root / "archive"):
        folder.mkdir(parents=True, exist_ok=True)
    return home


def issue_identity(
    home: Home,
    role: str,
    name: str,
    days: float = 365,
    *,
    ca_key: Ed25519PrivateKey | None = None,
    ca_cert=None,
) -> Path:
    """New signing and transport keys for a node, and its certificate from the CA."""
    ca_key = ca_key or home.ca_key()
    ca_cert = ca_cert or load_cert(home.ca_cert_path)
    old = home.cert_path(role, name)
    if old.exists():  # keep it: frames it signed must stay verifiable
        serial = load_cert(old).serial_number
        home.cert_archive_dir.mkdir(parents=True, exist_ok=True)
        os.replace(old, home.cert_archive_dir / f"{role}-{name}-{serial:x}.crt")
    signing, transport = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    save_private_key(home.signing_key_path(role, name), signing)
    save_private_key(home.transport_key_path(role, name), transport)
    cert = issue_node_cert(
        ca_key, ca_cert, role, name, signing.public_key(), transport.public_key(), days
    )
    save_cert(home.cert_path(role, name), cert)
    return home.cert_path(role, name)


def revoke_identity(home: Home, role: str, name: str) -> int:
    """Put a node's certificate on the CRL; returns its serial number."""
    cert = load_cert(home.cert_path(role, name))
    ca = home.ca()
    crl_serials = sorted(ca.revoked | {cert.serial_number})
    save_crl(home.crl_path, build_crl(home.ca_key(), load_cert(home.ca_cert_path), crl_serials))
    return cert.serial_number
