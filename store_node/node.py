"""The store node: verify every message, archive it, acknowledge it once durable, relay it live.

Sockets (ZeroMQ, all CurveZMQ servers behind a ZAP allowlist of certified keys): ingest ROUTER
(cameras send messages, get acknowledgements), relay PUB (viewers subscribe per camera), query
ROUTER (cameras fetch grants; viewers fetch key envelopes, register and log in).
Nothing is archived or relayed before it verifies; a rejected message is counted by reason,
logged with the reason, and answered with a REJECTED acknowledgement. The store never holds a
content key: it keeps and forwards bytes whose zones it cannot read. Certificates and the CRL
are re-read when they change, so a revocation takes effect without a restart.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import zmq
from veilcam.common.errors import (
    ArchiveError,
    FormatError,
    IdentityError,
    VerificationError,
)
from veilcam.common.format import (
    KIND_ENVELOPE,
    KIND_FRAME,
    KIND_GAP,
    ZERO_DIGEST,
    Ack,
    AckStatus,
    FrameMessage,
    GapNotice,
    KeyEnvelope,
    message_from_parts,
)
from veilcam.common.home import Home
from veilcam.common.lifecycle import StopFlag
from veilcam.common.metrics import counter, gauge, serve_metrics, stage_latency
from veilcam.common.query import MAX_FIELD_BYTES, MAX_REQUEST_BYTES, MAX_REQUEST_FRAMES
from veilcam.common.secretfiles import write_atomic
from veilcam.common.signing import ChainTracker, TrustedCameras
from veilcam.common.stagetimer import StageTimes
from veilcam.common.transport import (
    Allowlist,
    CurveAuthenticator,
    curve_pair,
    make_server,
    recv_capped,
    z85_public,
)
from veilcam.store_node.accounts import AccountGate, AccountStore, LoginLimiter
from veilcam.store_node.archive import Archive
from veilcam.store_node.queries import StoreQueries

log = logging.getLogger("veilcam.store")

STATS_EVERY_S = 30.0
HOLE_WAIT_S = 30.0  # later frames wait this long for one the store could not write
INGEST_HWM = 20  # messages read ahead per camera: the rest waits in its queue and spool
RELAY_HWM = 100  # frames queued per live viewer (bench/load.py: 1000 kept 130 MB each)
IDENTITY_CHECK_S = 1.0
# Whole-message caps (ZeroMQ's MAXMSGSIZE limits each part, not their number): a message
# above them is received part by part and dropped, counted as rejected "oversized_message".
INGEST_MAX_PARTS = 1 + 4 + 256  # routing id, topic, header, signature, image, 256 zones
INGEST_MAX_BYTES = 256 * 2**20
QUERY_MAX_PARTS = 1 + MAX_REQUEST_FRAMES  # routing id + a request (common/query.py)
QUERY_MAX_BYTES = MAX_REQUEST_BYTES
QUERY_MAX_PART = MAX_FIELD_BYTES  # MAXMSGSIZE of the query socket (a keystore is ~3 KB)


class StoreNode:
    def __init__(
        self,
        home: Home,
        stop: StopFlag | None = None,
        stats_out: str | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.home = home
        self.stats_out = stats_out
        self.times = StageTimes()
        self.cfg = home.store_config()
        self.allowlist = Allowlist()
        self._identity_stamp: tuple = ()
        self.trust: TrustedCameras = TrustedCameras({})
        self.reload_identities()
        self.accounts = AccountStore(home.accounts_path, home.account_secret())
        self.limiter = LoginLimiter()
        self.archive = Archive(
            home.resolve(self.cfg.archive.path), self.cfg.archive.segment_max_bytes
        )
        self.chain = ChainTracker()
        for camera, (seq, digest) in self.archive.last_frames().items():
            self.chain.set(camera, seq, digest)
        self.stop = stop or StopFlag()
        self.rejects: Counter[str] = Counter()
        self.queries = StoreQueries(
            home,
            self.archive,
            self.accounts,
            AccountGate(self.accounts, self.limiter),
            self.rejects,
        )
        self.accepted = Counter()
        # for the metrics endpoint: frames per camera, messages relayed, recipients of each
        # camera's current epoch (read by the scrape thread; written here only)
        self.frames_by_camera: Counter[str] = Counter()
        self.relayed = 0
        self.epoch_recipients: dict[str, int] = {}
        self.metrics_port = metrics_port
        self._pending_acks: list[tuple[bytes, Ack]] = []
        self._oversized_by_socket: Counter[str] = Counter()
        self._holes: dict[str, list] = {}  # camera -> [seq not written, last time it came]
        self._oldest_pending = 0.0

    # ------------------------------------------------------------------ identities
    def reload_identities(self) -> None:
        """(Re)build trusted cameras and the ZAP allowlists from certificates that verify."""
        stamp = self.home.identity_stamp()
        if stamp == self._identity_stamp:
            return
        self._identity_stamp = stamp
        ca = self.home.ca()
        self.trust = self.home.trusted_cameras(ca)
        cameras = self.home.node_identities("camera", ca)
        viewers = self.home.node_identities("viewer", ca)
        by_key = lambda ids: {z85_public(i.transport_key): i.label for i in ids}  # noqa: E731
        self.allowlist.set("ingest", by_key(cameras))
        self.allowlist.set("relay", by_key(viewers))
        self.allowlist.set("query", by_key(cameras + viewers))
        log.info(
            "identities loaded: %d camera(s), %d viewer(s), %d revoked certificate(s)",
            len(cameras),
            len(viewers),
            len(ca.revoked),
        )

    # ------------------------------------------------------------------ ingest
    def handle_ingest(self, identity: bytes, parts: list[bytes], peer: str = "") -> None:
        try:
            msg = message_from_parts(parts)
        except FormatError as exc:
            self._reject(identity, None, "malformed", str(exc))
            return
        if peer and peer != f"camera:{msg.camera_id}":
            self._reject(
                identity,
                msg,
                "wrong_camera_identity",
                f"{peer} sent a message in the name of camera {msg.camera_id!r}",
            )
            return
        try:
            if isinstance(msg, FrameMessage):
                self._ingest_frame(identity, msg, parts)
            elif isinstance(msg, KeyEnvelope):
                self._ingest_envelope(identity, msg, parts)
            else:
                self.trust.verify_gap(msg)
                self.archive.append_gap(msg)
                hole = self._holes.get(msg.camera_id)
                if hole and msg.first_seq <= hole[0] <= msg.last_seq:
                    del self._holes[msg.camera_id]  # the camera dropped it: declared
                self.accepted["gap_notice"] += 1
                log.warning(
                    "camera %s declares frames #%d..#%d dropped (%s)",
                    msg.camera_id,
                    msg.first_seq,
                    msg.last_seq,
                    msg.reason.name.lower(),
                )
                self._ack(identity, Ack(AckStatus.STORED, KIND_GAP, msg.first_seq, msg.camera_id))
        except VerificationError as exc:
            self._reject(identity, msg, exc.reason, str(exc))
        except ArchiveError as exc:
            # not acknowledged, so the camera keeps it and sends it again later
            if isinstance(msg, FrameMessage):
                hole = self._holes.setdefault(msg.camera_id, [msg.header.seq, 0.0])
                if msg.header.seq <= hole[0]:
                    hole[:] = [msg.header.seq, time.monotonic()]
            self.rejects["storage_error"] += 1
            if (
                self.rejects["storage_error"] in (1, 10, 100)
                or self.rejects["storage_error"] % 1000 == 0
            ):
                log.error(
                    "%s; not acknowledging (the camera keeps and resends it); "
                    "%d message(s) refused so far",
                    exc,
                    self.rejects["storage_error"],
                )

    def _ingest_frame(self, identity: bytes, msg: FrameMessage, parts: list[bytes]) -> None:
        with self.times.measure("verify"):
            self.trust.verify_frame(msg)
        last = self.chain.last(msg.camera_id)
        if last is not None and msg.header.seq <= last.seq:
            if self.archive.frame_digest(msg.camera_id, msg.header.seq) == msg.digest:
                self._ack(
                    identity, Ack(AckStatus.DUPLICATE, KIND_FRAME, msg.header.seq, msg.camera_id)
                )
                return
        self._hold_back(msg)
        link = self.chain.check(msg)  # raises for replay / fork
        if link == "gap":
            log.warning(
                "camera %s: frames %d..%d missing before #%d",
                msg.camera_id,
                last.seq + 1,
                msg.header.seq - 1,
                msg.header.seq,
            )
        elif link == "chain_start" and last is not None:
            log.info(
                "camera %s declared a new hash chain at #%d (restart without state)",
                msg.camera_id,
                msg.header.seq,
            )
        with self.times.measure("append"):
            self.archive.append_frame(msg)
        self.chain.accept(msg)
        if self._holes.get(msg.camera_id, [None])[0] == msg.header.seq:
            del self._holes[msg.camera_id]
        self.accepted["frame"] += 1
        self.frames_by_camera[msg.camera_id] += 1
        self.relay.send_multipart(parts, copy=False)
        self.relayed += 1
        self._ack(identity, Ack(AckStatus.STORED, KIND_FRAME, msg.header.seq, msg.camera_id))

    def _hold_back(self, msg: FrameMessage) -> None:
        """Refuse (unacknowledged) a frame that would overtake one of its camera that the
        store could not write (disk full): once a later frame is archived, the earlier one
        could never be (it would be a replay), and a smaller later frame may well fit where
        the earlier did not. The camera sends the earlier one again, in order. The wait ends
        when it is stored, declared dropped (gap notice), or no longer sent: the camera
        restarted (a new chain, or HOLE_WAIT_S without it)."""
        hole = self._holes.get(msg.camera_id)
        if hole is None or msg.header.seq <= hole[0]:
            return
        if msg.header.prev_digest != ZERO_DIGEST and time.monotonic() - hole[1] < HOLE_WAIT_S:
            raise ArchiveError(
                f"frame {msg.camera_id}#{msg.header.seq} waits for "
                f"#{hole[0]}, which could not be written yet"
            )
        log.error(
            "camera %s no longer sends frame #%d, which could not be written; going on at #%d",
            msg.camera_id,
            hole[0],
            msg.header.seq,
        )
        del self._holes[msg.camera_id]

    def _ingest_envelope(self, identity: bytes, env: KeyEnvelope, parts: list[bytes]) -> None:
        self.trust.verify_envelope(env)
        status = AckStatus.DUPLICATE
        if not self.archive.has_envelope(env.camera_id, env.body.epoch_id):
            self.archive.append_envelope(env)
            self.accepted["envelope"] += 1
            status = AckStatus.STORED
        self.epoch_recipients[env.camera_id] = len({e.recipient_key_id for e in env.body.entries})
        self.relay.send_multipart(parts, copy=False)
        self.relayed += 1
        self._ack(
            identity, Ack(status, KIND_ENVELOPE, 0, env.camera_id, epoch_id=env.body.epoch_id)
        )

    def _ack(self, identity: bytes, ack: Ack) -> None:
        if not self._pending_acks:
            self._oldest_pending = time.monotonic()
        self._pending_acks.append((identity, ack))

    def _reject(
        self, identity: bytes, msg: FrameMessage | KeyEnvelope | None, reason: str, detail: str
    ) -> None:
        self.rejects[reason] += 1
        log.warning("rejected %s: %s", reason, detail)
        if isinstance(msg, FrameMessage):
            ack = Ack(AckStatus.REJECTED, KIND_FRAME, msg.header.seq, msg.camera_id, detail)
        elif isinstance(msg, KeyEnvelope):
            ack = Ack(
                AckStatus.REJECTED, KIND_ENVELOPE, 0, msg.camera_id, detail, msg.body.epoch_id
            )
        elif isinstance(msg, GapNotice):
            ack = Ack(AckStatus.REJECTED, KIND_GAP, msg.first_seq, msg.camera_id, detail)
        else:
            return  # nothing to name in an answer
        self.ingest.send_multipart([identity, *ack.to_parts()])

    def flush(self, force: bool = False) -> None:
        """Commit the archive and send the acknowledgements it makes true."""
        if not self._pending_acks:
            return
        age_ms = (time.monotonic() - self._oldest_pending) * 1000
        if (
            not force
            and len(self._pending_acks) < self.cfg.archive.fsync_max_records
            and age_ms < self.cfg.archive.fsync_max_delay_ms
        ):
            return
        try:
            with self.times.measure("commit"):
                self.archive.commit()
        except (OSError, sqlite3.Error) as exc:
            # what was not made durable must not be acknowledged, and this process can no
            # longer tell what is: stop; a restart recovers every whole record on disk
            self._pending_acks.clear()
            self.stop.set(f"archive commit failed ({exc})")
            log.error(
                "archive commit failed (%s): stopping without acknowledging the last "
                "batch; cameras resend it after a restart",
                exc,
            )
            return
        for identity, ack in self._pending_acks:
            self.ingest.send_multipart([identity, *ack.to_parts()])
        self._pending_acks.clear()

    # ------------------------------------------------------------------ queries
    def handle_query(
        self, identity: bytes, parts: list[bytes], peer: str = "", address: str = ""
    ) -> None:
        """Answer one query (``StoreQueries``). ``peer`` is the ZAP User-Id ("role:name"),
        ``address`` the IP."""
        self.query.send_multipart([identity, *self.queries.answer(parts, peer, address)])

    def _oversized(self, socket: str, got) -> None:
        """A message above the whole-message caps: already dropped part by part; counted
        and logged (first, 10th, 100th, then every 1000th), never answered."""
        self.rejects["oversized_message"] += 1
        self._oversized_by_socket[socket] += 1
        n = self._oversized_by_socket[socket]
        if n in (1, 10, 100) or n % 1000 == 0:
            try:
                peer = got.last.get("User-Id")
            except (zmq.ZMQError, AttributeError):
                peer = "?"
            log.warning(
                "rejected oversized_message on the %s socket from %s: %d part(s), "
                "%d bytes (caps: %s); dropped unread (%d so far)",
                socket,
                peer,
                got.parts,
                got.size,
                f"{INGEST_MAX_PARTS} parts / {INGEST_MAX_BYTES >> 20} MiB"
                if socket == "ingest"
                else f"{QUERY_MAX_PARTS} parts / {QUERY_MAX_BYTES >> 10} KiB",
                n,
            )

    # ------------------------------------------------------------------ main loop
    def run(self, on_ready: Callable[[dict[str, str]], None] | None = None) -> int:
        """Serve until the stop flag is set. ``on_ready`` gets the bound endpoints once the
        sockets are bound (``--ready-file``)."""
        ctx = zmq.Context.instance()
        auth = CurveAuthenticator(ctx, self.allowlist)
        auth.start()
        keys = curve_pair(self.home.transport_key("store", "store"))
        self.ingest = ctx.socket(zmq.ROUTER)
        self.relay = ctx.socket(zmq.PUB)
        self.query = ctx.socket(zmq.ROUTER)
        for sock, domain in ((self.ingest, "ingest"), (self.relay, "relay"), (self.query, "query")):
            sock.setsockopt(zmq.LINGER, 0)
            make_server(sock, keys, domain)
        self.query.setsockopt(zmq.MAXMSGSIZE, QUERY_MAX_PART)
        self.ingest.setsockopt(zmq.MAXMSGSIZE, 256 * 2**20)
        # a burst after an outage (everything pending, sent again) stays in the cameras
        self.ingest.setsockopt(zmq.RCVHWM, INGEST_HWM)
        # live relay: a viewer that cannot keep up loses frames (the archive has them)
        # instead of the store queueing them: at most RELAY_HWM frames per viewer
        self.relay.setsockopt(zmq.SNDHWM, RELAY_HWM)
        c = self.cfg.store
        try:
            self.ingest.bind(c.ingest_bind)
            self.relay.bind(c.relay_bind)
            self.query.bind(c.query_bind)
        except zmq.ZMQError as exc:
            log.error(
                "cannot bind the store's sockets (%s); is another store running on "
                "these ports? (config %s)",
                exc,
                self.home.store_config_path,
            )
            self.archive.close()
            auth.stop()
            return 2
        m = self.cfg.metrics
        metrics = serve_metrics(
            m.host,
            m.port if self.metrics_port is None else self.metrics_port,
            "store",
            self.metric_families,
        )
        poller = zmq.Poller()
        poller.register(self.ingest, zmq.POLLIN)
        poller.register(self.query, zmq.POLLIN)
        log.info(
            "store ready: ingest %s, relay %s, query %s, archive %s, %d trusted camera(s)",
            c.ingest_bind,
            c.relay_bind,
            c.query_bind,
            self.archive.root,
            len(self.trust.camera_ids),
        )
        if on_ready is not None:
            bound = {"ingest": self.ingest, "relay": self.relay, "query": self.query}
            ready = {k: sock.getsockopt_string(zmq.LAST_ENDPOINT) for k, sock in bound.items()}
            on_ready(ready | {"metrics": metrics.address if metrics else ""})
        last_stats = last_identity_check = time.monotonic()
        last_retention = 0.0
        tick_ms = max(1, int(self.cfg.archive.fsync_max_delay_ms / 2))
        try:
            while not self.stop.is_set():
                events = dict(poller.poll(tick_ms))
                if self.ingest in events:
                    for _ in range(256):
                        try:
                            got = recv_capped(
                                self.ingest, INGEST_MAX_PARTS, INGEST_MAX_BYTES, zmq.NOBLOCK
                            )
                        except zmq.Again:
                            break
                        frames = got.frames
                        if got.oversized:
                            self._oversized("ingest", got)
                            continue
                        peer = frames[-1].get("User-Id") if len(frames) > 1 else ""
                        self.handle_ingest(frames[0].bytes, [f.bytes for f in frames[1:]], peer)
                        self.flush()
                if self.query in events:
                    got = recv_capped(self.query, QUERY_MAX_PARTS, QUERY_MAX_BYTES)
                    frames = got.frames
                    if got.oversized:
                        self._oversized("query", got)
                    elif len(frames) > 1:
                        self.handle_query(
                            frames[0].bytes,
                            [f.bytes for f in frames[1:]],
                            str(frames[-1].get("User-Id")),
                            str(frames[-1].get("Peer-Address")),
                        )
                self.flush()
                now = time.monotonic()
                if now - last_retention >= self.cfg.retention.check_every_s:
                    last_retention = now
                    self.apply_retention()
                if now - last_identity_check >= IDENTITY_CHECK_S:
                    last_identity_check = now
                    try:
                        self.reload_identities()
                    except (IdentityError, OSError) as exc:
                        self._identity_stamp = ()  # try again next time
                        log.error("cannot reload certificates (%s); keeping the ones loaded", exc)
                if now - last_stats >= STATS_EVERY_S:
                    last_stats = now
                    self._log_stats()
        finally:
            self.flush(force=True)
            try:
                self.archive.close()
            except (OSError, sqlite3.Error) as exc:
                log.error(
                    "archive could not be closed cleanly (%s); the next start recovers "
                    "every whole record",
                    exc,
                )
            self.accounts.close()
            self._log_stats()
            if self.stats_out:
                write_atomic(
                    Path(self.stats_out),
                    json.dumps(
                        {
                            "accepted": dict(self.accepted),
                            "rejects": dict(self.rejects),
                            "stages": self.times.summary(),
                        },
                        indent=2,
                    ).encode(),
                )
            for sock in (self.ingest, self.relay, self.query):
                sock.close(linger=0)
            auth.stop()
            if metrics:
                metrics.close()
            log.info("store stopped: %s", self.stop.reason or "error")
        return 0

    def apply_retention(self) -> None:
        r = self.cfg.retention
        self.flush(force=True)
        try:
            deleted = self.archive.apply_retention(
                r.max_age_days * 86400,
                int(r.max_gb_per_camera * 1e9),
                int(r.min_free_mb * 2**20),
                time.time_ns() // 1000,
            )
        except (OSError, sqlite3.Error, ArchiveError) as exc:
            log.error("retention failed: %s", exc)
            return
        if deleted:
            log.info(
                "retention deleted %d segment(s): %s",
                len(deleted),
                ", ".join(f"{p.parent.name}/{p.name}" for p in deleted),
            )

    def metric_families(self) -> list:
        """What the Prometheus endpoint shows (called in its thread, at each scrape)."""
        segments = self.archive.root / "segments"
        used = 0
        if segments.is_dir():
            for camera_dir in os.scandir(segments):
                if camera_dir.is_dir():
                    used += sum(
                        f.stat().st_size for f in os.scandir(camera_dir.path) if f.is_file()
                    )
        accepted = dict(self.accepted)
        return [
            counter(
                "veilcam_store_frames_archived_total",
                "Frames verified, archived and acknowledged, by camera.",
                self.frames_by_camera,
                "camera",
            ),
            counter(
                "veilcam_store_messages_accepted_total",
                "Messages verified and archived, by kind (frame, envelope, gap_notice).",
                {k: accepted.get(k, 0) for k in ("frame", "envelope", "gap_notice")},
                "kind",
            ),
            counter(
                "veilcam_store_messages_rejected_total",
                "Messages refused, by reason (bad signature, replay, malformed, "
                "storage_error, ...).",
                self.rejects,
                "reason",
            ),
            counter(
                "veilcam_store_messages_relayed_total",
                "Verified messages published to live viewers.",
                self.relayed,
            ),
            gauge(
                "veilcam_store_pending_acks",
                "Messages archived but not yet fsynced and acknowledged.",
                len(self._pending_acks),
            ),
            gauge(
                "veilcam_store_epoch_recipients",
                "Recipients of the current key epoch, by camera.",
                self.epoch_recipients,
                "camera",
            ),
            gauge(
                "veilcam_store_trusted_cameras",
                "Cameras with a valid certificate.",
                len(self.trust.camera_ids),
            ),
            gauge("veilcam_store_archive_bytes", "Bytes of segment files in the archive.", used),
            gauge(
                "veilcam_store_disk_free_bytes",
                "Free bytes on the archive's file system.",
                shutil.disk_usage(self.archive.root).free,
            ),
            stage_latency("veilcam_store", self.times),
        ]

    def _log_stats(self) -> None:
        rejects = ", ".join(f"{k}={v}" for k, v in sorted(self.rejects.items())) or "none"
        log.info(
            "store: %d frame(s) and %d key envelope(s) archived; rejected: %s",
            self.accepted["frame"],
            self.accepted["envelope"],
            rejects,
        )
