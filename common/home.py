"""The deployment home: one folder holding configs, identities, users, archive and state.

    HOME/config/{camera,store,viewer}.toml
    HOME/identities/camera/<camera_id>.key.pem   camera signing key (0600; camera machine only)
    HOME/identities/cameras/<camera_id>.pub.pem  trusted camera public keys (store, viewers)
    HOME/identities/store/store.key.pem          store identity key (0600; store machine only)
    HOME/users/<name>/keystore.json              user's sealed private key (0600; user only)
    HOME/users/<name>/recipient.json             user's public key and grants (cameras read it)
    HOME/archive/                                segments and index (store machine only)
    HOME/state/                                  camera chain state

On one machine (the demo) all of it lives together; on several, each machine keeps only the
parts named for it (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from common.config import CameraConfig, StoreConfig, ViewerConfig, load_config
from common.errors import ConfigError, VeilcamError
from common.format import ZoneClass, validate_camera_id
from common.keystore import create_keystore
from common.keywrap import Grant, Recipient
from common.secretfiles import write_atomic
from common.signing import TrustedCameras, generate_signing_key, save_public_key, save_signing_key

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
    def trusted_cameras_dir(self) -> Path:
        return self.root / "identities" / "cameras"

    def camera_key_path(self, camera_id: str) -> Path:
        return self.root / "identities" / "camera" / f"{camera_id}.key.pem"

    @property
    def store_key_path(self) -> Path:
        return self.root / "identities" / "store" / "store.key.pem"

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

    def trusted_cameras(self) -> TrustedCameras:
        return TrustedCameras.from_dir(self.trusted_cameras_dir)

    def require(self) -> Home:
        if not self.config_dir.is_dir():
            raise ConfigError(f"{self.root} is not a veilcam home (no config/ folder); "
                              f"create one with 'veilcam init {self.root}'")
        return self


def open_home(path: str | Path) -> Home:
    return Home(Path(path).expanduser().resolve()).require()


def check_user_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= USER_NAME_CHARS or name[0] in ".-":
        raise VeilcamError(f"invalid user name {name!r}: 1-64 letters, digits, '_', '.', '-', '@'")
    return name


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def init_home(root: Path, camera_id: str, source: str, port_base: int = 7700,
              web_port: int = 7780, loop: bool = False) -> Home:
    """Create a deployment home with configs, a camera identity and an empty archive."""
    validate_camera_id(camera_id)
    home = Home(Path(root).expanduser().resolve())
    if home.config_dir.exists():
        raise VeilcamError(f"{home.root} already holds a veilcam deployment; choose another folder")
    home.root.mkdir(parents=True, exist_ok=True)
    ingest, relay, query = (f"tcp://127.0.0.1:{port_base + i}" for i in range(3))
    write_atomic(home.camera_config_path, f"""# veilcam camera node. Reference: docs/CONFIG.md
[camera]
id = {_toml_str(camera_id)}
source = {_toml_str(source)}
loop = {str(loop).lower()}

[store]
ingest = "{ingest}"

[redaction]
style = "pixelate"

[faces]
enabled = true
backend = "auto"

# Static zones: rectangles in pixels, or fractions of the frame.
# [[zones]]
# name = "neighbour window"
# rect = [0.75, 0.0, 0.25, 0.3]
# units = "fraction"
""".encode())
    write_atomic(home.store_config_path, f"""# veilcam store node. Reference: docs/CONFIG.md
[store]
ingest_bind = "{ingest}"
relay_bind = "{relay}"
query_bind = "{query}"

[archive]
path = "archive"
""".encode())
    write_atomic(home.viewer_config_path, f"""# veilcam viewer. Reference: docs/CONFIG.md
[viewer]
relay = "{relay}"
query = "{query}"
web_host = "127.0.0.1"
web_port = {web_port}
""".encode())
    camera_key = generate_signing_key()
    save_signing_key(home.camera_key_path(camera_id), camera_key)
    save_public_key(home.trusted_cameras_dir / f"{camera_id}.pub.pem", camera_key.public_key())
    save_signing_key(home.store_key_path, generate_signing_key())
    for folder in (home.users_dir, home.state_dir, home.root / "archive"):
        folder.mkdir(parents=True, exist_ok=True)
    return home


def add_user(home: Home, name: str, password: str) -> Path:
    """Create a user's keystore and grant them every zone class of every camera of the home."""
    if home.keystore_path(name).exists():
        raise VeilcamError(f"user {name!r} already exists in {home.root}")
    public_raw = create_keystore(home.keystore_path(name), name, password)
    cameras = home.trusted_cameras().camera_ids
    doc = {"user": name, "public_key": public_raw.hex(),
           "grants": [{"camera": cam, "classes": [c.label for c in ZoneClass]} for cam in cameras]}
    write_atomic(home.recipient_path(name), (json.dumps(doc, indent=2) + "\n").encode())
    return home.keystore_path(name)


def load_grants(home: Home, camera_id: str) -> list[Grant]:
    """Every user granted something on ``camera_id``, read fresh (cameras call it per epoch)."""
    grants = []
    for path in sorted(home.users_dir.glob("*/recipient.json")):
        try:
            doc = json.loads(path.read_text("utf-8"))
            recipient = Recipient.from_raw(doc["user"], bytes.fromhex(doc["public_key"]))
            for g in doc.get("grants", []):
                if g["camera"] == camera_id:
                    classes = frozenset(ZoneClass.from_label(c) for c in g["classes"])
                    grants.append(Grant(recipient, classes))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: unreadable recipient file: {exc}") from None
    return grants
