"""Administration: users, grants and certificates of a deployment (what the CLI's admin
commands do). Runs where the admin (CA) key is."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

from veilcam.common import deployment
from veilcam.common.errors import VeilcamError
from veilcam.common.format import ZoneClass
from veilcam.common.grants import sign_grant, write_grant
from veilcam.common.home import Home
from veilcam.common.keystore import create_keystore, parse_keystore
from veilcam.common.keywrap import key_id_of
from veilcam.common.passwordinput import check_password_strength
from veilcam.common.pki import build_crl, load_cert, save_crl
from veilcam.common.provision import issue_identity
from veilcam.store_node.accounts import AccountStore


def add_user(home: Home, name: str, password: str) -> Path:
    """Create a user: keystore here, account on the store's directory, grants for every camera."""
    if home.keystore_path(name).exists():
        raise VeilcamError(f"user {name!r} already exists in {home.root}")
    check_password_strength(password, name)  # WeakPasswordError says what to change
    ks = create_keystore(home.keystore_path(name), name, password)
    AccountStore.add_account(home, name, ks.login_secret, json.dumps(ks.doc))
    ca_key = deployment.ca_key(home)
    for camera in [c.name for c in deployment.node_identities(home, "camera")]:
        write_grant(
            home.grants_dir,
            name,
            camera,
            sign_grant(
                ca_key, name, camera, ZoneClass.grantable(), ks.public_raw, ks.pq_public_raw
            ),
        )
    return home.keystore_path(name)


def user_public_keys(home: Home, name: str, key_id: str | None = None) -> tuple[bytes, bytes]:
    """The public keys to grant ``name``, checked against what the user said their key is.

    A keystore in this home (made here by 'user add' or 'register') is trusted as it is. A key
    known only from the store's account directory could have been put there by whoever
    registered the name first, or by the store itself: it is used only if ``key_id`` (which
    'veilcam register' shows the user) matches it.
    """
    doc: dict | None
    if home.keystore_path(name).exists():
        doc = parse_keystore(home.keystore_path(name).read_text())
    else:
        doc = AccountStore.keystore_in(home, name)
        if doc is None and key_id is not None:
            return _public_keys_from_store(home, name, key_id)
        if doc is None:
            raise VeilcamError(
                f"no user {name!r} in {home.root}: a grant needs the user's public keys, and "
                f"this home has neither {home.keystore_path(name)} nor an account for them in "
                f"{home.accounts_path}. Create the user here ('veilcam user add'), or have "
                "them run 'veilcam register' and grant with --key-id (the id register "
                "printed): the keys then come from the store, checked against that id"
            )
    public = base64.b64decode(doc["public_key"])
    actual = key_id_of(public).hex()
    if key_id is not None and key_id.lower().replace(":", "") != actual:
        raise VeilcamError(
            f"user {name!r} on the store has key id {actual}, not {key_id}: "
            "do not grant (someone else may have registered this name)"
        )
    if key_id is None and not home.keystore_path(name).exists():
        raise VeilcamError(
            f"user {name!r} is known only from the store's directory: confirm "
            f"their key with --key-id (the user sees it when registering; the "
            f"store says {actual})"
        )
    return public, base64.b64decode(doc["pq_public_key"])


def _public_keys_from_store(home: Home, name: str, key_id: str) -> tuple[bytes, bytes]:
    """Ask the running store (KEYS query, as this home's viewer identity) for the keys ``name``
    registered, answered only if they match ``key_id``; checked again here."""
    from veilcam.common.query import QueryRefused
    from veilcam.common.queryclient import StoreQueryClient

    try:
        wanted = bytes.fromhex(key_id.lower().replace(":", ""))
    except ValueError:
        raise VeilcamError(
            f"--key-id {key_id!r} is not a key id (hex, as register shows it)"
        ) from None
    if len(wanted) != 16:
        raise VeilcamError(f"--key-id {key_id!r} is {len(wanted)} bytes; a key id is 16")
    try:
        client = StoreQueryClient.connect(home, timeout_s=5.0)
    except (VeilcamError, OSError) as exc:
        raise VeilcamError(
            f"user {name!r} is not in this home and the store cannot be asked for their keys "
            f"({exc}): start the store, or grant from a home holding its accounts/ folder"
        ) from None
    try:
        reply = client.keys(name, wanted)
    except QueryRefused:
        raise VeilcamError(
            f"the store has no user {name!r} registered with key id {key_id}: check the id "
            "with the user (do not grant: someone else may have registered this name)"
        ) from None
    except VeilcamError as exc:
        raise VeilcamError(f"could not ask the store for {name!r}'s keys: {exc}") from None
    finally:
        client.close()
    if key_id_of(reply.public_key) != wanted:  # never trust the store's word for it
        raise VeilcamError(f"the store answered a key for {name!r} that is not {key_id}")
    return reply.public_key, reply.pq_public_key


def grant(
    home: Home, name: str, camera: str, classes: list[ZoneClass], key_id: str | None = None
) -> Path:
    _check_known_camera(home, camera)
    public, pq_public = user_public_keys(home, name, key_id)
    return write_grant(
        home.grants_dir,
        name,
        camera,
        sign_grant(deployment.ca_key(home), name, camera, classes, public, pq_public),
    )


def _check_known_camera(home: Home, camera: str) -> None:
    """A grant for a camera the deployment has no certificate for opens nothing (a typo like
    'doorr' must not succeed silently)."""
    from veilcam.common.format import FormatError, validate_camera_id

    try:
        validate_camera_id(camera)
    except FormatError as exc:
        raise VeilcamError(str(exc)) from None
    if not home.cert_path("camera", camera).is_file():
        known = sorted(
            p.name[len("camera-") : -len(".crt")] for p in home.certs_dir.glob("camera-*.crt")
        )
        raise VeilcamError(
            f"camera {camera!r} is not part of this deployment (no "
            f"{home.cert_path('camera', camera)}); known cameras: "
            f"{', '.join(known) or 'none'} ('veilcam cert issue camera:NAME' "
            "adds one)"
        )


def revoke(home: Home, name: str, camera: str) -> Path:
    public, pq_public = _any_public_keys(home, name)
    return write_grant(
        home.grants_dir,
        name,
        camera,
        sign_grant(deployment.ca_key(home), name, camera, [], public, pq_public, revoked=True),
    )


def _any_public_keys(home: Home, name: str) -> tuple[bytes, bytes]:
    """For a revocation, any known key will do: a revocation grants nothing."""
    from veilcam.common.grants import grant_path

    path = grant_path(home.grants_dir, name, "")
    for existing in sorted(home.grants_dir.glob(f"{name}@*.grant.json")) or [path]:
        if existing.exists():
            doc = json.loads(existing.read_text())
            return bytes.fromhex(doc["public_key"]), bytes.fromhex(doc["pq_public_key"])
    raise VeilcamError(f"user {name!r} has no grant in {home.root}: nothing to revoke")


def reseal_keystore(doc: dict, old_password: str, new_password: str) -> dict:
    """The keystore ``doc`` with the same keys sealed under ``new_password`` (a fresh salt).
    Raises KeystoreError if ``old_password`` does not open it, WeakPasswordError if the new
    one breaks the policy. Built on common.keystore's own derivation, AAD and cipher."""
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from veilcam.common.keystore import KdfParams, _aad, _b64, derive_secrets, keystore_kdf, unseal

    identity = unseal(doc, derive_secrets(old_password, keystore_kdf(doc)).sealing_key)
    if new_password == old_password:
        raise VeilcamError("the new password is the same as the old one")
    check_password_strength(new_password, doc["user"])
    if identity.pq_private_key is None:
        raise VeilcamError("the keystore has no post-quantum key: cannot re-seal it")
    secret = (
        identity.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        + identity.pq_private_key.private_bytes_raw()
    )
    kdf = KdfParams(os.urandom(16))
    new = {k: v for k, v in doc.items() if k not in ("nonce", "ciphertext")}
    new["kdf"] = kdf.to_json()
    nonce = os.urandom(12)
    sealing_key = derive_secrets(new_password, kdf).sealing_key
    new["nonce"] = _b64(nonce)
    new["ciphertext"] = _b64(AESGCM(sealing_key).encrypt(nonce, secret, _aad(new)))
    return new


def change_password(home: Home, name: str, old_password: str, new_password: str) -> Path:
    """Re-seal ``name``'s keystore in this home under a new password (same keys, so every
    grant and every archived epoch stays open to them). The store's account is not changed:
    the store has no query for it yet (docs/GUIDE.md, 'Users')."""
    from veilcam.common.secretfiles import write_secret

    path = home.keystore_path(name)
    if not path.exists():
        raise VeilcamError(f"no keystore of user {name!r} in {home.root} ({path})")
    doc = parse_keystore(path.read_text("utf-8"), f"keystore {path}")
    new = reseal_keystore(doc, old_password, new_password)
    write_secret(path, (json.dumps(new, indent=2) + "\n").encode("utf-8"))
    return path


def check_node_name(role: str, name: str) -> None:
    """A node name follows the camera-id rules (it is a camera id, a certificate CN and part
    of file names): 1-64 of [A-Za-z0-9_.-], starting with a letter or digit."""
    from veilcam.common.format import CAMERA_ID_RE

    if not isinstance(name, str) or not CAMERA_ID_RE.fullmatch(name):
        raise VeilcamError(
            f"invalid {role} name {name!r}: 1-64 characters of letters, digits, "
            "'_', '.', '-', starting with a letter or digit"
        )


def _write_crl(home: Home, revoked: set[int], superseded: dict[int, dt.datetime]) -> None:
    save_crl(
        home.crl_path,
        build_crl(
            deployment.ca_key(home), load_cert(home.ca_cert_path), sorted(revoked), superseded
        ),
    )


def reissue_identity(home: Home, role: str, name: str, days: float = 365) -> Path:
    """New keys and certificate for a node. A certificate it replaces is kept (frames it
    signed stay verifiable) but its validity ends now: the CRL lists its serial as
    ``superseded`` with this time as invalidity date, so ``veilcam verify`` accepts the old
    key only for frames captured before the re-issue."""
    check_node_name(role, name)
    deployment.ca_key(home)  # fail before anything changes if the admin key is not here
    old = home.cert_path(role, name)
    old_serial = load_cert(old).serial_number if old.exists() else None
    ca = deployment.load_ca(home)
    path = issue_identity(home, role, name, days)
    if old_serial is not None:
        superseded = dict(ca.superseded)
        # the CRL holds whole seconds; the store takes up to a second to reload
        # certificates, and archives what the old key signed meanwhile: 2 s of grace
        end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
        superseded.setdefault(old_serial, end)
        _write_crl(home, set(ca.revoked), superseded)
    return path


def revoke_node(home: Home, role: str, name: str) -> int:
    """Put a node's current certificate on the CRL (every use refused, also of what it signed
    before); keeps the other entries, with their re-issue dates. Returns its serial."""
    check_node_name(role, name)
    cert = load_cert(home.cert_path(role, name))
    ca = deployment.load_ca(home)
    superseded = {s: at for s, at in ca.superseded.items() if s != cert.serial_number}
    _write_crl(home, set(ca.revoked) | {cert.serial_number}, superseded)
    return cert.serial_number
