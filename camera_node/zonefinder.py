"""Zones for each published frame, with face detection off the publishing path, failing closed.

The detector runs in its own thread on the newest frame only (OpenCV releases the GIL, so it
uses the second core); the publishing loop never waits for it beyond ``max_lag``. Each frame
gets the static zones plus the face boxes of the latest detection result, held and grown
(camera_node.zones.FaceHold). If that result is older than ``max_lag`` (detector stalled or
too slow), or the detector raised, or it never produced a result, the frame is covered whole:
a frame never goes out with a face uncovered because the detector was late. Every such frame
is counted by reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from camera_node.detect import Box, FaceDetector
from camera_node.zones import FaceHold, Zone, clip_zone
from common.format import ZoneClass

log = logging.getLogger("veilcam.zones")
LOG_EVERY_S = 10.0  # at most one "covering whole frames" line per this many seconds


@dataclass(frozen=True)
class Detection:
    frame_no: int
    capture_time: float   # monotonic seconds of the frame it was run on
    boxes: list[Box]
    took_ms: float


class DetectorWorker:
    """Runs a detector in a thread on the latest submitted frame; drops older ones."""

    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector
        self._cond = threading.Condition()
        self._pending: tuple[int, float, np.ndarray] | None = None
        self.result: Detection | None = None
        self.error: Exception | None = None
        self.skipped = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="detector", daemon=True)
        self._thread.start()

    def submit(self, frame_no: int, capture_time: float, image: np.ndarray) -> None:
        with self._cond:
            if self._pending is not None:
                self.skipped += 1  # the detector is busy: it will take this newer frame instead
            self._pending = (frame_no, capture_time, image)
            self._cond.notify()

    def wait_for(self, frame_no: int, timeout: float) -> Detection | None:
        """Wait until a result for ``frame_no`` or later exists (or an error, or timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self.error is not None or (
                self.result is not None and self.result.frame_no >= frame_no), timeout)
            return self.result

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stop)
                if self._stop:
                    return
                frame_no, capture_time, image = self._pending
                self._pending = None
            t0 = time.perf_counter()
            try:
                boxes = self.detector.detect(image)
            except Exception as exc:  # noqa: BLE001 - any failure must fail closed, not kill us
                with self._cond:
                    self.error = exc
                    self._cond.notify_all()
                continue
            with self._cond:
                self.error = None
                self.result = Detection(frame_no, capture_time, boxes,
                                        (time.perf_counter() - t0) * 1000)
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)


class ZoneFinder:
    """Static zones + faces for each frame, never uncovered by a late or broken detector."""

    def __init__(self, detector: FaceDetector | None, margin: float, hold_frames: int,
                 max_lag_s: float, first_wait_s: float | None = None) -> None:
        self.worker = DetectorWorker(detector) if detector is not None else None
        self.hold = FaceHold(margin, hold_frames)
        self.max_lag_s = max_lag_s
        self.first_wait_s = max_lag_s if first_wait_s is None else first_wait_s
        self.frame_no = 0
        self._consumed = -1
        self.fail_closed: Counter[str] = Counter()
        self._last_reason = ""
        self._quiet_until = 0.0

    def zones(self, image: np.ndarray, static: list[Zone],
              capture_time: float | None = None) -> list[Zone]:
        height, width = image.shape[:2]
        zones = list(static)
        if self.worker is None:
            return zones
        capture_time = time.monotonic() if capture_time is None else capture_time
        self.frame_no += 1
        self.worker.submit(self.frame_no, capture_time, image.copy())  # image is redacted next
        result = self.worker.result
        if result is None and self.worker.error is None:
            result = self.worker.wait_for(1, self.first_wait_s)  # only the very first frames
        reason = ""
        if self.worker.error is not None:
            reason = "detector_failed"
        elif result is None:
            reason = "detector_not_ready"
        elif capture_time - result.capture_time > self.max_lag_s:
            reason = "detector_late"
        if reason:
            self.fail_closed[reason] += 1
            if reason != self._last_reason and time.monotonic() >= self._quiet_until:
                detail = f" ({self.worker.error})" if self.worker.error else ""
                log.error("%s%s: covering whole frames until it recovers (%d such frames so "
                          "far)", reason, detail, sum(self.fail_closed.values()))
                self._quiet_until = time.monotonic() + LOG_EVERY_S  # a flapping detector
            self._last_reason = reason
            return zones + [Zone(0, 0, width, height, ZoneClass.FULL)]
        if self._last_reason:
            log.debug("face detector recovered after %s", self._last_reason)
            self._last_reason = ""
        if result.frame_no != self._consumed:
            self._consumed = result.frame_no
            self.hold.update(result.boxes, result.frame_no)
        boxes = self.hold.boxes(self.frame_no)
        for box in boxes:
            zone = clip_zone(box.x, box.y, box.w, box.h, ZoneClass.FACE, width, height)
            if zone is not None:
                zones.append(zone)
        return zones

    @property
    def detect_ms(self) -> float:
        result = self.worker.result if self.worker else None
        return result.took_ms if result else 0.0

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
