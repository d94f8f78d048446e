"""Sending signed messages to the store, in order, without losing any it did not acknowledge.

A DEALER socket (CurveZMQ, ``ZMQ_IMMEDIATE``: nothing is queued for a store that is not
connected) to the store's ROUTER. Every message stays *pending* until the store acknowledges
it as durably stored (or as a duplicate). Pending messages live in memory up to
``memory_window``, beyond that in an on-disk spool (one file each, in the camera's state
folder), up to ``spool_max_bytes``. Messages go out strictly in order; after a reconnection
(a store restart drops what was in flight) or when the oldest pending message waits longer
than ``resend_after_s``, everything pending is sent again from the oldest, and the store
answers what it already has with DUPLICATE. So a store outage of minutes ends with every frame
archived once, in order.

Capture never blocks on the store: when the spool is full, the ``drop_policy`` decides: with
``newest`` the camera drops the newly *captured* frame before it is numbered and signed
(``has_room`` is False), so the hash chain stays whole; with ``oldest`` the oldest spooled
messages are deleted to make room (a gap that ``veilcam verify`` reports). Both are counted
and logged.

The spool outlives the process: a camera that stops before the store acknowledged everything
(a signal during an outage, the drain timeout) writes what it still holds in memory to the
spool, and the next start sends the whole spool first, in the original order (file names begin
with a running number), before any new frame. The hash chain continues across a clean stop,
so the store takes them as the same chain. After a hard crash only the in-memory window (up
to ``memory_window`` messages) is gone; ``veilcam verify`` reports that as a gap.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
from veilcam.common.errors import FormatError
from veilcam.common.format import (
    KIND_FRAME,
    Ack,
    AckKey,
    AckStatus,
    Message,
    decode_message_body,
    pack_parts,
    unpack_parts,
)
from veilcam.common.secretfiles import write_atomic
from veilcam.common.transport import HandshakeWatch, make_client

log = logging.getLogger("veilcam.publisher")


@dataclass
class _Pending:
    topic: bytes
    parts: list[bytes] | None  # None: spooled to ``path``
    size: int
    name: str
    path: Path | None = None
    sent: bool = False


class Publisher:
    RETRY_CONNECT_S = 1.0

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        keys: tuple[bytes, bytes],
        store_key: bytes,
        spool_dir: Path,
        memory_window: int = 300,
        spool_max_bytes: int = 2 * 2**30,
        drop_policy: str = "newest",
        resend_after_s: float = 10.0,
    ) -> None:
        self.ctx, self.keys, self.store_key, self.endpoint = ctx, keys, store_key, endpoint
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.memory_window, self.spool_max_bytes = memory_window, spool_max_bytes
        self.drop_policy, self.resend_after_s = drop_policy, resend_after_s
        self.pending: OrderedDict[AckKey, _Pending] = OrderedDict()
        self.pending_bytes = 0
        self.in_memory = 0
        self.acked = self.rejected = self.resent = self.dropped_spool_full = 0
        self.acked_frames = 0  # of ``acked``: frames (the rest are key envelopes, gap notices)
        # called with the seqs of the frames dropped from the spool: declare the gap
        self.on_frames_dropped: Callable[[list[int]], None] | None = None
        self._progress_at = time.monotonic()
        self._ever_connected = False
        self._order = 0  # running number of spool file names: the sending order
        self.recovered = self._load_spool()
        self._open_socket()

    def _load_spool(self) -> int:
        """Take up what a previous run left unacknowledged in the spool, oldest first."""
        for path in sorted(self.spool_dir.glob("*.msg")):
            try:
                self._order = max(self._order, int(path.name.split("-", 1)[0]) + 1)
                kind, body = unpack_parts(path.read_bytes())
                msg = decode_message_body(kind, body)
            except (OSError, ValueError, FormatError) as exc:
                log.error(
                    "spooled message %s is unreadable (%s); moving it aside as .bad", path, exc
                )
                path.replace(path.with_suffix(".bad"))
                continue
            key = msg.ack_key
            if key in self.pending:
                path.unlink()
                continue
            size = path.stat().st_size
            self.pending[key] = _Pending(msg.to_parts()[0], None, size, path.name, path)
            self.pending_bytes += size
        if self.pending:
            log.warning(
                "%d message(s) a previous run left unacknowledged in %s go to the store first",
                len(self.pending),
                self.spool_dir,
            )
        return len(self.pending)

    def _reconnect(self) -> None:
        """A fresh connection, on which everything pending goes again from the oldest.

        libzmq's own reconnection is off (``RECONNECT_IVL`` -1): after a reconnection it could
        carry newer messages before this code learned that older ones died with the old
        connection, and the store would then refuse those as out of order. Reconnecting here
        makes "everything pending is unsent" true before anything can go out again."""
        failures = 0 if self.watch.succeeded else self.watch.failures
        self.watch.close()
        self.sock.close(linger=0)
        self._open_socket(failures)

    def _open_socket(self, failures: int = 0) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt(zmq.RECONNECT_IVL, -1)
        make_client(sock, self.keys, self.store_key)
        self.watch = HandshakeWatch(sock, "store", self.endpoint, tolerant=self._ever_connected)
        self.watch.failures = failures  # consecutive failures count across reconnections
        sock.connect(self.endpoint)
        self.sock, self._opened_at = sock, time.monotonic()
        for entry in self.pending.values():
            entry.sent = False

    # ------------------------------------------------------------------ state
    @property
    def has_room(self) -> bool:
        return self.drop_policy == "oldest" or self.pending_bytes < self.spool_max_bytes

    @property
    def spooled(self) -> int:
        return len(self.pending) - self.in_memory

    # ------------------------------------------------------------------ sending
    def send(self, msg: Message) -> None:
        key = msg.ack_key
        what = key[1].hex() if isinstance(key[1], bytes) else f"{key[1]:020d}"
        name = f"{self._order:012d}-{key[0].decode()}-{what}.msg"
        self._order += 1
        parts = msg.to_parts()
        size = sum(len(p) for p in parts)
        entry = _Pending(parts[0], parts, size, name)
        if self.in_memory >= self.memory_window:
            if self.spooled == 0:
                log.warning(
                    "%d messages unacknowledged (store at %s unreachable or slow): spooling to %s",
                    len(self.pending),
                    self.endpoint,
                    self.spool_dir,
                )
            self._spool(key, entry)
        else:
            self.in_memory += 1
        if not self.pending:
            self._progress_at = time.monotonic()
        self.pending[key] = entry
        self.pending_bytes += size
        dropped: list[int] = []
        if self.drop_policy == "oldest":
            while self.pending_bytes > self.spool_max_bytes:
                # only frames go: envelopes open what remains, notices explain what went
                old_key = next((k for k in self.pending if k[0] == KIND_FRAME and k != key), None)
                if old_key is None:
                    break
                self._forget(old_key)
                seq = old_key[1]
                assert isinstance(seq, int)  # a frame's key
                dropped.append(seq)
                self.dropped_spool_full += 1
                if self.dropped_spool_full in (1, 10, 100) or self.dropped_spool_full % 1000 == 0:
                    log.error(
                        "spool full (%d bytes): dropped the oldest unacknowledged "
                        "frame(s), %d so far",
                        self.spool_max_bytes,
                        self.dropped_spool_full,
                    )
        self._pump()
        if dropped and self.on_frames_dropped is not None:
            self.on_frames_dropped(dropped)

    def _spool(self, key: AckKey, entry: _Pending) -> None:
        """Move a pending message's bytes from memory to its spool file."""
        assert entry.parts is not None  # in memory until now
        entry.path = self.spool_dir / entry.name
        write_atomic(entry.path, pack_parts(key[0], entry.parts[1:]))
        entry.parts = None

    def _parts(self, entry: _Pending) -> list[bytes] | None:
        if entry.parts is not None:
            return entry.parts
        assert entry.path is not None  # spooled
        try:
            _, body = unpack_parts(entry.path.read_bytes())
        except (OSError, FormatError) as exc:
            log.error("spooled message %s is unreadable (%s); dropping it", entry.path, exc)
            return None
        return [entry.topic, *body]

    def _pump(self) -> None:
        """Send what is unsent, oldest first, while the socket takes it."""
        for key, entry in list(self.pending.items()):
            if entry.sent:
                continue
            parts = self._parts(entry)
            if parts is None:
                self._forget(key)
                continue
            try:
                self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return  # not connected, or the pipe is full: the rest waits, in order
            entry.sent = True

    def _resend_all(self, why: str) -> None:
        if self.pending:
            log.info("sending %d unacknowledged message(s) again (%s)", len(self.pending), why)
            self.resent += len(self.pending)
        for entry in self.pending.values():
            entry.sent = False
        self._progress_at = time.monotonic()
        self._pump()

    def _forget(self, key: AckKey) -> _Pending | None:
        entry = self.pending.pop(key, None)
        if entry is None:
            return None
        self.pending_bytes -= entry.size
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)
        else:
            self.in_memory -= 1
        return entry

    # ------------------------------------------------------------------ acknowledgements
    def poll(self, timeout_ms: int = 0) -> None:
        """Take every acknowledgement waiting (waiting up to ``timeout_ms`` for the first),
        resend after a reconnection or a long silence, and send what waits.

        Raises TransportError if the store failed authentication (see HandshakeWatch)."""
        self.watch.check()
        now = time.monotonic()
        if self.watch.succeeded and not self.watch.connected:
            self._ever_connected = True
            if self.pending:
                log.info(
                    "store connection lost; reconnecting, then sending %d unacknowledged "
                    "message(s) again",
                    len(self.pending),
                )
                self.resent += len(self.pending)
            self._reconnect()
        elif not self.watch.succeeded and now - self._opened_at > self.RETRY_CONNECT_S:
            self._reconnect()  # the store is not (yet) there: try again
        elif self.watch.succeeded:
            self._ever_connected = True
        while self.sock.poll(timeout_ms, zmq.POLLIN):
            timeout_ms = 0
            parts = self.sock.recv_multipart()
            try:
                ack = Ack.from_parts(parts)
            except FormatError as exc:
                log.warning("ignoring malformed acknowledgement from the store: %s", exc)
                continue
            if self._forget(ack.key) is None:
                continue
            self._progress_at = time.monotonic()
            if ack.status == AckStatus.REJECTED:
                self.rejected += 1
                log.error("store rejected %s: %s", ack.describe(), ack.reason)
            else:
                self.acked += 1
                self.acked_frames += ack.kind == KIND_FRAME
        if self.pending and time.monotonic() - self._progress_at > self.resend_after_s:
            if self.watch.connected:
                self._resend_all(f"no acknowledgement for {self.resend_after_s:.0f} s")
            else:
                self._progress_at = time.monotonic()  # the reconnection will resend
        self._pump()

    def drain(self, timeout_s: float) -> bool:
        """Wait until everything sent is acknowledged; False if time runs out first."""
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            self.poll(timeout_ms=100)
        return not self.pending

    def close(self) -> int:
        """Close the connection and keep what is unacknowledged in the spool for the next
        start; returns how many messages were kept."""
        self.watch.close()
        self.sock.close(linger=0)
        for key, entry in self.pending.items():
            if entry.path is None:
                try:
                    self._spool(key, entry)
                    self.in_memory -= 1
                except OSError as exc:
                    log.error("cannot keep %s in the spool (%s): it is lost", entry.name, exc)
        if self.pending:
            log.warning(
                "%d unacknowledged message(s) kept in %s; the next start sends them first",
                len(self.pending),
                self.spool_dir,
            )
        return len(self.pending)


def spool_dir_for(state_dir: Path, camera_id: str) -> Path:
    return Path(state_dir) / f"spool-{camera_id}"
