"""A camera's second, low-resolution stream for face detection (``camera.detect_source``).

IP cameras send a sub-stream (e.g. 640x360) beside the main one. The face scanner's
whole-frame pass (the coarse pass, run at ``faces.detect_width``) can take its picture from it
instead of downscaling the main frame; its boxes are scaled to the main frame. Everything that
needs the main frame's detail stays on the main frame: the native-resolution passes over cells
(faces of ~10 px, which a 640-wide picture no longer shows: ``bench/leaks.py --detect-width
640`` on small1080 read 18.6 % of the faces when the sub-stream replaced the main frame
entirely), the change map and the edge check. Each main frame is paired with the newest
sub-stream frame captured at or before it, at most ``tolerance`` earlier (:func:`match`); with
none (the sub-stream lags, stalled or is down) the coarse pass runs on the main frame as
without a sub-stream. So a sub-stream never leaves a main frame less covered than it would be
without it, beyond its picture being up to the tolerance older.

A live sub-stream (a URL) is read by its own thread into a short buffer of (capture time,
image), reconnecting like the main source. A video file (the same clip as the main file, at a
lower resolution: tests and benchmarks) is read in step with the main frames, frame for frame:
both share the file's timeline.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator

import numpy as np
from veilcam.camera_node.sources import CapturedFrame, FrameSource
from veilcam.common.errors import VeilcamError

log = logging.getLogger("veilcam.source")

BUFFER_FRAMES = 32  # sub-stream frames kept for matching (about a second)


def match(
    frames: deque[tuple[int, np.ndarray]], time_us: int, tolerance_us: int
) -> np.ndarray | None:
    """The image of the newest frame of ``frames`` (oldest first, by capture time in µs) at or
    before ``time_us`` and at most ``tolerance_us`` earlier; None if there is none. Frames
    older than the one returned are dropped (later main frames are later still)."""
    best = None
    for i, (t, _image) in enumerate(frames):
        if t > time_us:
            break
        best = i
    if best is None:
        return None
    for _ in range(best):
        frames.popleft()
    t, image = frames[0]
    return image if time_us - t <= tolerance_us else None


class DetectSource:
    """Sub-stream frames for the main frames of a camera (see the module doc)."""

    def __init__(
        self,
        spec: str,
        *,
        tolerance_s: float,
        loop: bool = False,
        rtsp_transport: str = "tcp",
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        reconnect_max_s: float = 30.0,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.tolerance_us = int(tolerance_s * 1e6)
        self.source = FrameSource(
            spec,
            loop=loop,
            pace=False,
            rtsp_transport=rtsp_transport,
            open_timeout_s=open_timeout_s,
            read_timeout_s=read_timeout_s,
            reconnect_max_s=reconnect_max_s,
            should_stop=should_stop,
        )
        self.display = self.source.display
        self.size: tuple[int, int] | None = None  # of the latest sub-stream frame
        # main frames detected on a sub-stream frame ("used"), or on themselves because none
        # was within the tolerance ("late": the sub-stream lags or is down; "ended": a file
        # sub-stream ran out)
        self.counts: Counter[str] = Counter({"used": 0, "late": 0, "ended": 0})
        self._frames: deque[tuple[int, np.ndarray]] = deque(maxlen=BUFFER_FRAMES)
        self._lock = threading.Lock()
        self._in_step: Iterator[CapturedFrame] | None = None
        self._thread: threading.Thread | None = None
        self._fallback_logged = False
        if self.source.live:
            self._thread = threading.Thread(target=self._read, name="detect-source", daemon=True)
            self._thread.start()
        else:
            self._in_step = self.source.frames()

    def _read(self) -> None:
        try:
            for frame in self.source.frames():
                with self._lock:
                    self._frames.append((frame.capture_time_us, frame.image))
        except VeilcamError as exc:
            log.error(
                "detect source %s failed: %s; detecting on the main frames", self.display, exc
            )

    def take(self, main: CapturedFrame) -> np.ndarray | None:
        """The sub-stream picture for ``main``'s coarse pass; None when none matches (the
        coarse pass then runs on the main frame)."""
        image = self._next_in_step() if self._in_step is not None else self._matched(main)
        if image is not None:
            self.counts["used"] += 1
            self.size = (image.shape[1], image.shape[0])
            if self._fallback_logged:
                log.info("detect source %s delivers again", self.display)
                self._fallback_logged = False
            return image
        if not self._fallback_logged:
            log.warning(
                "detect source %s has no frame within %.0f ms of the main frame: detecting "
                "on the main frames until it does",
                self.display,
                self.tolerance_us / 1000,
            )
            self._fallback_logged = True
        return None

    def _matched(self, main: CapturedFrame) -> np.ndarray | None:
        with self._lock:
            image = match(self._frames, main.capture_time_us, self.tolerance_us)
        if image is None:
            self.counts["late"] += 1
        return image

    def _next_in_step(self) -> np.ndarray | None:
        assert self._in_step is not None
        frame = next(self._in_step, None)
        if frame is None:
            self.counts["ended"] += 1
            return None
        return frame.image

    def close(self) -> None:
        self.source.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
