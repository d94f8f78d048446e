"""Fail closed: a stalled, crashing or slow detector never lets a frame out with a face uncovered,
and a frame's zones come from a detection on that frame.

The detectors here are fault-injection doubles wrapped around a ground truth: a face moving
across the frame. Each published frame's zones must cover the face where it really is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
from veilcam.camera_node.detect import Box
from veilcam.camera_node.facescan import FaceScanner
from veilcam.camera_node.zonefinder import ZoneFinder
from veilcam.camera_node.zones import Zone

W, H = 320, 240


def face_at(frame_no: int) -> tuple[int, int, int, int]:
    """Ground truth: a 40x40 face moving 3 px per frame, bouncing between the frame's sides."""
    span = W - 60
    x = (3 * frame_no) % (2 * span)
    return 10 + (x if x < span else 2 * span - x), 40 + frame_no % 100, 40, 40


def frame(frame_no: int) -> np.ndarray:
    image = np.zeros((H, W, 3), np.uint8)
    image[0, 0, 0] = frame_no % 256  # the detector double reads the frame number from here
    image[0, 0, 1] = frame_no // 256
    return image


class TruthDetector:
    """Finds the face exactly where it is in the frame it is given, after ``delay`` seconds;
    ``stall_on`` makes one call hang, ``crash_from`` makes calls from then on raise."""

    name = "truth"

    def __init__(
        self,
        delay: float = 0.0,
        stall_on: int | None = None,
        stall_s: float = 0.0,
        crash_from: int | None = None,
    ) -> None:
        self.delay, self.stall_on, self.stall_s, self.crash_from = (
            delay,
            stall_on,
            stall_s,
            crash_from,
        )
        self.calls = 0
        self.truth: Callable[[int], tuple[int, int, int, int]] = face_at
        self.unstall = threading.Event()

    def detect(self, image: np.ndarray) -> list[Box]:
        self.calls += 1
        if self.crash_from is not None and self.calls >= self.crash_from:
            raise RuntimeError("model crashed")
        if self.calls == self.stall_on:
            self.unstall.wait(self.stall_s)
        time.sleep(self.delay)
        n = int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])
        return [Box(*self.truth(n))]


def covered(zones: list[Zone], box: tuple[int, int, int, int]) -> bool:
    mask = np.zeros((H, W), bool)
    for z in zones:
        mask[z.y : z.y + z.h, z.x : z.x + z.w] = True
    x, y, w, h = box
    return bool(mask[y : y + h, x : x + w].all())


def run(
    detector: TruthDetector,
    frames: int,
    fps: float = 60,
    max_lag_s: float = 0.15,
    face: Callable[[int], tuple[int, int, int, int]] = face_at,
) -> tuple[ZoneFinder, list[list[Zone]]]:
    """Capture ``frames`` frames at ``fps`` through the pipelined zone finder as the camera
    does; every frame that comes out must cover the face where it is in that frame."""
    finder: ZoneFinder[int] = ZoneFinder(
        FaceScanner(detector), margin=0.25, hold_frames=10, max_lag_s=max_lag_s
    )
    out: dict[int, list[Zone]] = {}

    def take(published) -> None:
        for n, _image, zones in published:
            assert covered(zones, face(n)), f"frame {n}: face uncovered by {zones}"
            out[n] = zones

    try:
        for n in range(frames):
            finder.submit(frame(n), [], n)
            take(finder.ready(time.monotonic() + 0.6 / fps))
            time.sleep(1 / fps)
        take(finder.drain())
    finally:
        finder.close()
    assert sorted(out) == list(range(frames))  # every frame published, in order
    return finder, [out[n] for n in range(frames)]


def whole(zones: list[Zone]) -> bool:
    return any(z.w == W and z.h == H for z in zones)


def test_healthy_detector_covers_the_moving_face_with_small_zones() -> None:
    finder, out = run(TruthDetector(delay=0.005), 60, max_lag_s=1.0)
    assert sum(finder.fail_closed.values()) == 0
    assert sum(whole(z) for z in out) == 0


def jump(frame_no: int) -> tuple[int, int, int, int]:
    """A face somewhere else on every frame: a scene cut at every frame."""
    return 10 + (frame_no * 97) % (W - 60), 10 + (frame_no * 53) % (H - 60), 40, 40


def test_zones_come_from_the_frame_published_not_an_older_one() -> None:
    """Every frame is a scene cut: zones from any earlier frame would miss the face. The
    detector is slow enough (15 ms at 60 fps) that a finder publishing the latest result
    beside the capture loop would send frames with the previous frame's zones."""
    detector = TruthDetector(delay=0.015)
    detector.truth = jump
    finder, out = run(detector, 40, max_lag_s=1.0, face=jump)
    assert detector.calls == 40  # it ran on every frame
    assert sum(whole(z) for z in out) == 0


def test_detector_too_slow_for_the_frame_rate_covers_late_frames_whole() -> None:
    detector = TruthDetector(delay=0.05)  # 3 frame intervals per detection at 60 fps
    finder, out = run(detector, 60, max_lag_s=0.15)
    late = finder.fail_closed["detector_late"]
    assert late > 0 and sum(whole(z) for z in out) >= late
    assert detector.calls < 60  # frames already published whole are not detected any more


def test_stalled_detector_makes_frames_fully_redacted_until_it_recovers() -> None:
    detector = TruthDetector(delay=0.002, stall_on=10, stall_s=0.6)
    finder, out = run(detector, 90)
    assert finder.fail_closed["detector_late"] >= 10
    assert any(whole(z) for z in out[20:40])
    assert not whole(out[-1])  # recovered afterwards


def test_crashing_detector_makes_every_later_frame_fully_redacted() -> None:
    detector = TruthDetector(delay=0.002, crash_from=5)
    finder, out = run(detector, 40)
    assert finder.fail_closed["detector_failed"] >= 25
    assert all(whole(z) for z in out[-20:])


def test_detector_that_never_answers_covers_from_the_first_frame() -> None:
    detector = TruthDetector(stall_on=1, stall_s=0.6)  # 10 frames at 60 fps: 0.17 s
    finder, out = run(detector, 10, max_lag_s=0.05)
    assert all(whole(z) for z in out)
    detector.unstall.set()
