"""Talking to the store as a viewer: an authenticated CurveZMQ link, log-in and registration.

Log-in, done right (the seed's flow without its flaw): the client asks the store for the KDF
salt of the user's keystore, runs scrypt locally, sends only the *login secret*, and gets back
the sealed keystore, which it opens locally with the *sealing key*. The password and the
sealing key never leave this process (common.keystore).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import zmq
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
from veilcam.common.secretfiles import write_secret
from veilcam.common.transport import HandshakeWatch, curve_pair, make_client

LOGIN_FAILED = "wrong user name or password"


class StoreLink:
    """A CURVE client socket to one of the store's endpoints, checked on every handshake."""

    def __init__(
        self,
        home: Home,
        endpoint: str,
        sock_type: int = zmq.DEALER,
        keys: tuple[bytes, bytes] | None = None,
    ) -> None:
        """``keys``: this node's CURVE pair (default: the viewer's, from viewer.toml)."""
        ca = home.ca()
        if keys is None:
            keys = curve_pair(home.transport_key("viewer", home.viewer_config().viewer.identity))
        self.endpoint = endpoint
        self.sock = zmq.Context.instance().socket(sock_type)
        self.sock.setsockopt(zmq.LINGER, 0)
        make_client(self.sock, keys, home.store_identity(ca).transport_key)
        self.watch = HandshakeWatch(self.sock, "store", endpoint)
        self.sock.connect(endpoint)

    def request(self, parts: list[bytes], timeout_s: float = 10.0) -> list[bytes]:
        self.sock.send_multipart(parts)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.watch.check()
            if self.sock.poll(100):
                return self.sock.recv_multipart()
        raise VeilcamError(f"the store at {self.endpoint} did not answer within {timeout_s:.0f} s")

    def close(self) -> None:
        self.watch.close()
        self.sock.close(linger=0)


def _error(reply: list[bytes]) -> str:
    return reply[1].decode(errors="replace") if len(reply) > 1 else "no reason given"


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


def login(home: Home, user: str, password: str) -> Identity:
    """Log in against the store and open the returned keystore locally.

    The store's KDF answer is checked before the password is used: at least the default
    cost, and the same parameters and salt as the local keystore or, without one, as the
    first successful log-in from this home (pinned in ``state/login-kdf.json``)."""
    check_user_name(user)
    expected, source = expected_kdf(home, user)
    link = StoreLink(home, home.viewer_config().viewer.query)
    try:
        reply = link.request([b"SALT", user.encode()])
        if reply[0] != b"OK":
            raise KeystoreError(_error(reply))
        try:
            kdf = KdfParams.from_json(json.loads(reply[1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise KeystoreError("the store's answer to SALT is malformed") from None
        check_kdf_floor(kdf)
        if expected is not None and kdf != expected:
            raise KeystoreError(
                f"the store answers KDF parameters or a salt for {user!r} that "
                f"differ from {source}: refusing to send a login secret "
                "derived from them (a store choosing the salt can make "
                "guessing the password cheaper)"
            )
        secrets = derive_secrets(password, kdf)
        reply = link.request([b"LOGIN", user.encode(), secrets.login_secret])
    finally:
        link.close()
    if reply[0] != b"OK":
        raise KeystoreError(_error(reply))
    doc = parse_keystore(reply[1].decode(), f"keystore of {user!r} from the store")
    if doc["user"] != user or keystore_kdf(doc) != kdf:
        raise KeystoreError("the store returned a keystore that is not this user's")
    identity = unseal(doc, secrets.sealing_key)
    remember_kdf(home, user, kdf)  # only once the password opened the keystore
    return identity


def register(home: Home, user: str, password: str) -> NewKeystore:
    """Create the user's keys here, register the account on the store, keep a local copy."""
    check_user_name(user)
    ks = new_keystore(user, password)  # checks the password policy first
    link = StoreLink(home, home.viewer_config().viewer.query)
    try:
        reply = link.request(
            [b"REGISTER", user.encode(), ks.login_secret, json.dumps(ks.doc).encode()]
        )
    finally:
        link.close()
    if reply[0] != b"OK":
        raise VeilcamError(f"registration refused: {_error(reply)}")
    if not home.keystore_path(user).exists():
        write_secret(home.keystore_path(user), ks.to_bytes())
    remember_kdf(home, user, keystore_kdf(ks.doc))
    return ks
