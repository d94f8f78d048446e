"""Talking to the store as a viewer: an authenticated CurveZMQ link, log-in and registration.

Log-in, done right (the seed's flow without its flaw): the client asks the store for the KDF
salt of the user's keystore, runs scrypt locally, sends only the *login secret*, and gets back
the sealed keystore, which it opens locally with the *sealing key*. The password and the
sealing key never leave this process (common.keystore).
"""

from __future__ import annotations

import json
import time

import zmq

from common.errors import KeystoreError, VeilcamError
from common.home import Home, check_user_name
from common.keystore import (
    KdfParams,
    NewKeystore,
    derive_secrets,
    keystore_kdf,
    new_keystore,
    parse_keystore,
    unseal,
)
from common.keywrap import Identity
from common.secretfiles import write_secret
from common.transport import HandshakeWatch, curve_pair, make_client

LOGIN_FAILED = "wrong user name or password"


class StoreLink:
    """A CURVE client socket to one of the store's endpoints, checked on every handshake."""

    def __init__(self, home: Home, endpoint: str, sock_type: int = zmq.DEALER,
                 keys: tuple[bytes, bytes] | None = None) -> None:
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


def login(home: Home, user: str, password: str) -> Identity:
    """Log in against the store and open the returned keystore locally."""
    check_user_name(user)
    link = StoreLink(home, home.viewer_config().viewer.query)
    try:
        reply = link.request([b"SALT", user.encode()])
        if reply[0] != b"OK":
            raise KeystoreError(_error(reply))
        kdf = KdfParams.from_json(json.loads(reply[1]))
        secrets = derive_secrets(password, kdf)
        reply = link.request([b"LOGIN", user.encode(), secrets.login_secret])
    finally:
        link.close()
    if reply[0] != b"OK":
        raise KeystoreError(_error(reply))
    doc = parse_keystore(reply[1].decode(), f"keystore of {user!r} from the store")
    if doc["user"] != user or keystore_kdf(doc) != kdf:
        raise KeystoreError("the store returned a keystore that is not this user's")
    return unseal(doc, secrets.sealing_key)


def register(home: Home, user: str, password: str) -> NewKeystore:
    """Create the user's keys here, register the account on the store, keep a local copy."""
    check_user_name(user)
    ks = new_keystore(user, password)  # checks the password policy first
    link = StoreLink(home, home.viewer_config().viewer.query)
    try:
        reply = link.request([b"REGISTER", user.encode(), ks.login_secret,
                              json.dumps(ks.doc).encode()])
    finally:
        link.close()
    if reply[0] != b"OK":
        raise VeilcamError(f"registration refused: {_error(reply)}")
    if not home.keystore_path(user).exists():
        write_secret(home.keystore_path(user), ks.to_bytes())
    return ks
