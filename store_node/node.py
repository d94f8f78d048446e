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
from veilcam.common import deployment
from veilcam.common.config import StoreConfig
from veilcam.common.deployment import Trust, TrustWatcher
from veilcam.common.errors import ArchiveError, IdentityError, VeilcamError
from veilcam.common.format import Ack
from veilcam.common.home import Home
from veilcam.common.lifecycle import StopFlag
from veilcam.common.metrics import counter, gauge, serve_metrics, stage_latency
from veilcam.common.query import MAX_FIELD_BYTES, MAX_REQUEST_BYTES, MAX_REQUEST_FRAMES
from veilcam.common.secretfiles import write_atomic
from veilcam.common.signing import RejectReason
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
from veilcam.store_node.index import open_index
from veilcam.store_node.ingest import CAMERA_NOT_OWNED, Ingest, IngestOutcome
from veilcam.store_node.objectstore import ObjectStore
from veilcam.store_node.queries import StoreQueries
from veilcam.store_node.uploader import Uploader

log = logging.getLogger("veilcam.store")

STATS_EVERY_S = 30.0
UPLOAD_POLL_S = 1.0  # how often closed segments are queued for, and recorded after, upload
INGEST_HWM = 20  # messages read ahead per camera: the rest waits in its queue and spool
RELAY_HWM = 100  # frames queued per live viewer (bench/load.py: 1000 kept 130 MB each)
# Whole-message caps (ZeroMQ's MAXMSGSIZE limits each part, not their number): a message
# above them is received part by part and dropped, counted as rejected "oversized_message".
INGEST_MAX_PARTS = 1 + 4 + 256  # routing id, topic, header, signature, image, 256 zones
INGEST_MAX_BYTES = 256 * 2**20
QUERY_MAX_PARTS = 1 + MAX_REQUEST_FRAMES  # routing id + a request (common/query.py)
QUERY_MAX_BYTES = MAX_REQUEST_BYTES
QUERY_MAX_PART = MAX_FIELD_BYTES  # MAXMSGSIZE of the query socket (a keystore is ~3 KB)


# every reason a message can be refused for, exported at 0 before the first one so that
# alerts on "rising" have a series to match (log-in refusals are counted apart)
MESSAGE_REJECT_REASONS = [
    r for r in RejectReason if r not in (RejectReason.LOGIN_FAILED, RejectReason.LOGIN_RATE_LIMITED)
]


class StoreBindError(VeilcamError):
    """The store's sockets cannot be bound (another store on these ports, a bad address)."""


class StoreNode:
    """The store's loop: owns the sockets, the commit timing and the periodic work (retention,
    certificate reload, stats). Decisions live in ``Ingest`` (what to archive, answer and
    relay) and ``StoreQueries`` (what to answer), which take and return values."""

    def __init__(
        self,
        home: Home,
        stop: StopFlag | None = None,
        stats_out: str | None = None,
        metrics_port: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.home = home
        self.stats_out = stats_out
        self.clock = clock
        self.times = StageTimes()
        self.cfg = deployment.store_config(home)
        self.allowlist = Allowlist()
        self.watcher = TrustWatcher(home, on_change=self._apply_trust, clock=clock)
        self.accounts = AccountStore(home.accounts_path, deployment.account_secret(home))
        self.limiter = LoginLimiter()
        self.objects, self.uploader = None, None
        if self.cfg.archive.backend == "s3":
            self.objects = _open_bucket(self.cfg, home)
        archive_dir = deployment.archive_dir(home, self.cfg)
        index = None
        if self.cfg.archive.index == "postgres":  # shared with other stores
            index = open_index(self.cfg, archive_dir, home.root)
        self.owned = frozenset(self.cfg.store.cameras)
        self.archive = Archive(
            archive_dir,
            self.cfg.archive.segment_max_bytes,
            objects=self.objects,
            index=index,
            cameras=self.owned,
        )
        if self.objects is not None:
            from veilcam.store_node.objectstore import lock_policy

            s3 = self.cfg.archive.s3
            self.uploader = Uploader(
                self.archive,
                self.objects,
                lock_policy(s3, self.cfg.retention.max_age_days),
                s3.retry_max_s,
            )
        self.stop = stop or StopFlag()
        self.rejects: Counter[str] = Counter()
        self.ingest_logic = Ingest(
            self.archive,
            self.watcher.current.cameras,
            self.rejects,
            self.times,
            clock,
            owns=self._owns if self.owned else None,
        )
        self.queries = StoreQueries(
            home,
            self.archive,
            self.accounts,
            AccountGate(self.accounts, self.limiter),
            self.rejects,
        )
        self._apply_trust(self.watcher.current)
        self.relayed = 0
        self.metrics_port = metrics_port
        self._pending_acks: list[tuple[bytes, Ack]] = []
        self._oversized_by_socket: Counter[str] = Counter()
        self._oldest_pending = 0.0

    @property
    def trust(self):
        return self.watcher.current.cameras

    def _owns(self, camera_id: str) -> str | None:
        """None when this store archives ``camera_id`` (``store.cameras``), else why not."""
        if camera_id in self.owned:
            return None
        return (
            f"this store does not own camera {camera_id!r} (its store.cameras: "
            f"{', '.join(sorted(self.owned))}); point the camera at the store that owns it"
        )

    # ------------------------------------------------------------------ identities
    def _apply_trust(self, trust: Trust) -> None:
        """Trusted cameras and the ZAP allowlists from the certificates that verify now."""
        cameras = deployment.node_identities(self.home, "camera", trust.ca)
        viewers = deployment.node_identities(self.home, "viewer", trust.ca)
        by_key = lambda ids: {z85_public(i.transport_key): i.label for i in ids}  # noqa: E731
        self.allowlist.set("ingest", by_key(cameras))
        self.allowlist.set("relay", by_key(viewers))
        self.allowlist.set("query", by_key(cameras + viewers))
        if hasattr(self, "ingest_logic"):
            self.ingest_logic.trust = trust.cameras
        log.info(
            "identities loaded: %d camera(s), %d viewer(s), %d revoked certificate(s)",
            len(cameras),
            len(viewers),
            len(trust.ca.revoked),
        )

    # ------------------------------------------------------------------ ingest
    def handle_ingest(self, identity: bytes, parts: list[bytes], peer: str = "") -> None:
        """One message from a camera: decided by ``Ingest``, answered and relayed here."""
        outcome: IngestOutcome = self.ingest_logic.take(parts, peer)
        if outcome.reply_now is not None:
            self.ingest.send_multipart([identity, *outcome.reply_now.to_parts()])
        if outcome.relay:
            self.relay.send_multipart(parts, copy=False)
            self.relayed += 1
        if outcome.reply_after_commit is not None:
            if not self._pending_acks:
                self._oldest_pending = self.clock()
            self._pending_acks.append((identity, outcome.reply_after_commit))

    def flush(self, force: bool = False) -> None:
        """Commit the archive and send the acknowledgements it makes true."""
        if not self._pending_acks:
            return
        age_ms = (self.clock() - self._oldest_pending) * 1000
        if (
            not force
            and len(self._pending_acks) < self.cfg.archive.fsync_max_records
            and age_ms < self.cfg.archive.fsync_max_delay_ms
        ):
            return
        try:
            with self.times.measure("commit"):
                self.archive.commit()
        except (OSError, sqlite3.Error, ArchiveError) as exc:
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
        self.rejects[RejectReason.OVERSIZED_MESSAGE] += 1
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
    def run(self, on_ready: Callable[[dict[str, str]], None] | None = None) -> None:
        """Serve until the stop flag is set. ``on_ready`` gets the bound endpoints once the
        sockets are bound (``--ready-file``). Raises ``StoreBindError`` when the sockets
        cannot be bound."""
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        auth = CurveAuthenticator(ctx, self.allowlist)
        auth.start()
        try:
            self._bind(ctx)
        except StoreBindError:
            self.archive.close()
            auth.stop()
            raise
        m = self.cfg.metrics
        metrics = serve_metrics(
            m.host,
            m.port if self.metrics_port is None else self.metrics_port,
            "store",
            self.metric_families,
        )
        c = self.cfg.store
        log.info(
            "store ready: ingest %s, relay %s, query %s, archive %s%s%s, %d trusted camera(s)%s",
            c.ingest_bind,
            c.relay_bind,
            c.query_bind,
            self.archive.root,
            f" (closed segments to {self.objects.describe()})" if self.objects else "",
            f", shared index {self.archive.index.where}" if self.archive.index.shared else "",
            len(self.trust.camera_ids),
            f", owning {', '.join(sorted(self.owned))}" if self.owned else "",
        )
        if self.uploader is not None:
            self.uploader.start()
        if on_ready is not None:
            bound = {"ingest": self.ingest, "relay": self.relay, "query": self.query}
            ready = {k: sock.getsockopt_string(zmq.LAST_ENDPOINT) for k, sock in bound.items()}
            on_ready(ready | {"metrics": metrics.address if metrics else ""})
        try:
            self._serve()
        finally:
            self._shut_down()
            auth.stop()
            if metrics:
                metrics.close()
            log.info("store stopped: %s", self.stop.reason or "error")

    def _bind(self, ctx: zmq.Context) -> None:
        keys = curve_pair(deployment.transport_key(self.home, "store", "store"))
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
            for sock in (self.ingest, self.relay, self.query):
                sock.close(linger=0)
            raise StoreBindError(
                f"cannot bind the store's sockets ({exc}); is another store running on "
                f"these ports? (config {self.home.store_config_path})"
            ) from None

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.ingest, zmq.POLLIN)
        poller.register(self.query, zmq.POLLIN)
        last_stats = self.clock()
        last_retention = last_upload = -float("inf")
        tick_ms = max(1, int(self.cfg.archive.fsync_max_delay_ms / 2))
        while not self.stop.is_set():
            events = dict(poller.poll(tick_ms))
            if self.ingest in events:
                self._read_ingest()
            if self.query in events:
                self._read_query()
            self.flush()
            now = self.clock()
            if now - last_retention >= self.cfg.retention.check_every_s:
                last_retention = now
                self.apply_retention()
            if self.uploader is not None and now - last_upload >= UPLOAD_POLL_S:
                last_upload = now
                self._poll_uploads(self.uploader)
            try:
                self.watcher.poll()  # renewed or revoked certificates
            except IdentityError as exc:
                log.error("cannot reload certificates (%s); keeping the ones loaded", exc)
            if now - last_stats >= STATS_EVERY_S:
                last_stats = now
                self._log_stats()

    def _read_ingest(self) -> None:
        for _ in range(256):
            try:
                got = recv_capped(self.ingest, INGEST_MAX_PARTS, INGEST_MAX_BYTES, zmq.NOBLOCK)
            except zmq.Again:
                return
            frames = got.frames
            if got.oversized:
                self._oversized("ingest", got)
                continue
            peer = str(frames[-1].get("User-Id")) if len(frames) > 1 else ""
            self.handle_ingest(frames[0].bytes, [f.bytes for f in frames[1:]], peer)
            self.flush()

    def _read_query(self) -> None:
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

    def _poll_uploads(self, uploader: Uploader) -> None:
        """Record confirmed uploads (committing pending appends first, whose acknowledgements
        go out with it) and queue segments that closed."""
        if uploader.has_results():
            self.flush(force=True)
        try:
            uploader.poll()
        except (OSError, sqlite3.Error, ArchiveError) as exc:
            log.error("recording segment uploads failed: %s", exc)

    def _shut_down(self) -> None:
        if self.uploader is not None:
            self.uploader.stop()
        self.flush(force=True)
        try:
            self.archive.close()
        except (OSError, sqlite3.Error, ArchiveError) as exc:
            log.error(
                "archive could not be closed cleanly (%s); the next start recovers "
                "every whole record",
                exc,
            )
        self.accounts.close()
        self._log_stats()
        if self.stats_out:
            doc = {
                "accepted": dict(self.ingest_logic.accepted),
                "rejects": dict(self.rejects),
                "stages": self.times.summary(),
            }
            write_atomic(Path(self.stats_out), json.dumps(doc, indent=2).encode())
        for sock in (self.ingest, self.relay, self.query):
            sock.close(linger=0)

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
        ingest = self.ingest_logic
        accepted = dict(ingest.accepted)
        return [
            counter(
                "veilcam_store_frames_archived_total",
                "Frames verified, archived and acknowledged, by camera.",
                ingest.frames_by_camera,
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
                {r.value: 0 for r in MESSAGE_REJECT_REASONS}
                | ({CAMERA_NOT_OWNED: 0} if self.owned else {})
                | dict(self.rejects),
                "reason",
            ),
            counter(
                "veilcam_store_login_refusals_total",
                "Log-ins and password changes refused, by reason (login_failed: wrong user "
                "name or password; login_rate_limited: too many failures). Kept apart from "
                "rejected messages: users mistyping is not tampering.",
                {
                    r: self.queries.login_refusals.get(r, 0)
                    for r in ("login_failed", "login_rate_limited")
                },
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
                ingest.epoch_recipients,
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
            *self._upload_metrics(),
        ]

    def _upload_metrics(self) -> list:
        """The object store's figures (archive.backend = "s3" only)."""
        up = self.uploader
        if up is None:
            return []
        return [
            gauge(
                "veilcam_store_upload_backlog_segments",
                "Closed segments on local disk waiting for the object store.",
                up.backlog_segments,
            ),
            gauge(
                "veilcam_store_upload_backlog_bytes",
                "Bytes of closed segments waiting for the object store.",
                up.backlog_bytes,
            ),
            gauge(
                "veilcam_store_upload_lag_seconds",
                "Age of the oldest closed segment not yet in the object store (0: none).",
                up.lag_s,
            ),
            counter(
                "veilcam_store_uploads_total", "Segments uploaded and confirmed.", up.uploads_total
            ),
            counter(
                "veilcam_store_upload_errors_total",
                "Failed upload attempts (each retried).",
                up.errors_total,
            ),
            gauge(
                "veilcam_store_object_store_up",
                "1 when the last request to the object store succeeded, 0 when it failed.",
                0 if up.up is False else 1,
            ),
        ]

    def _log_stats(self) -> None:
        rejects = ", ".join(f"{k}={v}" for k, v in sorted(self.rejects.items())) or "none"
        log.info(
            "store: %d frame(s) and %d key envelope(s) archived; rejected: %s",
            self.ingest_logic.accepted["frame"],
            self.ingest_logic.accepted["envelope"],
            rejects,
        )


def _open_bucket(cfg: StoreConfig, home: Home) -> ObjectStore:
    """The object store of ``archive.backend = "s3"``, checked: a bucket that is missing, or
    without Object Lock when the config asks for it, stops the start with a clear error; an
    object store that does not answer does not (segments wait on local disk)."""
    from veilcam.store_node.objectstore import ObjectStoreUnreachable, open_object_store

    s3 = cfg.archive.s3
    objects = open_object_store(s3, home.root)
    try:
        objects.check_bucket(lock_required=s3.lock_mode != "off")
    except ObjectStoreUnreachable as exc:
        log.warning("%s; starting anyway: closed segments wait on local disk", exc)
    return objects
