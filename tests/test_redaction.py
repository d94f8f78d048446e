"""Redaction styles make a zone unreadable; zones from detections are held and clipped."""

from __future__ import annotations

import numpy as np
import pytest

from camera_node.detect import Box
from camera_node.redact import make_redactor
from camera_node.zones import FaceHold, clip_zone, resolve_static_zones
from common.config import StaticZoneSection
from common.format import ZoneClass
from tests.factory import textured


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def detail(image: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels: what makes features readable."""
    img = image.astype(np.int16)
    return float(np.abs(np.diff(img, axis=1)).mean() + np.abs(np.diff(img, axis=0)).mean())


@pytest.mark.parametrize("style", ["pixelate", "solid", "blur", "noise"])
def test_style_destroys_the_zone(style: str) -> None:
    image = textured(200, 200, seed=3)
    region = image[20:180, 30:150]
    original = region.copy()
    make_redactor(style)(region)
    assert psnr(region, original) < 20
    if style != "noise":
        assert detail(region) < 0.35 * detail(original)
    # the rest of the frame is untouched
    untouched = textured(200, 200, seed=3)
    assert np.array_equal(image[:, 150:], untouched[:, 150:])


def test_unknown_style_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown redaction style"):
        make_redactor("smudge")


def test_face_hold_keeps_covering_after_a_missed_detection() -> None:
    hold = FaceHold(margin=0.2, hold_frames=3)
    face = Box(100, 100, 40, 40)
    first = hold.update([face])
    assert len(first) == 1 and first[0].w == pytest.approx(40 * 1.4)
    for _ in range(3):
        boxes = hold.update([])
        assert len(boxes) == 1 and boxes[0].w > first[0].w  # held and growing
    assert hold.update([]) == []  # released after hold_frames


def test_new_detection_replaces_held_box() -> None:
    hold = FaceHold(margin=0.0, hold_frames=10)
    hold.update([Box(100, 100, 40, 40)])
    boxes = hold.update([Box(104, 102, 40, 40)])
    assert len(boxes) == 1 and boxes[0].x == 104


def test_zones_are_clipped_to_the_frame() -> None:
    assert clip_zone(-10.5, -3, 50, 20, ZoneClass.FACE, 30, 30) == \
        clip_zone(0, 0, 39.5, 17, ZoneClass.FACE, 30, 30)
    zone = clip_zone(20.2, 25.7, 30, 30, ZoneClass.FACE, 40, 40)
    assert (zone.x, zone.y, zone.w, zone.h) == (20, 25, 20, 15)
    assert clip_zone(50, 50, 10, 10, ZoneClass.FACE, 40, 40) is None


def test_fractional_static_zone_resolves_to_pixels() -> None:
    cfg = StaticZoneSection.model_validate({"rect": [0.5, 0.25, 0.5, 0.5], "units": "fraction",
                                            "class": "plate"})
    (zone,) = resolve_static_zones([cfg], 640, 360)
    assert (zone.x, zone.y, zone.w, zone.h, zone.zone_class) == (320, 90, 320, 180,
                                                                 ZoneClass.PLATE)
