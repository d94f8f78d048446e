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
from common.keywrap import key_id_of
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
                    sign_grant(ca_key, name, camera, ZoneClass.grantable(), ks.public_raw,
                               ks.pq_public_raw))
    return home.keystore_path(name)


def user_public_keys(home: Home, name: str, key_id: str | None = None) -> tuple[bytes, bytes]:
    """The public keys to grant ``name``, checked against what the user said their key is.

    A keystore in this home (made here by 'user add' or 'register') is trusted as it is. A key
    known only from the store's account directory could have been put there by whoever
    registered the name first, or by the store itself: it is used only if ``key_id`` (which
    'veilcam register' shows the user) matches it.
    """
    if home.keystore_path(name).exists():
        doc = parse_keystore(home.keystore_path(name).read_text())
    else:
        doc = None
        if home.accounts_path.exists():
            accounts = AccountStore(home.accounts_path, home.account_secret())
            try:
                doc = accounts.keystore(name)
            finally:
                accounts.close()
        if doc is None:
            raise VeilcamError(f"no user {name!r} in {home.root} (register them first)")
    public = base64.b64decode(doc["public_key"])
    actual = key_id_of(public).hex()
    if key_id is not None and key_id.lower().replace(":", "") != actual:
        raise VeilcamError(f"user {name!r} on the store has key id {actual}, not {key_id}: "
                           "do not grant (someone else may have registered this name)")
    if key_id is None and not home.keystore_path(name).exists():
        raise VeilcamError(f"user {name!r} is known only from the store's directory: confirm "
                           f"their key with --key-id (the user sees it when registering; the "
                           f"store says {actual})")
    return public, base64.b64decode(doc["pq_public_key"])


def grant(home: Home, name: str, camera: str, classes: list[ZoneClass],
          key_id: str | None = None) -> Path:
    public, pq_public = user_public_keys(home, name, key_id)
    return write_grant(home.grants_dir, name, camera,
                       sign_grant(home.ca_key(), name, camera, classes, public, pq_public))


def revoke(home: Home, name: str, camera: str) -> Path:
    public, pq_public = _any_public_keys(home, name)
    return write_grant(home.grants_dir, name, camera,
                       sign_grant(home.ca_key(), name, camera, [], public, pq_public,
                                  revoked=True))


def _any_public_keys(home: Home, name: str) -> tuple[bytes, bytes]:
    """For a revocation, any known key will do: a revocation grants nothing."""
    from common.grants import grant_path

    path = grant_path(home.grants_dir, name, "")
    for existing in sorted(home.grants_dir.glob(f"{name}@*.grant.json")) or [path]:
        if existing.exists():
            doc = json.loads(existing.read_text())
            return bytes.fromhex(doc["public_key"]), bytes.fromhex(doc["pq_public_key"])
    raise VeilcamError(f"user {name!r} has no grant in {home.root}: nothing to revoke")
