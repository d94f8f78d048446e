"""Keeping the camera's grants current: fetched from the store, verified here, cached on disk.

The store serves grant documents; the camera trusts only those signed by the deployment CA
(common.grants.GrantBook), so a compromised store can withhold but not add a recipient.
Requests and answers are built and parsed by ``common.query``; the socket stays this
module's own, non-blocking (the camera's loop polls it between frames).
The last good set is cached in the camera's state folder, so a camera that starts while the
store is down still seals its first epoch to the right people.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import zmq
from veilcam.common.grants import GrantBook
from veilcam.common.keywrap import Grant
from veilcam.common.query import (
    Command,
    ErrorReply,
    GrantsReply,
    GrantsRequest,
    QueryError,
    decode_reply,
)
from veilcam.common.secretfiles import write_atomic
from veilcam.common.transport import HandshakeWatch, make_client

log = logging.getLogger("veilcam.grants")


class GrantSync:
    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        keys: tuple[bytes, bytes],
        store_key: bytes,
        book: GrantBook,
        cache_path: Path,
        poll_s: float,
    ) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        make_client(self.sock, keys, store_key)
        self.watch = HandshakeWatch(self.sock, "store", endpoint)
        self.sock.connect(endpoint)
        self.book, self.cache_path, self.poll_s = book, Path(cache_path), poll_s
        self._asked_at = 0.0
        self._waiting = False
        self._cached: list[bytes] = []
        if self.cache_path.exists():
            try:
                docs = [d.encode() for d in json.loads(self.cache_path.read_text())]
                self.book.update(docs)
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                log.warning("grant cache %s unreadable (%s); ignoring it", self.cache_path, exc)

    def grants(self) -> list[Grant]:
        return self.book.effective()

    def _ask(self) -> None:
        self.watch.check()  # a refused handshake is a clear error...
        try:  # ...and never a send that blocks forever: after a failed handshake libzmq may
            # drop the connection for good, and a DEALER without one blocks (ignoring SIGTERM)
            self.sock.send_multipart(GrantsRequest(self.book.camera_id).to_frames(), zmq.NOBLOCK)
        except zmq.Again:
            log.debug("no connection to the store's query socket to ask for grants")
        self._asked_at = time.monotonic()
        self._waiting = True

    def fetch_now(self, timeout_s: float) -> bool:
        """Ask and wait for the answer (at start); False if the store did not answer."""
        self._ask()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.watch.check()
            if self.sock.poll(100):
                self._take(self.sock.recv_multipart())
                return True
        return False

    def poll(self) -> bool:
        """Non-blocking: handle answers, ask again when due. True if the grants changed."""
        self.watch.check()
        changed = False
        while self.sock.poll(0):
            changed |= self._take(self.sock.recv_multipart())
        now = time.monotonic()
        if now - self._asked_at >= self.poll_s and (
            not self._waiting or now - self._asked_at > 10 * self.poll_s
        ):
            self._ask()
        return changed

    def _take(self, frames: list[bytes]) -> bool:
        self._waiting = False
        try:
            reply = decode_reply(Command.GRANTS, frames)
        except QueryError as exc:
            log.warning("store sent a malformed grant list: %s", exc)
            return False
        if isinstance(reply, ErrorReply):
            log.warning("store refused the grant list: %s", reply.reason)
            return False
        if not isinstance(reply, GrantsReply):  # decode_reply answers GRANTS with one
            return False
        changed = self.book.update(reply.documents)
        documents = self.book.documents()
        if documents != self._cached:
            write_atomic(self.cache_path, json.dumps([d.decode() for d in documents]).encode())
            self._cached = documents
        return changed

    def close(self) -> None:
        self.watch.close()
        self.sock.close(linger=0)
