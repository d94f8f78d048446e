"""The face-leak metric of bench/leaks.py (bench/leakmetric.py): a face left uncovered in the
public frame is readable; a face covered (solid, pixelated, noise) is not, nor is a dark flat
patch that is only a little brighter than a dark face (close in PSNR, no shared structure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from bench.leakmetric import (
    CORR_MIN,
    PSNR_MIN_DB,
    is_readable,
    laplacian_corr,
    longest_readable_run,
    make_detector,
    reference_faces,
    time_reference,
    zone_share,
)
from tests.conftest import MEDIA, YUNET, require_media

PHOTOS = MEDIA / "faces_annotated"
PHOTO = "2008_001009.jpg"  # two large frontal faces (76 and 90 px)


@pytest.fixture(scope="module")
def photo() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The photo as the 'original' frame, and its first annotated face box (x, y, w, h)."""
    if not PHOTOS.is_dir():
        pytest.skip("../shared/media absent: the annotated face photos are not in a fresh clone")
    image = cv2.imread(str(require_media(PHOTOS / PHOTO)))
    for xml in ("training.xml", "testing.xml"):
        for node in ET.parse(PHOTOS / xml).getroot().iter("image"):
            if node.get("file") == PHOTO:
                b = next(node.iter("box"))
                box = (
                    int(b.get("left")),
                    int(b.get("top")),
                    int(b.get("width")),
                    int(b.get("height")),
                )
                return image, box
    pytest.fail(f"{PHOTO} has no annotated box")


def _covered(original: np.ndarray, box, how: str) -> np.ndarray:
    public = original.copy()
    x, y, w, h = box
    patch = public[y : y + h, x : x + w]
    if how == "solid":
        patch[:] = patch.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    elif how == "pixelate":
        small = cv2.resize(patch, (8, 8), interpolation=cv2.INTER_AREA)
        patch[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    elif how == "noise":
        patch[:] = np.random.default_rng(0).integers(0, 256, patch.shape, dtype=np.uint8)
    return public


def test_uncovered_face_is_readable(photo):
    original, box = photo
    ok, p, c = is_readable(original.copy(), original, box)
    assert ok and p == float("inf") and c > 0.9


def test_uncovered_face_through_jpeg_is_readable(photo):
    """A face the public JPEG (quality 90) shows is still readable: the thresholds do not
    depend on bit-identical pixels."""
    original, box = photo
    _, buf = cv2.imencode(".jpg", original, [cv2.IMWRITE_JPEG_QUALITY, 90])
    ok, p, c = is_readable(cv2.imdecode(buf, cv2.IMREAD_COLOR), original, box)
    assert ok, (p, c)
    assert c > 0.9


@pytest.mark.parametrize("how", ["solid", "pixelate", "noise"])
def test_covered_face_is_not_readable(photo, how):
    original, box = photo
    ok, p, c = is_readable(_covered(original, box, how), original, box)
    assert not ok, (how, p, c)
    assert c < CORR_MIN


def test_solid_fill_has_zero_correlation(photo):
    """A constant Laplacian (a flat public patch) gives correlation 0, not NaN."""
    original, box = photo
    x, y, w, h = box
    flat = np.full((h, w, 3), 128, np.uint8)
    assert laplacian_corr(flat, original[y : y + h, x : x + w]) == 0.0
    assert laplacian_corr(flat, flat) == 0.0


def test_dark_flat_patch_a_little_brighter_is_not_readable(photo):
    """A dark, low-contrast face covered by a flat patch a little brighter than its mean is
    close in PSNR (>= 30 dB) but shares no structure: not readable."""
    original, box = photo
    x, y, w, h = box
    dark = original.copy()
    dark[y : y + h, x : x + w] = (original[y : y + h, x : x + w].astype(np.float32) * 0.1).astype(
        np.uint8
    )
    public = dark.copy()
    mean = dark[y : y + h, x : x + w].reshape(-1, 3).mean(axis=0)
    public[y : y + h, x : x + w] = np.clip(mean + 3, 0, 255).astype(np.uint8)
    ok, p, c = is_readable(public, dark, box)
    assert p >= PSNR_MIN_DB, p  # the PSNR test alone would call it readable
    assert not ok and c < CORR_MIN, (p, c)


def test_box_is_clipped_to_the_frame(photo):
    original, box = photo
    h, w = original.shape[:2]
    x, y, bw, bh = box
    ok, _, _ = is_readable(original.copy(), original, (x - 10_000, y, bw + 10_000, bh))
    assert ok  # clipped to the part inside the frame
    ok, p, c = is_readable(original.copy(), original, (w + 5, h + 5, 20, 20))
    assert not ok and (p, c) == (0.0, 0.0)  # nothing inside: not readable
    with pytest.raises(ValueError):
        is_readable(original[:10], original, box)


def test_zone_share_union_and_whole_frame():
    zones = [
        {"x": 0, "y": 0, "w": 50, "h": 100, "class": "face"},
        {"x": 25, "y": 0, "w": 50, "h": 100, "class": "face"},
    ]  # overlap counted once
    assert zone_share(zones, 100, 100) == (0.75, False)
    assert zone_share([{"x": 0, "y": 0, "w": 100, "h": 100, "class": "face"}], 100, 100) == (
        1.0,
        True,
    )
    assert zone_share([{"x": 10, "y": 10, "w": 5, "h": 5, "class": "full"}], 100, 100) == (
        1.0,
        True,
    )
    assert zone_share([], 100, 100) == (0.0, False)


def test_longest_readable_run_follows_one_face():
    a, b = (10, 10, 20, 20), (200, 200, 20, 20)
    frames = [[a], [a, b], [(11, 10, 20, 20)], [], [b], [b]]
    assert longest_readable_run(frames) == 3
    assert longest_readable_run([]) == 0


def test_reference_faces_finds_annotated_faces(photo):
    if not YUNET.is_file():
        pytest.skip(f"{YUNET} absent: the YuNet model lives in ../shared, not in a fresh clone")
    original, box = photo
    detector = make_detector(YUNET)
    faces = reference_faces(original, detector)
    assert len(faces) >= 1
    hw, hh = original.shape[1], original.shape[0]
    assert all(0 <= x and 0 <= y and x + w <= hw and y + h <= hh for x, y, w, h in faces)
    assert time_reference([original], detector, repeats=1) > 0
    assert time_reference([], detector) == 0.0
