"""Sending signed messages to the store, in order, without losing any it did not acknowledge.

A DEALER socket (CurveZMQ, ``ZMQ_IMMEDIATE``: nothing is queued for a store that is not
connected) to the store's ROUTER. What is pending lives in a ``Spool`` (camera_node/spool.py:
memory, then disk, with the drop policy); this module only decides when it goes out. Messages
go out strictly in order; after a reconnection (a store restart drops what was in flight) or
when the oldest pending message waits longer than ``resend_after_s``, everything pending is
sent again from the oldest, and the store answers what it already has with DUPLICATE. So a
store outage of minutes ends with every frame archived once, in order. Capture never blocks on
the store (see the spool's drop policy).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import zmq
from veilcam.camera_node.spool import Pending, Spool, spool_dir_for
from veilcam.common.errors import FormatError
from veilcam.common.format import Ack, AckKey, Message
from veilcam.common.transport import HandshakeWatch, make_client

log = logging.getLogger("veilcam.publisher")


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
        self.spool = Spool(spool_dir, memory_window, spool_max_bytes, drop_policy)
        self.resend_after_s = resend_after_s
        self.resent = 0
        # called with the seqs of the frames dropped from the spool: declare the gap
        self.on_frames_dropped: Callable[[list[int]], None] | None = None
        self._progress_at = time.monotonic()
        self._ever_connected = False
        self._open_socket()

    # what the camera's stats and metrics read
    @property
    def pending(self) -> OrderedDict[AckKey, Pending]:
        return self.spool.pending

    @property
    def pending_bytes(self) -> int:
        return self.spool.pending_bytes

    @property
    def spooled(self) -> int:
        return self.spool.spooled

    @property
    def has_room(self) -> bool:
        return self.spool.has_room

    @property
    def acked(self) -> int:
        return self.spool.acked

    @property
    def acked_frames(self) -> int:
        return self.spool.acked_frames

    @property
    def rejected(self) -> int:
        return self.spool.rejected

    @property
    def dropped_spool_full(self) -> int:
        return self.spool.dropped_spool_full

    # ------------------------------------------------------------------ connection
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
        self.spool.mark_all_unsent()

    # ------------------------------------------------------------------ sending
    def send(self, msg: Message) -> None:
        if not self.pending:
            self._progress_at = time.monotonic()
        dropped = self.spool.add(msg, self.endpoint)
        self._pump()
        if dropped and self.on_frames_dropped is not None:
            self.on_frames_dropped(dropped)

    def _pump(self) -> None:
        """Send what is unsent, oldest first, while the socket takes it."""
        for key, entry in self.spool.unsent():
            parts = self.spool.parts(entry)
            if parts is None:
                self.spool.forget(key)
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
        self.spool.mark_all_unsent()
        self._progress_at = time.monotonic()
        self._pump()

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
            if self.spool.settle(ack):
                self._progress_at = time.monotonic()
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
        return self.spool.keep_all()


__all__ = ["Publisher", "spool_dir_for"]
