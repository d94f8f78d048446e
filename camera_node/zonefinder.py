"""Zones for each published frame, detected on that very frame, pipelined, failing closed.

Every captured frame is queued for the detector thread (OpenCV releases the GIL, so detection
uses the second core while the main thread encodes and sends the previous frame). A frame is
published only once the detector has run on it: its face zones come from a scan of its own
pixels (``FaceScanner``: a coarse pass plus budgeted native-resolution passes over cells,
with cells it could not rescan after a change covered whole), held and grown between
detections (``FaceHold``) for recall. Never from an older frame's result alone: that leaked
every face on the first frame after a scene cut.

The pipeline adds about one frame of latency. If a frame's detection has not finished
``max_lag`` after capture (detector stalled or too slow), or the detector raised, that frame is
covered whole: no frame goes out with a face uncovered because the detector was late. Every
such frame is counted by reason. When the detector falls behind it first drops its
native-resolution passes (more cells covered), then frames start going out covered whole.

A frame the scanner sees without a previous frame of its size (the first of a run, the first
after a change of frame size, the first after the source was lost) is covered whole too: its
check for motion coming in at the border (faces cut by the edge, which detectors miss) has
nothing to compare with. One frame each time; counted as ``no_motion_history``. So is a scene
cut's frame (most of the picture changed, and not as a pan the scanner followed; at widths up
to ``detect_width`` any such change): compared with the picture before the cut, what enters
at the border cannot be told from the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from veilcam.camera_node.facescan import FaceScanner, ScanResult
from veilcam.camera_node.zones import FaceHold, Zone, clip_zone, without_contained
from veilcam.common.format import MAX_ZONES, ZoneClass

log = logging.getLogger("veilcam.zones")
LOG_EVERY_S = 10.0  # at most one "covering whole frames" line per this many seconds
MAX_PENDING = 8  # frames queued for detection before the publishing loop waits
DEFAULT_SHARE = 0.75  # share of the frame interval the detector may spend on one frame

# why a frame went out covered whole; every reason is reported from the start (at 0), so
# alerts have a series to match before the first event
FAIL_CLOSED_REASONS = ("detector_failed", "detector_late", "too_many_zones", "no_motion_history")
QUIET_REASONS = frozenset({"no_motion_history"})  # expected at every start: counted, not logged

P = TypeVar("P")


@dataclass
class _Job(Generic[P]):
    frame_no: int
    image: np.ndarray
    static: list[Zone]
    payload: P
    submitted: float  # clock time
    zones: list[Zone] | None = None  # set by the detector thread when done
    error: Exception | None = None
    abandoned: bool = False  # published covered whole; the detector skips it
    discontinuity: bool = False  # does not follow the previous frame (source lost meanwhile)
    detect_image: np.ndarray | None = None  # what to detect on instead (camera.detect_source)
    scan: ScanResult | None = field(default=None, repr=False)


class ZoneFinder(Generic[P]):
    """Static zones + faces for each frame, in order, never uncovered by a late or broken
    detector. ``submit`` frames as they are captured; take ``ready()`` ones to publish."""

    def __init__(
        self,
        scanner: FaceScanner | None,
        margin: float,
        hold_frames: int,
        max_lag_s: float,
        budget_share: float = DEFAULT_SHARE,
        clock: Callable[[], float] = time.monotonic,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.scanner = scanner
        self.hold = FaceHold(margin, hold_frames)
        self._size: tuple[int, int] | None = (
            None  # of the last frame detected: a change rescales the held faces
        )
        self.max_lag_s = max_lag_s
        self.budget_share = budget_share
        self.clock = clock
        self.max_pending = max_pending
        self.frame_no = 0
        self.skipped = 0  # frames published covered whole, never detected
        self.fail_closed: Counter[str] = Counter({reason: 0 for reason in FAIL_CLOSED_REASONS})
        self.last_scan: ScanResult | None = None
        self.detect_ms = 0.0  # run time of the detector on its latest frame
        # what the scans did, summed over frames: frames, cells scanned / uncertain / total,
        # and the share of frame area covered as uncertain (sum of per-frame shares)
        self.scan_totals: Counter[str] = Counter()
        self._queue: deque[_Job[P]] = deque()  # submitted, not yet handed out, in order
        self._todo: deque[_Job[P]] = deque()  # not yet taken by the detector thread
        self._cond = threading.Condition()
        self._interval_s = 1 / 30
        self._credit_s = 0.0  # native-resolution scan time saved up (seconds)
        self._last_submit: float | None = None
        self._last_reason = ""
        self._quiet_until = 0.0
        self._stop = False
        self._thread: threading.Thread | None = None
        if scanner is not None:
            self._thread = threading.Thread(target=self._run, name="detector", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ publishing side

    def submit(
        self,
        image: np.ndarray,
        static: list[Zone],
        payload: P,
        discontinuity: bool = False,
        detect_image: np.ndarray | None = None,
    ) -> None:
        """Queue a captured frame. ``image`` is read by the detector thread until the frame
        comes out of ``ready()``: do not modify it before. ``discontinuity``: the frame does not
        follow the one before (the source was lost in between). ``detect_image``: the same
        picture from the camera's low-resolution stream, for the scanner's whole-frame pass
        (its boxes scaled to ``image``; the native-resolution passes stay on ``image``)."""
        now = self.clock()
        if self._last_submit is not None:
            gap = min(max(now - self._last_submit, 1 / 240), 1.0)
            self._interval_s = 0.9 * self._interval_s + 0.1 * gap
        self._last_submit = now
        self.frame_no += 1
        job = _Job(
            self.frame_no,
            image,
            list(static),
            payload,
            now,
            discontinuity=discontinuity,
            detect_image=detect_image,
        )
        with self._cond:
            self._queue.append(job)
            if self.scanner is not None:
                self._todo.append(job)
                self._cond.notify_all()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def ready(self, wait_until: float | None = None) -> Iterator[tuple[P, np.ndarray, list[Zone]]]:
        """Frames whose zones are known, oldest first. Waits for a frame's detection until
        ``wait_until`` (clock time: publish as soon as the detector is done, without missing
        the next capture), and past it only while ``max_pending`` frames are queued, never
        past the oldest one's deadline (then it is covered whole)."""
        while self._queue:
            full = len(self._queue) >= self.max_pending
            got = self._take(None if full else (wait_until or 0.0))
            if got is None:
                return
            yield got

    def drain(self) -> Iterator[tuple[P, np.ndarray, list[Zone]]]:
        """Every queued frame (end of the source), each waited for until its deadline."""
        while self._queue:
            got = self._take(None)
            if got is not None:
                yield got

    def _take(self, wait_until: float | None) -> tuple[P, np.ndarray, list[Zone]] | None:
        """The oldest frame once its zones are known or its deadline passed; None if neither
        happens by ``wait_until`` (None: wait until the deadline)."""
        job = self._queue[0]
        if self.scanner is None:
            self._queue.popleft()
            return job.payload, job.image, job.static
        deadline = job.submitted + self.max_lag_s
        until = deadline if wait_until is None else min(wait_until, deadline)
        with self._cond:
            self._cond.wait_for(
                lambda: job.zones is not None or job.error is not None,
                max(0.0, until - self.clock()),
            )
            if job.zones is None and job.error is None:
                if self.clock() < deadline:
                    return None
                job.abandoned = True
        self._queue.popleft()
        height, width = job.image.shape[:2]
        reason = ""
        if job.error is not None:
            reason = "detector_failed"
        elif job.zones is None:
            reason = "detector_late"
            self.skipped += 1
        elif len(job.static) + len(job.zones) > MAX_ZONES:
            reason = "too_many_zones"
        elif job.scan is not None and job.scan.blind:
            reason = "no_motion_history"
        if reason in QUIET_REASONS:
            self.fail_closed[reason] += 1
        elif reason:
            self._count_fail_closed(reason, job.error)
        if reason:
            full = Zone(0, 0, width, height, ZoneClass.FULL)
            return job.payload, job.image, [*job.static[: MAX_ZONES - 1], full]
        if self._last_reason:
            log.info("face detector recovered after %s", self._last_reason)
            self._last_reason = ""
        assert job.zones is not None  # no reason to cover the whole frame: the zones came
        return job.payload, job.image, job.static + job.zones

    def _count_fail_closed(self, reason: str, error: Exception | None) -> None:
        self.fail_closed[reason] += 1
        if reason != self._last_reason and time.monotonic() >= self._quiet_until:
            detail = f" ({error})" if error else ""
            log.error(
                "%s%s: covering whole frames until it recovers (%d such frames so far)",
                reason,
                detail,
                sum(self.fail_closed.values()),
            )
            self._quiet_until = time.monotonic() + LOG_EVERY_S  # a flapping detector
        self._last_reason = reason

    # ------------------------------------------------------------------ detector thread

    def _run(self) -> None:
        assert self.scanner is not None
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._todo or self._stop)
                if self._stop:
                    return
                job = self._todo.popleft()
                if job.abandoned:
                    continue
            budget = self._budget(job)
            t0 = time.perf_counter()
            try:
                if job.discontinuity:
                    self.scanner.discontinuity()
                scan = self.scanner.scan(job.image, budget, job.detect_image)
                zones = self._zones(job, scan)
            except Exception as exc:  # noqa: BLE001 - any failure must fail closed, not kill us
                with self._cond:
                    job.error = exc
                    self._cond.notify_all()
                continue
            self.detect_ms = (time.perf_counter() - t0) * 1000
            self._credit_s = max(0.0, self._credit_s - scan.fine_ms / 1000)
            self.last_scan = scan
            with self._cond:
                job.scan, job.zones = scan, zones
                self._cond.notify_all()

    def _budget(self, job: _Job[P]) -> float:
        """Seconds of native-resolution scanning this frame may use: a credit that each frame
        refills by its share of the frame interval, less the rest of a frame's detection work
        (coarse pass, change map, tracks), and that saves up to one and a half frame intervals
        (at most half of max_lag). Continuous motion spends the share on every frame; a scene
        cut's frame spends what quiet frames saved, and the frames after it catch up. A frame
        already later than that target gets less, down to nothing."""
        refill = self.budget_share * self._interval_s
        if self.last_scan is not None:  # the rest of the last frame's work: coarse pass, maps
            refill -= (self.detect_ms - self.last_scan.fine_ms) / 1000
        target = min(self.max_lag_s / 2, 1.5 * self._interval_s)
        self._credit_s = min(target, self._credit_s + max(0.0, refill))
        waited = self.clock() - job.submitted
        if waited <= target:
            return self._credit_s
        return self._credit_s * max(0.0, 1 - (waited - target) / max(self.max_lag_s - target, 1e-3))

    def _zones(self, job: _Job[P], scan: ScanResult) -> list[Zone]:
        height, width = job.image.shape[:2]
        if self._size is not None and self._size != (width, height):
            self.hold.rescale(width / self._size[0], height / self._size[1])
        self._size = (width, height)
        self.hold.update(scan.boxes, job.frame_no)
        zones = []
        for box in self.hold.boxes(job.frame_no):
            zone = clip_zone(box.x, box.y, box.w, box.h, ZoneClass.FACE, width, height)
            if zone is not None:
                zones.append(zone)
        area = 0
        for rect in scan.uncertain:
            zones.append(Zone(rect.x, rect.y, rect.w, rect.h, ZoneClass.FACE))
            area += rect.w * rect.h
        for rect in scan.entering:
            zone = clip_zone(rect.x, rect.y, rect.w, rect.h, ZoneClass.FACE, width, height)
            if zone is not None:
                zones.append(zone)
        zones = without_contained(zones)
        totals = self.scan_totals
        totals["frames"] += 1
        totals["cells_scanned"] += scan.cells_scanned
        totals["cells_uncertain"] += scan.cells_uncertain
        totals["cells_total"] += scan.cells_total
        totals["uncertain_area"] += area / (width * height)
        totals["frames_with_uncertain"] += bool(scan.uncertain)
        totals["frames_with_entering"] += bool(scan.entering)
        return zones

    def close(self) -> None:
        if self._thread is not None:
            with self._cond:
                self._stop = True
                self._cond.notify_all()
            self._thread.join(timeout=5)
