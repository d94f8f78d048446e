"""Administration: users, grants and certificates of a deployment (what the CLI's admin
commands do). Runs where the admin (CA) key is."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from common.errors import VeilcamError
from common.format import ZoneClass
from common.grants import sign_grant, write_grant
from common.home import Home
from common.keystore import create_keystore, parse_keystore
from store_node.accounts import AccountStore


def add_user(home: Home, name: str, password: str) -> Path:
    """Create a user: keystore here, account on the store's directory, grants for every camera."""
    if home.keystore_path(name).exists():
        raise VeilcamError(f"user {name!r} already exists in {home.root}")
    ks = create_keystore(home.keystore_path(name), name, password)
    accounts = AccountStore(home.accounts_path, home.account_secret())
    try:
        accounts.register(name, ks.login_secret, json.dumps(ks.doc))
    finally:
        accounts.close()
    ca_key = home.ca_key()
    for camera in [c.name for c in home.node_identities("camera")]:
        write_grant(home.grants_dir, name, camera,
                    sign_grant(ca_key, name, camera, list(ZoneClass), ks.public_raw,
                               ks.pq_public_raw))
    return home.keystore_path(name)


def user_public_keys(home: Home, name: str) -> tuple[bytes, bytes]:
    """A user's public keys, from the store's account directory or their local keystore."""
    doc = None
    if home.accounts_path.exists():
        accounts = AccountStore(home.accounts_path, home.account_secret())
        try:
            doc = accounts.keystore(name)
        finally:
            accounts.close()
    if doc is None and home.keystore_path(name).exists():
        doc = parse_keystore(home.keystore_path(name).read_text())
    if doc is None:
        raise VeilcamError(f"no user {name!r} in {home.root} (register them first)")
    return base64.b64decode(doc["public_key"]), base64.b64decode(doc["pq_public_key"])


def grant(home: Home, name: str, camera: str, classes: list[ZoneClass]) -> Path:
    public, pq_public = user_public_keys(home, name)
    return write_grant(home.grants_dir, name, camera,
                       sign_grant(home.ca_key(), name, camera, classes, public, pq_public))


def revoke(home: Home, name: str, camera: str) -> Path:
    public, pq_public = user_public_keys(home, name)
    return write_grant(home.grants_dir, name, camera,
                       sign_grant(home.ca_key(), name, camera, [], public, pq_public,
                                  revoked=True))
