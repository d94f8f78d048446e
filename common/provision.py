"""Creating a deployment: `veilcam init` (configs from config/*.toml, the CA, first identities)
and issuing node identities from the CA (admin machine only)."""

from __future__ import annotations

import importlib.resources
import json
import os
import string
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from veilcam.common.deployment import ca_key as load_ca_key
from veilcam.common.errors import VeilcamError
from veilcam.common.format import validate_camera_id
from veilcam.common.home import Home
from veilcam.common.pki import (
    build_crl,
    create_ca,
    issue_node_cert,
    load_cert,
    save_cert,
    save_crl,
    save_private_key,
)
from veilcam.common.secretfiles import write_atomic


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
    ca_key = ca_key or load_ca_key(home)
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
