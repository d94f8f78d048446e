"""Real YuNet through the pipelined zone finder: a scene cut never yields a published frame
with zones from before the cut, and faces far smaller than the coarse pass can see are
covered by the native-resolution cell scans.

Reference faces are YuNet at the frame's full resolution, score >= 0.75 (the leak
benchmark's definition, bench/leakmetric.py); a face counts as covered when the published
zones cover >= 95 % of its box.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from veilcam.camera_node.detect import YuNetDetector
from veilcam.camera_node.facescan import FaceScanner
from veilcam.camera_node.zonefinder import ZoneFinder
from veilcam.camera_node.zones import Zone

from tests.conftest import MEDIA, YUNET, require_media

PHOTOS = MEDIA / "faces_annotated"


def photos() -> list[np.ndarray]:
    require_media(PHOTOS)
    return [cv2.imread(str(p)) for p in sorted(PHOTOS.glob("*.jpg")) if p.name != "dogs.jpg"]


def fit(photo: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = photo.shape[:2]
    s = min(width / w, height / h)
    small = cv2.resize(photo, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 40, np.uint8)
    y, x = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas


def reference_faces(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    net = cv2.FaceDetectorYN.create(
        str(YUNET), "", (image.shape[1], image.shape[0]), 0.75, 0.3, 5000
    )
    _, faces = net.detect(image)
    return [] if faces is None else [tuple(int(v) for v in f[:4]) for f in faces]


def coverage(zones: list[Zone], box: tuple[int, int, int, int], shape) -> float:
    mask = np.zeros(shape[:2], bool)
    for z in zones:
        mask[z.y : z.y + z.h, z.x : z.x + z.w] = True
    x, y, w, h = box
    patch = mask[max(0, y) : y + h, max(0, x) : x + w]
    return float(patch.mean()) if patch.size else 1.0


def scanner(model: Path, small_faces: bool = True) -> FaceScanner:
    coarse = YuNetDetector(model, 640, 0.5)
    return FaceScanner(coarse, YuNetDetector(model, 640, 0.5) if small_faces else None)


def publish(frames: list[np.ndarray], finder: ZoneFinder, fps: float = 30) -> dict[int, list[Zone]]:
    """Submit at live pace as the camera does; the zones each frame was published with."""
    out: dict[int, list[Zone]] = {}
    try:
        for n, image in enumerate(frames):
            finder.submit(image.copy(), [], n)
            for k, _image, zones in finder.ready(time.monotonic() + 0.6 / fps):
                out[k] = zones
            time.sleep(1 / fps)
        for k, _image, zones in finder.drain():
            out[k] = zones
    finally:
        finder.close()
    assert sorted(out) == list(range(len(frames)))
    return out


def test_first_frame_after_a_scene_cut_covers_the_new_scenes_faces() -> None:
    model = require_media(YUNET)
    scenes = [fit(p, 1280, 720) for p in photos()[:4]]
    frames = [scene for scene in scenes for _ in range(12)]
    out = publish(frames, ZoneFinder(scanner(model), margin=0.25, hold_frames=15, max_lag_s=0.4))
    refs = {id(s): reference_faces(s) for s in scenes}
    assert sum(len(r) for r in refs.values()) >= 10
    for n, image in enumerate(frames):
        for box in refs[id(image)]:
            assert coverage(out[n], box, image.shape) >= 0.95, (
                f"frame {n} ({'first after a cut' if n % 12 == 0 else 'in scene'}): "
                f"face {box} readable"
            )
    # not by covering everything: once a scene has been scanned, most of it is visible
    last_of_scene = [out[n] for n in range(11, len(frames), 12)]
    areas = [np.mean([coverage(z, (0, 0, 1280, 720), (720, 1280))]) for z in last_of_scene]
    assert min(areas) < 0.6, f"scenes stay covered: {areas}"


def small_faces_canvas() -> np.ndarray:
    """A 1920x1080 frame tiled with the photos scaled down: faces of ~10-30 px."""
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    x = y = row_h = 0
    for photo in photos() * 3:
        small = cv2.resize(photo, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
        h, w = small.shape[:2]
        if x + w > 1920:
            x, y, row_h = 0, y + row_h + 8, 0
        if y + h > 1080:
            break
        canvas[y : y + h, x : x + w] = small
        x, row_h = x + w + 8, max(row_h, h)
    return canvas


def test_faces_too_small_for_the_coarse_pass_are_covered() -> None:
    model = require_media(YUNET)
    image = small_faces_canvas()
    refs = reference_faces(image)
    assert len(refs) >= 15 and np.median([b[2] for b in refs]) < 30

    coarse_only = publish([image] * 3, ZoneFinder(scanner(model, small_faces=False), 0.25, 15, 0.4))
    missed = [b for b in refs if coverage(coarse_only[2], b, image.shape) < 0.95]
    assert len(missed) >= 5, "the coarse pass alone already finds these faces: test is moot"

    out = publish([image] * 12, ZoneFinder(scanner(model), 0.25, 15, 1.0))
    for n in range(12):
        readable = [b for b in refs if coverage(out[n], b, image.shape) < 0.95]
        assert not readable, f"frame {n}: {len(readable)} small faces readable: {readable}"


@pytest.mark.parametrize("width,height", [(640, 360), (1920, 1080), (3840, 2160)])
def test_cells_divide_every_frame_size_exactly(width: int, height: int) -> None:
    from veilcam.camera_node.facescan import _Grid  # the grid is private; its invariants are not

    grid = _Grid.for_size(width, height)
    assert grid.xs[0] == 0 and grid.xs[-1] == width and grid.ys[-1] == height
    assert all(b > a for a, b in zip(grid.xs, grid.xs[1:], strict=False))
    assert grid.cell_of(width - 1, height - 1) == (grid.rows - 1, grid.cols - 1)


class NoFaces:
    """A detector that never finds anything (what YuNet does with a face cut by the edge)."""

    name = "none"

    def detect(self, image: np.ndarray) -> list:
        return []

    def detect_native(self, image: np.ndarray) -> list:
        return []


def test_something_entering_at_the_border_is_covered_before_any_face_is_found() -> None:
    """A textured block (a head) slides in from the left; no detector finds a face in it.
    While it moves in it is covered, though every cell it is in has been scanned."""
    from tests.factory import textured

    background = np.full((360, 640, 3), 100, np.uint8)
    head = textured(80, 96, seed=5)
    scan = FaceScanner(NoFaces(), NoFaces())
    scan.scan(background, fine_budget_s=10.0)  # everything scanned and empty
    for step in range(1, 7):
        frame = background.copy()
        x1 = 12 * step  # right edge of the head, entering from x = 0
        frame[100:196, 0:x1] = head[:, 80 - x1 :]
        result = scan.scan(frame, fine_budget_s=10.0)
        assert not result.uncertain  # the fine pass ran on the cells: nothing uncertain
        zones = [Zone(r.x, r.y, r.w, r.h, None) for r in result.entering]
        assert coverage(zones, (0, 100, x1, 96), frame.shape) == 1.0, (
            f"step {step}: the part of the head in the frame is not covered: {result.entering}"
        )


class SlowNoFaces(NoFaces):
    """Costs what YuNet costs per pixel (50 us per 1000 px) and finds nothing."""

    def detect_native(self, image: np.ndarray) -> list:
        time.sleep(image.shape[0] * image.shape[1] / 1000 * 50e-6)
        return []


def _pan_uncertain_share(follow: bool, monkeypatch) -> float:
    from veilcam.camera_node import facescan

    from tests.factory import textured

    if not follow:
        monkeypatch.setattr(facescan, "PAN_MIN_RESPONSE", 2.0)  # never sure of a global shift
    world = cv2.GaussianBlur(textured(2400, 720, seed=9), (0, 0), 2)
    scan = FaceScanner(NoFaces(), SlowNoFaces())
    scan.scan(world[:, :1280].copy(), fine_budget_s=10.0)  # everything scanned once
    shares = []
    for step in range(1, 25):
        x = 25 * step  # the camera pans right, 25 px a frame
        result = scan.scan(world[:, x : x + 1280].copy(), fine_budget_s=0.012)
        shares.append(sum(r.w * r.h for r in result.uncertain) / (1280 * 720))
    return float(np.mean(shares[4:]))


def test_a_pan_is_followed_so_only_the_picture_entering_is_rescanned(monkeypatch) -> None:
    """With 12 ms of native-resolution scanning a frame (a quarter of a 720p frame), a pan
    that is not followed leaves most of the frame covered; followed, only what entered."""
    followed = _pan_uncertain_share(True, monkeypatch)
    assert followed < 0.15, f"{followed:.0%} of the frame covered while panning"
    assert _pan_uncertain_share(False, monkeypatch) > 0.5  # without it: the test can fail


def test_faces_in_a_panning_picture_are_covered_on_every_frame() -> None:
    model = require_media(YUNET)
    strip = np.concatenate([fit(p, 640, 720) for p in photos()[:5]], axis=1)  # 3200 px wide
    frames = [strip[:, x : x + 1280].copy() for x in range(0, 1000, 40)]
    out = publish(frames, ZoneFinder(scanner(model), margin=0.25, hold_frames=15, max_lag_s=0.4))
    faces = 0
    for n, image in enumerate(frames):
        for box in reference_faces(image):
            faces += 1
            assert coverage(out[n], box, image.shape) >= 0.95, f"frame {n}: face {box} readable"
    assert faces >= 30
