"""The camera node's main loop: capture → zones → protect → publish, one frame at a time."""

from __future__ import annotations

import enum
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zmq
from veilcam.camera_node.chainstate import ChainStateFile
from veilcam.camera_node.detectsource import DetectSource
from veilcam.camera_node.facescan import create_scanner
from veilcam.camera_node.grantsync import GrantSync
from veilcam.camera_node.protect import (
    EncodedFrame,
    EncodeSettings,
    Epoch,
    VideoEncoders,
    encode_frame_h264,
    protect_frame,
    seal_frame_h264,
    sign_gap_notice,
    sign_offline_notice,
)
from veilcam.camera_node.publisher import Publisher, spool_dir_for
from veilcam.camera_node.redact import make_redactor
from veilcam.camera_node.runlock import CameraLock
from veilcam.camera_node.sources import CapturedFrame, FrameSource
from veilcam.camera_node.videoenc import H264Settings
from veilcam.camera_node.zonefinder import ZoneFinder
from veilcam.camera_node.zones import Zone, resolve_static_zones
from veilcam.common import deployment
from veilcam.common.config import CameraConfig
from veilcam.common.errors import VeilcamError
from veilcam.common.format import FrameMessage, KemSuite
from veilcam.common.grants import GrantBook
from veilcam.common.home import Home
from veilcam.common.imagecodec import ZONE_CODECS
from veilcam.common.keywrap import Grant
from veilcam.common.lifecycle import StopFlag
from veilcam.common.metrics import (
    MetricsServer,
    counter,
    gauge,
    serve_metrics,
    stage_latency,
    with_labels,
)
from veilcam.common.queryclient import StoreQueryClient
from veilcam.common.secretfiles import write_atomic
from veilcam.common.signing import load_signing_key
from veilcam.common.stagetimer import StageTimes
from veilcam.common.transport import curve_pair

log = logging.getLogger("veilcam.camera")

STATS_EVERY_S = 10.0
SIGNAL_DRAIN_S = 3.0


class RunOutcome(enum.Enum):
    """How a camera run ended (the CLI maps it to the process exit code)."""

    COMPLETE = "every message acknowledged"
    UNACKNOWLEDGED = "messages left unacknowledged by the store"
    REJECTED = "the store refused messages"


@dataclass
class _Links:
    """What a run talks through: owned by run(), closed when it ends."""

    publisher: Publisher
    grantsync: GrantSync
    metrics: MetricsServer | None


@dataclass
class CameraStats:
    captured: int = 0
    published: int = 0
    dropped_backpressure: int = 0
    epochs: int = 0
    bytes_sent: int = 0


class CameraNode:
    def __init__(
        self,
        home: Home,
        cfg: CameraConfig,
        source_override: str | None = None,
        loop_override: bool | None = None,
        max_frames: int | None = None,
        stop: StopFlag | None = None,
        stats_out: str | None = None,
        metrics_port: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock  # monotonic seconds: key rotation and stats intervals
        self.stats_out = stats_out
        self.metrics_port = cfg.metrics.port if metrics_port is None else metrics_port
        self.recipients = 0
        self.home, self.cfg = home, cfg
        self.camera_id = cfg.camera.id
        self.lock = CameraLock(home.state_dir / f"camera-{self.camera_id}.lock", self.camera_id)
        self.stop = stop or StopFlag()  # before the source: a stop ends its waits and retries
        try:
            self._setup(home, cfg, source_override, loop_override)
        except BaseException:
            for part in ("finder", "detect", "source"):  # whatever _setup had started
                if getattr(self, part, None) is not None:
                    getattr(self, part).close()
            self.lock.release()
            raise
        self.max_frames = max_frames
        self.stats = CameraStats()
        self.times = StageTimes()
        self.epoch: Epoch | None = None
        self.epoch_started = 0.0  # clock() when the current epoch began
        self.submitted = 0
        # (seq, capture µs) of the newest frame published in this run: where an outage of
        # the source begins, for the offline notice
        self.last_published: tuple[int, int] | None = None
        self.offline_notices = 0
        # H.264: the frame encoded but not yet sealed and sent (see _publish)
        self._held: tuple[CapturedFrame, EncodedFrame] | None = None

    def _setup(
        self, home: Home, cfg: CameraConfig, source_override: str | None, loop_override: bool | None
    ) -> None:
        """Keys, source, detector and chain state (under the camera lock)."""
        self.signing_key = load_signing_key(home.camera_key_path(self.camera_id))
        self.ca = deployment.load_ca(home)
        self.transport_keys = curve_pair(deployment.transport_key(home, "camera", self.camera_id))
        self.store_key = deployment.store_identity(home, self.ca).transport_key
        self.suite = (
            KemSuite.MLKEM768X25519_HKDF_SHA256_AES256GCM
            if cfg.keys.post_quantum
            else KemSuite.X25519_HKDF_SHA256_AES256GCM
        )
        spec = source_override if source_override is not None else cfg.camera.source
        kind_is_file = not spec.strip().isdigit() and "://" not in spec
        if kind_is_file:
            spec = str(home.resolve(spec))
        self.source = FrameSource(
            spec,
            loop=cfg.camera.loop if loop_override is None else loop_override,
            pace=cfg.camera.pace,
            fps=cfg.camera.fps,
            max_width=cfg.camera.max_width,
            rtsp_transport=cfg.camera.rtsp_transport,
            open_timeout_s=cfg.camera.open_timeout_s,
            read_timeout_s=cfg.camera.read_timeout_s,
            reconnect_max_s=cfg.camera.reconnect_max_s,
            should_stop=self.stop.is_set,
        )
        self.detect = self._detect_source(home, cfg, loop_override)
        # Two threads do the work: detection and publishing, a core each on a small machine.
        # OpenCV's own worker threads inside each call only make them fight over the cores.
        cv2.setNumThreads(1)
        self.scanner = create_scanner(cfg.faces)
        self.detector = self.scanner.coarse if self.scanner else None
        self.finder: ZoneFinder[CapturedFrame] = ZoneFinder(
            self.scanner,
            cfg.faces.margin,
            cfg.faces.hold_frames,
            cfg.faces.max_lag_ms / 1000,
            cfg.faces.detect_share,
        )
        self.redactor = make_redactor(cfg.redaction.style, cfg.redaction.pixelate_blocks)
        self.settings = EncodeSettings(
            cfg.encoding.jpeg_quality,
            ZONE_CODECS[cfg.encoding.zone_codec],
            cfg.encoding.zone_jpeg_quality,
        )
        # H.264 mode (format version 2): encoders made at the first frame, for its size
        enc = cfg.encoding
        self.video: VideoEncoders | None = (
            VideoEncoders(
                H264Settings(
                    enc.keyframe_s,
                    enc.h264_crf,
                    enc.h264_max_kbps,
                    enc.h264_preset,
                    enc.zone_crf,
                    enc.h264_threads,
                    enc.zone_preset,
                ),
                self.source.fps,
            )
            if enc.video == "h264"
            else None
        )
        self.chain = ChainStateFile(home.state_dir / f"camera-{self.camera_id}.json")

    def _detect_source(
        self, home: Home, cfg: CameraConfig, loop_override: bool | None
    ) -> DetectSource | None:
        """The configured low-resolution stream to detect faces on, if any."""
        spec = cfg.camera.detect_source
        if not spec or not cfg.faces.enabled:
            return None
        if not spec.strip().isdigit() and "://" not in spec:
            spec = str(home.resolve(spec))
        return DetectSource(
            spec,
            tolerance_s=cfg.camera.detect_tolerance_ms / 1000,
            loop=cfg.camera.loop if loop_override is None else loop_override,
            rtsp_transport=cfg.camera.rtsp_transport,
            open_timeout_s=cfg.camera.open_timeout_s,
            read_timeout_s=cfg.camera.read_timeout_s,
            reconnect_max_s=cfg.camera.reconnect_max_s,
            should_stop=self.stop.is_set,
        )

    def _start_epoch(self, publisher: Publisher, grants: list[Grant]) -> None:
        self.epoch, self.epoch_started = Epoch.new(), self.clock()
        if self.suite == KemSuite.MLKEM768X25519_HKDF_SHA256_AES256GCM:
            for g in grants:
                if g.recipient.pq_public_key is None:
                    log.warning(
                        "user %s has no post-quantum key: left out of this epoch", g.recipient.name
                    )
        envelope = self.epoch.envelope(
            self.signing_key, self.camera_id, self.chain.next_seq, grants, self.suite
        )
        publisher.send(envelope)
        self.stats.epochs += 1
        self.recipients = len(grants)
        if grants:
            log.info(
                "new content-key epoch %s for %d recipient(s)",
                self.epoch.epoch_id.hex()[:8],
                len(grants),
            )
        else:
            log.warning(
                "new content-key epoch %s has NO recipients: zone pixels of this epoch "
                "can never be unlocked (grant a user this camera: 'veilcam user add' on a "
                "one-machine home, or 'veilcam grant NAME --camera %s' on the admin home "
                "with the grant file copied to the store)",
                self.epoch.epoch_id.hex()[:8],
                self.camera_id,
            )

    def run(self, on_ready: Callable[[dict[str, str]], None] | None = None) -> RunOutcome:
        """Run until the source ends, max_frames, or a stop signal; the CLI turns the outcome
        into an exit code. ``on_ready`` is called once the first key envelope is sent
        (``--ready-file``)."""
        links = self._open_links()
        try:
            self._log_start()
            if not links.grantsync.fetch_now(timeout_s=3.0):
                log.warning(
                    "store at %s did not answer for grants; using the %d cached grant(s)",
                    self.cfg.store.query,
                    len(links.grantsync.grants()),
                )
            if not self.chain.restored:
                self._resume_chain()
            self._start_epoch(links.publisher, links.grantsync.grants())
            if on_ready is not None:
                on_ready(
                    {
                        "camera": self.camera_id,
                        "ingest": self.cfg.store.ingest,
                        "metrics": links.metrics.address if links.metrics else "",
                    }
                )
            self._capture_loop(links)
            # frames already captured are evidence: publish them (covered whole if late)
            for done, image, zones in self.finder.drain():
                self._publish(links, done, image, zones)
            self._flush(links)
            if not self.source.up:  # stopped while the source is down: declared until now
                self._declare_offline(links.publisher, time.time_ns() // 1000, None)
            return self._drain(links.publisher)
        finally:
            self._close(links)

    def _resume_chain(self) -> None:
        """No chain state here (a first run, or the state folder was lost): continue after
        the last frame the store holds, since it refuses numbers it has seen as replays. If
        the store cannot say, start above any number a camera could have used by now: the
        wall clock in milliseconds (frame rates stay far below 1000 per second)."""
        try:
            client = StoreQueryClient.connect(
                self.home, self.cfg.store.query, keys=self.transport_keys, timeout_s=3.0
            )
            try:
                last = client.chain(self.camera_id).last_seq
            finally:
                client.close()
        except VeilcamError as exc:
            floor = time.time_ns() // 1_000_000
            log.warning(
                "no chain state for camera %s and the store did not say where its chain "
                "ended (%s): starting at #%d (the clock in ms), above any number used before",
                self.camera_id,
                exc,
                floor,
            )
            self.chain.resume_after(floor - 1)
            return
        floor = time.time_ns() // 1_000_000
        if last >= floor:
            # no camera numbers past the clock in ms (30 frames a second from any start
            # below it stay below it): a store saying so is wrong, or lying to push this
            # camera's numbers to the end of their range; start from the clock instead
            log.error(
                "the store says camera %s's chain ended at #%d, beyond any number a camera "
                "can have used; ignoring it and starting at #%d (the clock in ms)",
                self.camera_id,
                last,
                floor,
            )
            self.chain.resume_after(floor - 1)
        elif last >= 0:
            log.info(
                "no chain state for camera %s: the store holds frames up to #%d; "
                "a new chain starts at #%d",
                self.camera_id,
                last,
                last + 1,
            )
            self.chain.resume_after(last)

    def _open_links(self) -> _Links:
        """The sockets and threads of a run: publisher, grant sync and metrics endpoint."""
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        link = self.cfg.store
        publisher = Publisher(
            ctx,
            link.ingest,
            self.transport_keys,
            self.store_key,
            spool_dir_for(self.home.state_dir, self.camera_id),
            link.max_in_flight,
            int(link.spool_max_mb * 2**20),
            link.drop_policy,
        )
        publisher.on_frames_dropped = lambda seqs: self._declare_gap(publisher, seqs)
        grantsync = GrantSync(
            ctx,
            link.query,
            self.transport_keys,
            self.store_key,
            GrantBook(self.ca, self.camera_id),
            self.home.state_dir / f"grants-{self.camera_id}.json",
            link.grants_poll_s,
        )
        metrics = serve_metrics(
            self.cfg.metrics.host,
            self.metrics_port,
            f"camera {self.camera_id}",
            lambda: self.metric_families(publisher),
        )
        return _Links(publisher, grantsync, metrics)

    def _log_start(self) -> None:
        log.info(
            "camera %s: source %s (%s), %.1f fps, faces: %s%s, store %s",
            self.camera_id,
            self.source.display,  # never the URL itself: it may carry the camera's password
            self.source.kind,
            self.source.fps,
            self.detector.name if self.detector else "off",
            f" on {self.detect.display}" if self.detect else "",
            self.cfg.store.ingest,
        )

    def _capture_loop(self, links: _Links) -> None:
        """Capture and submit each frame; publish each one as soon as its zones are known."""
        static_cache: dict[tuple[int, int], list[Zone]] = {}
        last_stats = self.clock()
        frames = self.source.frames()
        carry_loss = False  # a frame that followed an outage was dropped: mark the next one
        while True:
            t0 = time.perf_counter()
            captured = next(frames, None)
            if captured is None:
                self.stop.set("end of source")
                return
            self.times.add("capture", time.perf_counter() - t0 - captured.waited_s)
            if self.stop.is_set():
                return
            self.stats.captured += 1
            links.publisher.poll()
            # taken for every captured frame, so a file sub-stream stays in step with its main
            sub = self.detect.take(captured) if self.detect is not None else None
            if carry_loss and not captured.after_loss:
                captured = replace(captured, after_loss=True)
            if not links.publisher.has_room:
                self.stats.dropped_backpressure += 1
                carry_loss = captured.after_loss
                continue
            carry_loss = False
            image = captured.image
            size = (image.shape[1], image.shape[0])
            if size not in static_cache:
                static_cache[size] = resolve_static_zones(self.cfg.zones, *size)
            with self.times.measure("zones"):
                self.finder.submit(image, static_cache[size], captured, captured.after_loss, sub)
            self.submitted += 1
            # publish as soon as the detector is done, but be back for the next capture
            capture_work_s = time.perf_counter() - t0 - captured.waited_s
            wait_until = self.clock() + 0.3 / self.source.fps - capture_work_s
            for done, ready_image, zones in self.finder.ready(wait_until):
                self._publish(links, done, ready_image, zones)
            if self.max_frames is not None and self.submitted >= self.max_frames:
                self.stop.set(f"reached --max-frames {self.max_frames}")
                return
            if self.clock() - last_stats >= STATS_EVERY_S:
                last_stats = self.clock()
                self._log_stats(links.publisher)

    def _drain(self, publisher: Publisher) -> RunOutcome:
        """Wait for the store to acknowledge what was sent; say how the run ended."""
        drain_s = self.cfg.store.drain_timeout_s
        if self.stop.reason.startswith("signal"):
            drain_s = min(drain_s, SIGNAL_DRAIN_S)  # asked to stop: don't hang on a dead store
        if not publisher.drain(drain_s):
            log.error(
                "%d message(s) not acknowledged by the store at %s within %.0f s",
                len(publisher.pending),
                self.cfg.store.ingest,
                drain_s,
            )
            return RunOutcome.UNACKNOWLEDGED
        return RunOutcome.COMPLETE if publisher.rejected == 0 else RunOutcome.REJECTED

    def _close(self, links: _Links) -> None:
        self.chain.close_clean()
        self._log_stats(links.publisher)
        if self.stats_out:
            self._write_stats(links.publisher)
        if links.metrics:
            links.metrics.close()
        links.publisher.close()
        links.grantsync.close()
        self.finder.close()
        if self.detect is not None:
            self.detect.close()
        if self.video is not None:
            self.video.shutdown()
        self.source.close()
        self.lock.release()
        log.info("camera %s stopped: %s", self.camera_id, self.stop.reason or "error")

    def _publish(
        self, links: _Links, captured: CapturedFrame, image: np.ndarray, zones: list[Zone]
    ) -> None:
        """Protect, sign and send one frame whose zones are known (in capture order).

        H.264: the frame is encoded now and sealed (zone streams awaited, encrypted, signed,
        sent) at the next call, after that frame's public AU is encoded: the zone worker
        finishes this frame's streams meanwhile instead of the loop waiting for them. One
        frame more of latency (33 ms at 30 fps); 1080p camera alone 24.8 -> 27.9 fps
        (docs/PERFORMANCE.md).
        ``_flush`` sends the frame held at the end."""
        if self.video is None:  # JPEG (version 1): in one step
            protect = functools.partial(
                protect_frame, image, zones, settings=self.settings, redactor=self.redactor
            )
            self._send_frame(links, captured, protect)
            return
        encoded = encode_frame_h264(
            image, zones, redactor=self.redactor, video=self.video, times=self.times
        )
        self._flush(links)  # the previous frame, its zone streams done meanwhile
        self._held = (captured, encoded)

    def _seal(self, encoded: EncodedFrame, **chain: Any) -> FrameMessage:
        assert self.video is not None
        return seal_frame_h264(encoded, video=self.video, **chain)

    def _flush(self, links: _Links) -> None:
        """Seal and send the H.264 frame ``_publish`` holds, if any."""
        held, self._held = self._held, None
        if held is not None:
            self._send_frame(links, held[0], functools.partial(self._seal, held[1]))

    def _send_frame(
        self, links: _Links, captured: CapturedFrame, protect: Callable[..., FrameMessage]
    ) -> None:
        """Give the frame its place in the chain and its key epoch, sign it (``protect``, given
        the chain's keyword arguments) and send it."""
        publisher, grantsync = links.publisher, links.grantsync
        if grantsync.poll():
            log.info("grants changed: starting a new key epoch")
            self._start_epoch(publisher, grantsync.grants())
        elif (
            self.epoch is None or self.clock() - self.epoch_started >= self.cfg.keys.rotate_seconds
        ):
            self._start_epoch(publisher, grantsync.grants())
        assert self.epoch is not None
        seq = self.chain.next_seq
        if captured.after_loss:  # before this frame in the chain's order
            self._declare_offline(publisher, captured.capture_time_us, seq)
        # a new epoch needs no keyframe: each header names its epoch, the streams go on
        msg = protect(
            camera_id=self.camera_id,
            seq=seq,
            capture_time_us=captured.capture_time_us,
            epoch=self.epoch,
            prev_digest=self.chain.prev_digest,
            signing_key=self.signing_key,
            times=self.times,
        )
        with self.times.measure("publish"):
            publisher.send(msg)
        self.stats.bytes_sent += sum(len(p) for p in msg.body_parts())
        self.chain.advance(seq, msg.digest)
        self.stats.published += 1
        self.last_published = (seq, captured.capture_time_us)

    def _declare_offline(self, publisher: Publisher, to_us: int, after_seq: int | None) -> None:
        """Sign and send the notice that the source delivered nothing since the last frame
        published in this run (nothing to declare before the first: the archive shows no
        frames of this run there, and the time before a start is not the camera's to
        declare). ``after_seq``: the frame that follows, None at a stop."""
        if self.last_published is None:
            return
        before_seq, from_us = self.last_published
        notice = sign_offline_notice(
            self.signing_key, self.camera_id, before_seq, from_us, max(to_us, from_us), after_seq
        )
        publisher.send(notice)
        self.offline_notices += 1
        log.warning("declared to the store: %s", notice.describe())

    def _declare_gap(self, publisher: Publisher, seqs: list[int]) -> None:
        """Sign and send a notice for each run of frames the spool had to drop."""
        seqs = sorted(seqs)
        start = prev = seqs[0]
        for seq in [*seqs[1:], None]:
            if seq is not None and seq == prev + 1:
                prev = seq
                continue
            publisher.send(sign_gap_notice(self.signing_key, self.camera_id, start, prev))
            if seq is not None:
                start = prev = seq

    def _scan_stats(self) -> dict[str, float]:
        """Native-resolution scan figures for the stats file: shares over all detected frames."""
        t = self.finder.scan_totals
        frames = t["frames"] or 1
        return {
            "frames": t["frames"],
            "cells_scanned_per_frame": t["cells_scanned"] / frames,
            "cells_uncertain_share": t["cells_uncertain"] / (t["cells_total"] or 1),
            "uncertain_area_share": t["uncertain_area"] / frames,
            "frames_with_uncertain": t["frames_with_uncertain"],
        }

    def _write_stats(self, publisher: Publisher) -> None:
        doc = {
            "camera": self.camera_id,
            **asdict(self.stats),
            "acked": publisher.acked,
            "acked_frames": publisher.acked_frames,
            "rejected": publisher.rejected,
            "stages": self.times.summary(),
            "dropped_overload": self.source.dropped_overload,
            "source": self.source.display,
            "source_reconnects": self.source.reconnects,
            "source_size_changes": self.source.size_changes,
            "offline_notices": self.offline_notices,
            "detect_source": (
                {"source": self.detect.display, **self.detect.counts} if self.detect else None
            ),
            "fail_closed": dict(self.finder.fail_closed),
            "detector": self.detector.name if self.detector else "off",
            "detector_ms": self.finder.detect_ms,
            "detector_skipped": self.finder.skipped,
            "scan": self._scan_stats(),
        }
        assert self.stats_out is not None
        write_atomic(Path(self.stats_out), json.dumps(doc, indent=2).encode())

    def metric_families(self, publisher: Publisher) -> list:
        """What the Prometheus endpoint shows (called in its thread, at each scrape)."""
        s = self.stats
        dropped = {
            "overload": self.source.dropped_overload,
            "backpressure": s.dropped_backpressure,
            "spool_full": publisher.dropped_spool_full,
        }
        families = [
            counter(
                "veilcam_camera_frames_captured_total", "Frames read from the source.", s.captured
            ),
            counter(
                "veilcam_camera_frames_published_total",
                "Frames protected, signed and queued for the store.",
                s.published,
            ),
            counter(
                "veilcam_camera_messages_acked_total",
                "Messages the store acknowledged as durably archived (frames, key "
                "envelopes and gap notices).",
                publisher.acked,
            ),
            counter(
                "veilcam_camera_frames_acked_total",
                "Frames the store acknowledged as durably archived.",
                publisher.acked_frames,
            ),
            counter(
                "veilcam_camera_messages_rejected_total",
                "Messages the store refused.",
                publisher.rejected,
            ),
            counter(
                "veilcam_camera_messages_resent_total",
                "Messages sent again after a reconnection or silence.",
                publisher.resent,
            ),
            counter(
                "veilcam_camera_frames_dropped_total",
                "Frames dropped, by reason (overload: the pipeline fell behind a live "
                "source; backpressure: no room to queue; spool_full: the spool bound was hit, "
                "declared to the store as a gap).",
                dropped,
                "reason",
            ),
            counter(
                "veilcam_camera_fail_closed_total",
                "Frames redacted whole because detection was late or failed, or the face "
                "scanner had no previous frame to see motion at the border against (a start, "
                "a new frame size, the source back after a loss), by reason.",
                self.finder.fail_closed,
                "reason",
            ),
            counter(
                "veilcam_camera_bytes_sent_total",
                "Bytes of frame messages published.",
                s.bytes_sent,
            ),
            counter("veilcam_camera_epochs_total", "Content-key epochs started.", s.epochs),
            gauge(
                "veilcam_camera_source_up",
                "1 while the source delivers frames, 0 while it is lost and being reconnected.",
                1 if self.source.up else 0,
            ),
            counter(
                "veilcam_camera_source_reconnects_total",
                "Times the source came back after being lost.",
                self.source.reconnects,
            ),
            gauge(
                "veilcam_camera_epoch_recipients",
                "Users the current epoch's keys are sealed to.",
                self.recipients,
            ),
            gauge(
                "veilcam_camera_spool_messages",
                "Messages waiting for the store's acknowledgement (spool depth).",
                len(publisher.pending),
            ),
            gauge(
                "veilcam_camera_spool_on_disk_messages",
                "Of those, messages spooled to disk.",
                publisher.spooled,
            ),
            gauge(
                "veilcam_camera_spool_bytes", "Bytes waiting in the spool.", publisher.pending_bytes
            ),
            counter(
                "veilcam_camera_scan_cells_total",
                "Native-resolution face scan cells, by what happened on each frame "
                "(scanned; uncertain: changed since its last scan and not rescanned in "
                "time, so covered whole).",
                {
                    "scanned": self.finder.scan_totals["cells_scanned"],
                    "uncertain": self.finder.scan_totals["cells_uncertain"],
                },
                "state",
            ),
            gauge(
                "veilcam_camera_detector_latency_seconds",
                "Run time of the face detector on its latest frame.",
                self.finder.detect_ms / 1000,
            ),
            stage_latency("veilcam_camera", self.times),
        ]
        return with_labels(families, {"camera": self.camera_id})  # one camera per process

    def _log_stats(self, publisher: Publisher) -> None:
        s = self.stats
        closed = sum(self.finder.fail_closed.values())
        skipped = self.finder.skipped
        t = self.finder.scan_totals
        uncertain = t["uncertain_area"] / t["frames"] if t["frames"] else 0.0
        log.info(
            "camera %s: %d frames captured, %d published, %d acknowledged (+%d key "
            "envelopes/gap notices), %d messages rejected, %d pending (%d spooled on "
            "disk), %d dropped (spool full), %d dropped (pipeline overload), %d whole-frame "
            "redactions (detector late or failed, or no motion history yet), detector %.1f ms, "
            "ran on %d frame(s), "
            "skipped %d, %.1f %% of the frame covered on average as not yet rescanned",
            self.camera_id,
            s.captured,
            s.published,
            publisher.acked_frames,
            publisher.acked - publisher.acked_frames,
            publisher.rejected,
            len(publisher.pending),
            publisher.spooled,
            s.dropped_backpressure + publisher.dropped_spool_full,
            self.source.dropped_overload,
            closed,
            self.finder.detect_ms,
            self.finder.frame_no - skipped,
            skipped,
            100 * uncertain,
        )
