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

import logging
from dataclasses import dataclass
from pathlib import Path

from veilcam.common.errors import ConfigError, VeilcamError

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

    @property
    def cert_archive_dir(self) -> Path:
        return self.certs_dir / "archive"

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
