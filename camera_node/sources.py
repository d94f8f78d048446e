"""Frame sources: a device index, a video file (optionally looped, paced), or a stream URL."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from veilcam.common.errors import VeilcamError

log = logging.getLogger("veilcam.source")

URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


@dataclass(frozen=True)
class CapturedFrame:
    image: np.ndarray
    capture_time_us: int
    waited_s: float = 0.0  # time spent pacing a file to its frame rate (not capture work)


def describe_source(spec: str) -> tuple[str, int | str]:
    """('device', index) | ('url', url) | ('file', path)."""
    text = spec.strip()
    if text.isdigit():
        return "device", int(text)
    if text.lower().startswith(URL_SCHEMES):
        return "url", text
    return "file", text


class FrameSource:
    """Iterates captured frames; a file ends (or loops); a device or URL reconnects on failure.

    A live source (device or URL) is read by its own thread that keeps only the newest frame:
    when the pipeline falls behind, it is frames that are dropped, never the capture thread
    that stalls the camera's buffer, and every dropped frame is counted
    (``dropped_overload``). A file is read in step with the pipeline (a replay loses nothing;
    pacing slips instead)."""

    def __init__(
        self,
        spec: str,
        *,
        loop: bool = False,
        pace: bool = True,
        fps: float = 0.0,
        max_width: int = 0,
        reconnect_delay_s: float = 1.0,
        live: bool | None = None,
    ) -> None:
        self.kind, self.target = describe_source(spec)
        if self.kind == "file" and not Path(str(self.target)).is_file():
            raise VeilcamError(f"video file {self.target} not found")
        self.loop, self.pace, self.max_width = loop, pace, max_width
        self.reconnect_delay_s = reconnect_delay_s
        self._cap = self._open()
        native = self._cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = fps or (native if 1 <= native <= 240 else 30.0)
        self._stopped = False
        self.live = self.kind != "file" if live is None else live
        self.dropped_overload = 0
        self.captured = 0
        self._grabber: threading.Thread | None = None

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            what = {"device": "camera device", "url": "stream", "file": "video file"}[self.kind]
            raise VeilcamError(f"cannot open {what} {self.target!r}")
        return cap

    def stop(self) -> None:
        self._stopped = True

    def _scaled(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if self.max_width and w > self.max_width:
            new_h = round(h * self.max_width / w)
            image = cv2.resize(image, (self.max_width, new_h), interpolation=cv2.INTER_LINEAR)
        return image

    def frames(self) -> Iterator[CapturedFrame]:
        return self._latest_frames() if self.live else self._read_frames()

    def _latest_frames(self) -> Iterator[CapturedFrame]:
        cond = threading.Condition()
        slot: list[CapturedFrame | None] = [None]
        done = [False]

        def grab() -> None:
            try:
                for frame in self._read_frames():
                    with cond:
                        if slot[0] is not None:
                            self.dropped_overload += 1
                        slot[0] = frame
                        cond.notify()
            finally:
                with cond:
                    done[0] = True
                    cond.notify()

        self._grabber = threading.Thread(target=grab, name="capture", daemon=True)
        self._grabber.start()
        while True:
            with cond:
                cond.wait_for(lambda: slot[0] is not None or done[0], timeout=0.5)
                frame, slot[0] = slot[0], None
                if frame is None and done[0]:
                    return
            if frame is not None:
                yield frame
            if self._stopped:
                return

    def _read_frames(self) -> Iterator[CapturedFrame]:
        period = 1.0 / self.fps
        next_due = time.monotonic()
        while not self._stopped:
            ok, image = self._cap.read()
            if not ok or image is None:
                if self.kind == "file":
                    if not self.loop:
                        return
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, image = self._cap.read()
                    if not ok:
                        raise VeilcamError(f"video file {self.target} has no readable frames")
                else:
                    log.warning(
                        "source %s stopped delivering frames; reconnecting in %.1f s",
                        self.target,
                        self.reconnect_delay_s,
                    )
                    self._cap.release()
                    time.sleep(self.reconnect_delay_s)
                    try:
                        self._cap = self._open()
                    except VeilcamError as exc:
                        log.warning("%s", exc)
                    continue
            waited = 0.0
            if self.kind == "file" and self.pace:
                delay = next_due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                    waited = delay
                next_due = max(next_due + period, time.monotonic() - period)
            self.captured += 1
            yield CapturedFrame(self._scaled(image), time.time_ns() // 1000, waited)

    def close(self) -> None:
        self._stopped = True
        if self._grabber is not None:
            self._grabber.join(timeout=5)  # never release the capture under a running read
        self._cap.release()
