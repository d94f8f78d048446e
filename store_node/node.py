"""The store node: verify every message, archive it, acknowledge it once durable, relay it live.

Sockets (all ZeroMQ): ingest ROUTER (cameras' DEALERs send messages, get acknowledgements),
relay PUB (viewers subscribe per camera), query ROUTER (viewers ask for key envelopes).
Nothing is archived or relayed before it verifies; a rejected message is counted by reason,
logged with the reason, and answered with a REJECTED acknowledgement. The store never holds a
content key: it keeps and forwards bytes whose zones it cannot read.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import zmq

from common.errors import ArchiveError, FormatError, VerificationError
from common.format import (
    KIND_ENVELOPE,
    KIND_FRAME,
    Ack,
    AckStatus,
    FrameMessage,
    KeyEnvelope,
    message_from_parts,
)
from common.home import Home
from common.lifecycle import StopFlag
from common.signing import ChainTracker, TrustedCameras
from store_node.archive import Archive

log = logging.getLogger("veilcam.store")

QUERY_ENVELOPE = b"ENVELOPE"
STATS_EVERY_S = 30.0


class StoreNode:
    def __init__(self, home: Home, stop: StopFlag | None = None) -> None:
        self.home = home
        self.cfg = home.store_config()
        self.trust: TrustedCameras = home.trusted_cameras()
        self.archive = Archive(home.resolve(self.cfg.archive.path),
                               self.cfg.archive.segment_max_bytes)
        self.chain = ChainTracker()
        for camera, (seq, digest) in self.archive.last_frames().items():
            self.chain.set(camera, seq, digest)
        self.stop = stop or StopFlag()
        self.rejects: Counter[str] = Counter()
        self.accepted = Counter()
        self._pending_acks: list[tuple[bytes, Ack]] = []
        self._oldest_pending = 0.0

    # ------------------------------------------------------------------ ingest
    def handle_ingest(self, identity: bytes, parts: list[bytes]) -> None:
        try:
            msg = message_from_parts(parts)
        except FormatError as exc:
            self._reject(identity, None, "malformed", str(exc))
            return
        try:
            if isinstance(msg, FrameMessage):
                self._ingest_frame(identity, msg, parts)
            else:
                self._ingest_envelope(identity, msg, parts)
        except VerificationError as exc:
            self._reject(identity, msg, exc.reason, str(exc))

    def _ingest_frame(self, identity: bytes, msg: FrameMessage, parts: list[bytes]) -> None:
        self.trust.verify_frame(msg)
        last = self.chain.last(msg.camera_id)
        if last is not None and msg.header.seq <= last.seq:
            if self.archive.frame_digest(msg.camera_id, msg.header.seq) == msg.digest:
                self._ack(identity, Ack(AckStatus.DUPLICATE, KIND_FRAME, msg.header.seq,
                                        msg.camera_id))
                return
        link = self.chain.check(msg)  # raises for replay / fork
        if link == "gap":
            log.warning("camera %s: frames %d..%d missing before #%d", msg.camera_id,
                        last.seq + 1, msg.header.seq - 1, msg.header.seq)
        elif link == "chain_start" and last is not None:
            log.info("camera %s declared a new hash chain at #%d (restart without state)",
                     msg.camera_id, msg.header.seq)
        self.archive.append_frame(msg)
        self.chain.accept(msg)
        self.accepted["frame"] += 1
        self.relay.send_multipart(parts, copy=False)
        self._ack(identity, Ack(AckStatus.STORED, KIND_FRAME, msg.header.seq, msg.camera_id))

    def _ingest_envelope(self, identity: bytes, env: KeyEnvelope, parts: list[bytes]) -> None:
        self.trust.verify_envelope(env)
        status = AckStatus.DUPLICATE
        if not self.archive.has_envelope(env.camera_id, env.body.epoch_id):
            self.archive.append_envelope(env)
            self.accepted["envelope"] += 1
            status = AckStatus.STORED
        self.relay.send_multipart(parts, copy=False)
        self._ack(identity, Ack(status, KIND_ENVELOPE, 0, env.camera_id,
                                epoch_id=env.body.epoch_id))

    def _ack(self, identity: bytes, ack: Ack) -> None:
        if not self._pending_acks:
            self._oldest_pending = time.monotonic()
        self._pending_acks.append((identity, ack))

    def _reject(self, identity: bytes, msg: FrameMessage | KeyEnvelope | None, reason: str,
                detail: str) -> None:
        self.rejects[reason] += 1
        log.warning("rejected %s: %s", reason, detail)
        if isinstance(msg, FrameMessage):
            ack = Ack(AckStatus.REJECTED, KIND_FRAME, msg.header.seq, msg.camera_id, detail)
        elif isinstance(msg, KeyEnvelope):
            ack = Ack(AckStatus.REJECTED, KIND_ENVELOPE, 0, msg.camera_id, detail,
                      msg.body.epoch_id)
        else:
            return  # nothing to name in an answer
        self.ingest.send_multipart([identity, *ack.to_parts()])

    def flush(self, force: bool = False) -> None:
        """Commit the archive and send the acknowledgements it makes true."""
        if not self._pending_acks:
            return
        age_ms = (time.monotonic() - self._oldest_pending) * 1000
        if not force and len(self._pending_acks) < self.cfg.archive.fsync_max_records \
                and age_ms < self.cfg.archive.fsync_max_delay_ms:
            return
        self.archive.commit()
        for identity, ack in self._pending_acks:
            self.ingest.send_multipart([identity, *ack.to_parts()])
        self._pending_acks.clear()

    # ------------------------------------------------------------------ queries
    def handle_query(self, identity: bytes, parts: list[bytes]) -> None:
        try:
            if len(parts) == 3 and parts[0] == QUERY_ENVELOPE:
                camera_id = parts[1].decode("ascii")
                body = self.archive.envelope_parts(camera_id, parts[2])
                reply = [b"OK", *body] if body else [b"ERR", b"no key envelope for that epoch"]
            else:
                reply = [b"ERR", b"unknown query"]
        except (UnicodeDecodeError, ArchiveError) as exc:
            reply = [b"ERR", str(exc).encode()]
        self.query.send_multipart([identity, *reply])

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        ctx = zmq.Context.instance()
        self.ingest = ctx.socket(zmq.ROUTER)
        self.relay = ctx.socket(zmq.PUB)
        self.query = ctx.socket(zmq.ROUTER)
        for sock in (self.ingest, self.relay, self.query):
            sock.setsockopt(zmq.LINGER, 0)
        self.ingest.setsockopt(zmq.MAXMSGSIZE, 256 * 2**20)
        self.relay.setsockopt(zmq.SNDHWM, 1000)
        c = self.cfg.store
        try:
            self.ingest.bind(c.ingest_bind)
            self.relay.bind(c.relay_bind)
            self.query.bind(c.query_bind)
        except zmq.ZMQError as exc:
            log.error("cannot bind the store's sockets (%s); is another store running on "
                      "these ports? (config %s)", exc, self.home.store_config_path)
            self.archive.close()
            return 2
        poller = zmq.Poller()
        poller.register(self.ingest, zmq.POLLIN)
        poller.register(self.query, zmq.POLLIN)
        log.info("store ready: ingest %s, relay %s, query %s, archive %s, %d trusted camera(s)",
                 c.ingest_bind, c.relay_bind, c.query_bind, self.archive.root,
                 len(self.trust.camera_ids))
        last_stats = time.monotonic()
        tick_ms = max(1, int(self.cfg.archive.fsync_max_delay_ms / 2))
        try:
            while not self.stop.is_set():
                events = dict(poller.poll(tick_ms))
                if self.ingest in events:
                    for _ in range(256):
                        try:
                            identity, *parts = self.ingest.recv_multipart(zmq.NOBLOCK, copy=True)
                        except zmq.Again:
                            break
                        self.handle_ingest(identity, parts)
                        self.flush()
                if self.query in events:
                    identity, *parts = self.query.recv_multipart()
                    self.handle_query(identity, parts)
                self.flush()
                if time.monotonic() - last_stats >= STATS_EVERY_S:
                    last_stats = time.monotonic()
                    self._log_stats()
        finally:
            self.flush(force=True)
            self.archive.close()
            self._log_stats()
            for sock in (self.ingest, self.relay, self.query):
                sock.close(linger=0)
            log.info("store stopped: %s", self.stop.reason or "error")
        return 0

    def _log_stats(self) -> None:
        rejects = ", ".join(f"{k}={v}" for k, v in sorted(self.rejects.items())) or "none"
        log.info("store: %d frame(s) and %d key envelope(s) archived; rejected: %s",
                 self.accepted["frame"], self.accepted["envelope"], rejects)
