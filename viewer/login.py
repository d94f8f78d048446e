"""Talking to the store as a viewer: log-in, registration and password change (through
``common.queryclient``; ``StoreLink`` is re-exported from there).

Log-in, done right (the seed's flow without its flaw): the client asks the store for the KDF
salt of the user's keystore, runs scrypt locally, sends only the *login secret*, and gets back
the sealed keystore, which it opens locally with the *sealing key*. The password and the
sealing key never leave this process (common.keystore).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from veilcam.common.errors import KeystoreError, VeilcamError
from veilcam.common.home import Home, check_user_name
from veilcam.common.keystore import (
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    KdfParams,
    NewKeystore,
    derive_secrets,
    keystore_kdf,
    new_keystore,
    parse_keystore,
    unseal,
)
from veilcam.common.keywrap import Identity
from veilcam.common.query import QueryError, QueryRefused
from veilcam.common.queryclient import StoreLink, StoreQueryClient  # noqa: F401 (StoreLink: re-export)
from veilcam.common.secretfiles import write_secret

LOGIN_FAILED = "wrong user name or password"


def _error(exc: QueryRefused) -> str:
    return exc.reason or "no reason given"


SALT_CACHE = "login-kdf.json"  # in the viewer home's state folder, 0600
MAX_SCRYPT_MEMORY = (
    8 * SCRYPT_N * SCRYPT_R * 128
)  # scrypt needs n·r·128 bytes: 8x the default, at most


def check_kdf_floor(kdf: KdfParams, where: str = "the store") -> KdfParams:
    """Refuse scrypt parameters below the defaults (or absurdly above them) before any
    password goes into them: the store chooses what it answers to SALT, and a cheap KDF makes
    the login secret it then receives cheap to guess from."""
    if kdf.n < SCRYPT_N or kdf.r < SCRYPT_R or kdf.p < SCRYPT_P or len(kdf.salt) < 16:
        raise KeystoreError(
            f"{where} asks for scrypt parameters below the minimum (n={kdf.n}, "
            f"r={kdf.r}, p={kdf.p}, {len(kdf.salt)}-byte salt; at least "
            f"n={SCRYPT_N}, r={SCRYPT_R}, p={SCRYPT_P}, 16 bytes): refusing to "
            "log in (a store that weakens the KDF is not to be trusted)"
        )
    if kdf.n * kdf.r * 128 > MAX_SCRYPT_MEMORY or kdf.p > 4:
        raise KeystoreError(
            f"{where} asks for an unreasonable scrypt cost (n={kdf.n}, "
            f"r={kdf.r}, p={kdf.p}): refusing to log in"
        )
    return kdf


def _cache_path(home: Home) -> Path:
    return home.state_dir / SALT_CACHE


def _cached_kdfs(home: Home) -> dict:
    try:
        doc = json.loads(_cache_path(home).read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise KeystoreError(
            f"the login salt cache {_cache_path(home)} is unreadable ({exc}); "
            "remove it only if you trust the store"
        ) from None
    return doc if isinstance(doc, dict) else {}


def remember_kdf(home: Home, user: str, kdf: KdfParams) -> None:
    """Pin ``user``'s KDF parameters and salt (trust on first use), owner-only."""
    cache = _cached_kdfs(home)
    if cache.get(user) == kdf.to_json():
        return
    cache[user] = kdf.to_json()
    write_secret(_cache_path(home), (json.dumps(cache, indent=2, sort_keys=True) + "\n").encode())


def expected_kdf(home: Home, user: str) -> tuple[KdfParams | None, str]:
    """What the store must answer to SALT for ``user``: the local keystore's parameters when
    it exists, else the ones pinned at the first successful log-in; (None, "") if neither."""
    path = home.keystore_path(user)
    if path.exists():
        doc = parse_keystore(path.read_text("utf-8"), f"keystore {path}")
        return keystore_kdf(doc), f"your keystore {path}"
    cached = _cached_kdfs(home).get(user)
    if cached is not None:
        try:
            return KdfParams.from_json(cached), f"the first log-in ({_cache_path(home)})"
        except (KeystoreError, KeyError, TypeError, ValueError):
            raise KeystoreError(
                f"the login salt cache {_cache_path(home)} has a bad entry for {user!r}"
            ) from None
    return None, ""


@dataclass(frozen=True)
class FetchedKeystore:
    """A user's sealed keystore as the store returned it, with what opened it."""

    doc: dict
    kdf: KdfParams
    login_secret: bytes
    sealing_key: bytes


def _salt(client: StoreQueryClient, home: Home, user: str) -> KdfParams:
    """The store's SALT answer for ``user``, checked before any password goes into it: at
    least the default cost, and the same parameters and salt as the local keystore or,
    without one, as the first successful log-in from this home (``state/login-kdf.json``)."""
    expected, source = expected_kdf(home, user)
    try:
        kdf = client.salt(user).kdf
    except QueryRefused as exc:
        raise KeystoreError(_error(exc)) from None
    except QueryError:
        raise KeystoreError("the store's answer to SALT is malformed") from None
    check_kdf_floor(kdf)
    if expected is not None and kdf != expected:
        raise KeystoreError(
            f"the store answers KDF parameters or a salt for {user!r} that "
            f"differ from {source}: refusing to send a login secret "
            "derived from them (a store choosing the salt can make "
            "guessing the password cheaper). If the password was changed elsewhere "
            "('veilcam user passwd'), copy the new keystore.json here, or remove the "
            f"{user!r} entry from state/login-kdf.json when this home has no keystore"
        )
    return kdf


def fetch_keystore(
    home: Home, user: str, password: str, client: StoreQueryClient | None = None
) -> FetchedKeystore:
    """Log in against the store (SALT, then LOGIN with the login secret) and return the
    sealed keystore it answers, checked to be this user's (not yet opened)."""
    check_user_name(user)
    own = client is None
    client = client or StoreQueryClient.connect(home)
    try:
        kdf = _salt(client, home, user)
        secrets = derive_secrets(password, kdf)
        try:
            keystore_json = client.login(user, secrets.login_secret).keystore_json
        except QueryRefused as exc:
            raise KeystoreError(_error(exc)) from None
        except QueryError as exc:
            raise KeystoreError(f"the store's answer to LOGIN is malformed: {exc}") from None
    finally:
        if own:
            client.close()
    doc = parse_keystore(keystore_json, f"keystore of {user!r} from the store")
    if doc["user"] != user or keystore_kdf(doc) != kdf:
        raise KeystoreError("the store returned a keystore that is not this user's")
    return FetchedKeystore(doc, kdf, secrets.login_secret, secrets.sealing_key)


def login(home: Home, user: str, password: str) -> Identity:
    """Log in against the store and open the returned keystore locally.

    The store's KDF answer is checked before the password is used: at least the default
    cost, and the same parameters and salt as the local keystore or, without one, as the
    first successful log-in from this home (pinned in ``state/login-kdf.json``)."""
    fetched = fetch_keystore(home, user, password)
    identity = unseal(fetched.doc, fetched.sealing_key)
    remember_kdf(home, user, fetched.kdf)  # only once the password opened the keystore
    return identity


def register(home: Home, user: str, password: str) -> NewKeystore:
    """Create the user's keys here, register the account on the store, keep a local copy."""
    check_user_name(user)
    ks = new_keystore(user, password)  # checks the password policy first
    client = StoreQueryClient.connect(home)
    try:
        client.register(user, ks.login_secret, json.dumps(ks.doc))
    except QueryRefused as exc:
        raise VeilcamError(f"registration refused: {_error(exc)}") from None
    finally:
        client.close()
    if not home.keystore_path(user).exists():
        write_secret(home.keystore_path(user), ks.to_bytes())
    remember_kdf(home, user, keystore_kdf(ks.doc))
    return ks


def change_password_on_store(
    home: Home, user: str, old_password: str, new_password: str, new_doc: dict
) -> None:
    """Change ``user``'s password on the store (PASSWD): authenticated by the login secret
    of ``old_password`` (after the same SALT checks as a log-in), it replaces the store's
    login verifier with the one of ``new_password`` and its keystore with ``new_doc`` (the
    same keys re-sealed under ``new_password``). On success the new salt is pinned for
    log-ins from this home. Raises KeystoreError if the store refuses, VeilcamError (or
    TransportError) if it does not answer."""
    check_user_name(user)
    new_kdf = keystore_kdf(new_doc)
    client = StoreQueryClient.connect(home)
    try:
        old_secret = derive_secrets(old_password, _salt(client, home, user)).login_secret
        new_secret = derive_secrets(new_password, new_kdf).login_secret
        try:
            client.passwd(user, old_secret, new_secret, json.dumps(new_doc))
        except QueryRefused as exc:
            raise KeystoreError(f"the store refused the password change: {_error(exc)}") from None
    finally:
        client.close()
    remember_kdf(home, user, new_kdf)
