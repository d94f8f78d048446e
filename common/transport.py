"""CurveZMQ on every socket, with a ZAP allowlist built from verified certificates.

Servers (the store) authenticate clients through ZAP: a client's CURVE public key must be
the transport key of a certificate that verifies (common.pki), for a role the socket accepts.
Clients (cameras, viewers) pin the server's CURVE key from the store certificate, so talking
to anything else fails the handshake. ``HandshakeWatch`` turns the socket monitor's handshake
events into a clear error instead of a silent retry loop.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import zmq
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from veilcam.common.errors import TransportError
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message


def z85_public(raw: bytes) -> bytes:
    return z85.encode(raw)


def curve_pair(private: X25519PrivateKey) -> tuple[bytes, bytes]:
    """(public, secret) in the Z85 form libzmq wants."""
    secret = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return z85.encode(public), z85.encode(secret)


class Allowlist:
    """ZAP credentials provider: per ZAP domain, which client keys may connect, as whom."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_domain: dict[str, dict[bytes, str]] = {}

    def set(self, domain: str, keys: dict[bytes, str]) -> None:
        """Replace the keys of a domain: z85 public key -> label ("camera:door")."""
        with self._lock:
            self._by_domain[domain] = dict(keys)

    def callback(self, domain: str, key: bytes) -> bool:
        with self._lock:
            return key in self._by_domain.get(domain, {})

    def label(self, key: bytes) -> str:
        with self._lock:
            for keys in self._by_domain.values():
                if key in keys:
                    return keys[key]
        return ""


class CurveAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP thread, with User-Id set to the certificate's "role:name"."""

    DOMAINS = ("ingest", "relay", "query")

    def __init__(self, ctx: zmq.Context, allowlist: Allowlist) -> None:
        super().__init__(ctx)
        self.allowlist = allowlist

    def start(self) -> None:
        super().start()
        for domain in self.DOMAINS:
            self.configure_curve_callback(domain, self.allowlist)

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.allowlist.label(z85.encode(client_public_key)) or "unknown"


@dataclass
class Received:
    """One multipart message as ``recv_capped`` got it."""

    frames: list[zmq.Frame]  # every part; only the first when ``oversized``
    oversized: bool
    parts: int
    size: int
    last: zmq.Frame  # the last part received (its connection metadata: User-Id...)


def recv_capped(sock: zmq.Socket, max_parts: int, max_bytes: int, flags: int = 0) -> Received:
    """Receive one multipart message part by part (zero-copy), keeping at most ``max_parts``
    parts and ``max_bytes`` bytes: ZeroMQ's MAXMSGSIZE limits each part, not their number, so
    ``recv_multipart`` would copy any number of them. A message above either cap is received
    to its end (the next message must start clean) but nothing beyond the first part is kept;
    the caller counts it as rejected. Raises zmq.Again like ``recv`` with NOBLOCK."""
    frame = sock.recv(flags, copy=False)
    frames = [frame]
    parts, size = 1, len(frame)
    oversized = parts > max_parts or size > max_bytes
    while frame.more:
        frame = sock.recv(copy=False)
        parts += 1
        size += len(frame)
        if not oversized and (parts > max_parts or size > max_bytes):
            oversized = True
            del frames[1:]  # release what was kept: libzmq frees each part once dropped
        if not oversized:
            frames.append(frame)
    return Received(frames, oversized, parts, size, frame)


def make_server(sock: zmq.Socket, keys: tuple[bytes, bytes], domain: str) -> None:
    sock.curve_server = True
    sock.curve_publickey, sock.curve_secretkey = keys
    sock.zap_domain = domain.encode()


def make_client(sock: zmq.Socket, keys: tuple[bytes, bytes], server_public_raw: bytes) -> None:
    sock.curve_publickey, sock.curve_secretkey = keys
    sock.curve_serverkey = z85.encode(server_public_raw)


class HandshakeWatch:
    """Watches a client socket's handshakes; ``check()`` raises on a failed one."""

    TOLERATED_AFTER_SUCCESS = 5
    EVENTS = (
        zmq.EVENT_HANDSHAKE_SUCCEEDED
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_DISCONNECTED
    )

    def __init__(self, sock: zmq.Socket, peer: str, endpoint: str, tolerant: bool = False) -> None:
        """``tolerant``: this peer was authenticated before (on an earlier socket), so a few
        failed handshakes are taken for a peer restarting, not an impostor."""
        self.monitor = sock.get_monitor_socket(
            self.EVENTS, addr=f"inproc://handshake-{os.urandom(6).hex()}"
        )
        self.peer, self.endpoint = peer, endpoint
        self.succeeded = False
        self.connected = False
        self.failures = 0  # failed handshakes since the last good one
        self.tolerant = tolerant

    def check(self, timeout_ms: int = 0) -> bool:
        """Process pending events; True once a handshake succeeded. Raises on failure."""
        while self.monitor.poll(timeout_ms):
            timeout_ms = 0
            event = recv_monitor_message(self.monitor)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                self.connected = False
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.succeeded = self.connected = True
                self.failures = 0
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise TransportError(
                    f"the {self.peer} at {self.endpoint} refused this node's "
                    "key: its certificate is unknown there, expired or revoked"
                )
            else:
                self.failures += 1
                if (
                    self.succeeded or self.tolerant
                ) and self.failures < self.TOLERATED_AFTER_SUCCESS:
                    continue  # a peer that died mid-handshake; libzmq reconnects
                raise TransportError(
                    f"cannot authenticate the {self.peer} at {self.endpoint}: "
                    f"it does not hold the key of the {self.peer} certificate "
                    "this node trusts (another deployment, or an impostor); "
                    "refusing to talk to it"
                )
        return self.succeeded

    def close(self) -> None:
        self.monitor.close(linger=0)
