"""Asking the store: an authenticated CurveZMQ link and one typed method per query command.

``StoreLink`` is the socket (a CURVE client pinned to the store's key, with a handshake watch
and a per-request timeout); ``StoreQueryClient`` builds each request and parses each answer
with ``common.query``, so callers (viewer log-in and playback, the live client's envelope
fetch and live join, ``veilcam doctor``, ``veilcam user passwd``) never touch frames. An ``ERR`` answer
raises :class:`~veilcam.common.query.QueryRefused`, a malformed one
:class:`~veilcam.common.query.QueryError`, no answer in time a VeilcamError, a refused
handshake a TransportError. The camera's grant sync keeps its own non-blocking socket and
uses ``common.query`` directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import zmq
from veilcam.common import deployment
from veilcam.common.errors import VeilcamError
from veilcam.common.home import Home
from veilcam.common.query import (
    MAX_LIVE_FRAMES,
    ChainReply,
    ChainRequest,
    CoverageReply,
    CoverageRequest,
    EnvelopeReply,
    EnvelopeRequest,
    ErrorReply,
    GrantsReply,
    GrantsRequest,
    KeysReply,
    KeysRequest,
    LiveReply,
    LiveRequest,
    LoginReply,
    LoginRequest,
    PasswdReply,
    PasswdRequest,
    QueryError,
    QueryRefused,
    RangeReply,
    RangeRequest,
    RegisterReply,
    RegisterRequest,
    Reply,
    Request,
    SaltReply,
    SaltRequest,
    SpanReply,
    SpanRequest,
    TimeReply,
    TimeRequest,
    TrustReply,
    TrustRequest,
    decode_reply,
)
from veilcam.common.transport import HandshakeWatch, curve_pair, make_client, recv_capped

DEFAULT_TIMEOUT_S = 10.0
# an answer's caps: the largest is LIVE's group of pictures (MAX_LIVE_FRAMES frames); a store
# sending more (parts or bytes) is refused before anything is parsed
MAX_ANSWER_PARTS = 2 + MAX_LIVE_FRAMES
MAX_ANSWER_BYTES = 512 * 2**20


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
        ca = deployment.load_ca(home)
        if keys is None:
            keys = curve_pair(
                deployment.transport_key(
                    home, "viewer", deployment.viewer_config(home).viewer.identity
                )
            )
        self.endpoint = endpoint
        self.sock: zmq.Socket = zmq.Context.instance().socket(sock_type)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_ANSWER_BYTES)  # per part; the whole: below
        make_client(self.sock, keys, deployment.store_identity(home, ca).transport_key)
        self.watch = HandshakeWatch(self.sock, "store", endpoint)
        self.sock.connect(endpoint)

    def request(self, parts: list[bytes], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[bytes]:
        self.sock.send_multipart(parts)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.watch.check()
            if self.sock.poll(100):
                got = recv_capped(self.sock, MAX_ANSWER_PARTS, MAX_ANSWER_BYTES)
                if got.oversized:  # a store can send anything: never held whole in memory
                    raise QueryError(
                        f"the store at {self.endpoint} answered {got.parts} part(s) of "
                        f"{got.size} bytes, above the caps ({MAX_ANSWER_PARTS} parts, "
                        f"{MAX_ANSWER_BYTES >> 20} MiB)"
                    )
                return [f.bytes for f in got.frames]
        raise VeilcamError(f"the store at {self.endpoint} did not answer within {timeout_s:.0f} s")

    def close(self) -> None:
        self.watch.close()
        self.sock.close(linger=0)


class Link(Protocol):
    """What the client needs of a link: one request, one answer (StoreLink, or a fake)."""

    def request(self, parts: list[bytes], timeout_s: float = ...) -> list[bytes]: ...


R = TypeVar("R", bound=Reply)


class StoreQueryClient:
    """One method per query command, each returning the command's typed reply."""

    def __init__(self, link: Link, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.link = link
        self.timeout_s = timeout_s

    @classmethod
    def connect(
        cls,
        home: Home,
        endpoint: str | None = None,
        keys: tuple[bytes, bytes] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> StoreQueryClient:
        """A client on a new link to ``endpoint`` (default: viewer.toml's ``viewer.query``)."""
        if endpoint is None:
            endpoint = deployment.viewer_config(home).viewer.query
        return cls(StoreLink(home, endpoint, keys=keys), timeout_s)

    @property
    def endpoint(self) -> str:
        return getattr(self.link, "endpoint", "the store")

    def close(self) -> None:
        close = getattr(self.link, "close", None)
        if close is not None:
            close()

    def ask(self, request: Request, expect: type[R], timeout_s: float | None = None) -> R:
        """Send ``request``; its reply, or QueryRefused (ERR) / QueryError (malformed)."""
        frames = self.link.request(
            request.to_frames(), timeout_s=self.timeout_s if timeout_s is None else timeout_s
        )
        reply = decode_reply(request.command, frames)
        if isinstance(reply, ErrorReply):
            raise QueryRefused(request.command, reply.reason)
        if not isinstance(reply, expect):  # decode_reply maps the command to its type
            raise QueryError(f"{request.command.label} answer of the wrong type")
        return reply

    # one method per command
    def envelope(
        self, camera_id: str, epoch_id: bytes, timeout_s: float | None = None
    ) -> EnvelopeReply:
        return self.ask(EnvelopeRequest(camera_id, epoch_id), EnvelopeReply, timeout_s)

    def range(self, camera_id: str, from_us: int, after_seq: int | None, limit: int) -> RangeReply:
        return self.ask(RangeRequest(camera_id, from_us, after_seq, limit), RangeReply)

    def span(self, camera_id: str) -> SpanReply:
        return self.ask(SpanRequest(camera_id), SpanReply)

    def coverage(self, camera_id: str, from_us: int, to_us: int, buckets: int) -> CoverageReply:
        return self.ask(CoverageRequest(camera_id, from_us, to_us, buckets), CoverageReply)

    def grants(self, camera_id: str) -> GrantsReply:
        return self.ask(GrantsRequest(camera_id), GrantsReply)

    def salt(self, user: str) -> SaltReply:
        return self.ask(SaltRequest(user), SaltReply)

    def register(self, user: str, login_secret: bytes, keystore_json: str) -> RegisterReply:
        return self.ask(RegisterRequest(user, login_secret, keystore_json), RegisterReply)

    def login(self, user: str, login_secret: bytes) -> LoginReply:
        return self.ask(LoginRequest(user, login_secret), LoginReply)

    def passwd(
        self, user: str, old_login_secret: bytes, new_login_secret: bytes, keystore_json: str
    ) -> PasswdReply:
        return self.ask(
            PasswdRequest(user, old_login_secret, new_login_secret, keystore_json), PasswdReply
        )

    def time(self, timeout_s: float | None = None) -> TimeReply:
        return self.ask(TimeRequest(), TimeReply, timeout_s)

    def trust(self, timeout_s: float | None = None) -> TrustReply:
        return self.ask(TrustRequest(), TrustReply, timeout_s)

    def chain(self, camera_id: str, timeout_s: float | None = None) -> ChainReply:
        return self.ask(ChainRequest(camera_id), ChainReply, timeout_s)

    def keys(self, user: str, key_id: bytes) -> KeysReply:
        return self.ask(KeysRequest(user, key_id), KeysReply)

    def live(self, camera_id: str, timeout_s: float | None = None) -> LiveReply:
        return self.ask(LiveRequest(camera_id), LiveReply, timeout_s)


# --------------------------------------------------------------------------- clock


class ClockUnknown(VeilcamError):
    """The store's clock could not be read; ``fix`` says what to do."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


def measure_skew(
    link: Link | StoreQueryClient, timeout_s: float = 3.0, now: Callable[[], float] = time.time
) -> tuple[float, float]:
    """(store clock - this machine's clock, ± margin) in seconds, from the store's ``TIME``
    query. ``veilcam doctor`` judges it; the viewer adds it to the age a live frame may have
    (viewer/freshness.py)."""
    client = link if isinstance(link, StoreQueryClient) else StoreQueryClient(link)
    try:
        t0 = now()
        reply = client.time(timeout_s)
        t1 = now()
    except QueryRefused:
        raise ClockUnknown(
            "the store does not tell its time (a veilcam store older than 'veilcam doctor')",
            "upgrade veilcam on the store",
        ) from None
    except QueryError:
        raise ClockUnknown(
            "the store's answer is not a time", "upgrade veilcam on the store"
        ) from None
    except VeilcamError as exc:
        raise ClockUnknown(
            str(exc), "run doctor again; look at the store's log if it keeps failing"
        ) from None
    return reply.time_us / 1e6 - (t0 + t1) / 2, (t1 - t0) / 2
