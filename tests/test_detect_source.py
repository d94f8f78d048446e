"""camera.detect_source (camera_node/detectsource.py): a main frame is detected on the newest
sub-stream frame captured at or before it within the tolerance, else on itself; the faces the
coarse pass finds on the low-resolution picture are scaled to the main frame and cover the face
there, and a face the sub-stream is too coarse to show is still found by the native-resolution
passes on the main frame; a file sub-stream is read in step with the main file and, once it
ends, the main frames are detected themselves."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import cv2
import numpy as np
from veilcam.camera_node.detect import Box
from veilcam.camera_node.detectsource import DetectSource, match
from veilcam.camera_node.facescan import FaceScanner
from veilcam.camera_node.sources import CapturedFrame
from veilcam.camera_node.zonefinder import ZoneFinder
from veilcam.camera_node.zones import Zone

from tests.factory import textured
from tests.test_edge_history import BACKGROUND, WholeFacesOnly


def _buffer(*times: int) -> deque[tuple[int, np.ndarray]]:
    return deque((t, np.full((2, 2, 3), i, np.uint8)) for i, t in enumerate(times))


def test_the_newest_frame_at_or_before_the_main_frame_within_the_tolerance_is_used() -> None:
    frames = _buffer(1000, 34_000, 67_000, 100_000)
    got = match(frames, 70_000, 50_000)
    assert got is not None and got[0, 0, 0] == 2  # 67 ms: newest at or before 70 ms
    assert [t for t, _ in frames] == [67_000, 100_000]  # older ones dropped
    assert match(frames, 66_000, 50_000) is None  # only later frames: none
    assert match(_buffer(1000), 100_000, 50_000) is None  # 99 ms old: too old
    assert match(_buffer(), 100_000, 50_000) is None


def test_zones_found_on_the_sub_stream_cover_the_face_in_the_main_frame() -> None:
    """Main 640x360, sub 320x180: the face found on the sub-stream at half size is covered
    in the main frame, at its full size, on every frame (including while it moves)."""
    double = WholeFacesOnly()
    finder: ZoneFinder[int] = ZoneFinder(FaceScanner(double, double), 0.25, 10, 5.0)
    head = textured(64, 72, seed=2)
    head[head == BACKGROUND] = BACKGROUND + 1
    out: list[tuple[list[Zone], tuple[int, int, int, int]]] = []
    try:
        for n in range(8):
            main = np.full((360, 640, 3), BACKGROUND, np.uint8)
            x, y = 200 + 12 * n, 120
            main[y : y + 72, x : x + 64] = head
            sub = cv2.resize(main, (320, 180), interpolation=cv2.INTER_AREA)
            finder.submit(main, [], n, detect_image=sub)
            out.extend((zones, (x, y, 64, 72)) for _n, _image, zones in finder.drain())
    finally:
        finder.close()
    for n, (zones, (x, y, w, h)) in enumerate(out[1:], 1):  # frame 0: covered whole (a start)
        mask = np.zeros((360, 640), bool)
        for z in zones:
            mask[z.y : z.y + z.h, z.x : z.x + z.w] = True
        assert mask[y : y + h, x : x + w].all(), f"frame {n}: face not covered by {zones}"
        assert mask.mean() < 0.2, f"frame {n}: {mask.mean():.0%} of the frame covered"


def _clip(path: Path, size: tuple[int, int], frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    for n in range(frames):
        image = np.full((size[1], size[0], 3), 40, np.uint8)
        cv2.putText(image, str(n), (10, size[1] - 10), 0, size[1] / 60, (255, 255, 255), 2)
        writer.write(image)
    writer.release()


def test_a_file_sub_stream_is_read_in_step_and_its_end_falls_back_to_the_main_frame(
    tmp_path: Path,
) -> None:
    sub_path = tmp_path / "sub.avi"
    _clip(sub_path, (160, 120), 3)
    detect = DetectSource(str(sub_path), tolerance_s=0.05)
    try:
        main = [
            CapturedFrame(np.full((240, 320, 3), 9 * n, np.uint8), 1_000_000 + n * 33_000)
            for n in range(5)
        ]
        got = [detect.take(frame) for frame in main]
    finally:
        detect.close()
    assert all(g is not None and g.shape == (120, 160, 3) for g in got[:3])
    assert not np.array_equal(got[0], got[1])  # frame for frame, not the same one again
    assert got[3] is None and got[4] is None  # after its 3 frames: the main frame itself
    assert detect.counts == {"used": 3, "late": 0, "ended": 2}


class SeesNothing:
    """A coarse pass on a sub-stream too coarse to show the face."""

    name = "sees-nothing"
    detect_width = 640

    def detect(self, image: np.ndarray) -> list:
        return []


class TenPixelsAndUp(WholeFacesOnly):
    """Finds whole faces of 10 px and more (YuNet's smallest), not the 4 px one of a sub-stream."""

    def detect_native(self, image: np.ndarray) -> list[Box]:
        return [b for b in super().detect_native(image) if b.w >= 10 and b.h >= 10]


def test_a_face_too_small_for_the_sub_stream_is_found_on_the_main_frame() -> None:
    """Main 1280x720 with a 14x16 px face, sub 320x180 on which the coarse pass finds nothing:
    the native-resolution passes run on the main frame, so the face is covered on every frame
    (as uncertain cells first, then as a face found), and once every cell has been scanned only
    around the face."""
    finder: ZoneFinder[int] = ZoneFinder(
        FaceScanner(SeesNothing(), TenPixelsAndUp()), 0.25, 10, 5.0
    )
    main = np.full((720, 1280, 3), BACKGROUND, np.uint8)
    face = textured(16, 16, seed=4)[:16, :14]
    face[face == BACKGROUND] = BACKGROUND + 1
    main[300:316, 700:714] = face
    sub = cv2.resize(main, (320, 180), interpolation=cv2.INTER_AREA)
    shares = []
    try:
        for n in range(20):
            finder.submit(main.copy(), [], n, detect_image=sub)
            for _n, _image, zones in finder.drain():
                mask = np.zeros((720, 1280), bool)
                for z in zones:
                    mask[z.y : z.y + z.h, z.x : z.x + z.w] = True
                assert mask[300:316, 700:714].all(), f"frame {n}: face not covered by {zones}"
                shares.append(mask.mean())
    finally:
        finder.close()
    assert shares[-1] < 0.01, shares
