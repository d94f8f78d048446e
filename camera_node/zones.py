"""Privacy zones per frame: static rectangles from config plus held, grown face detections.

Fail closed against the detector: a face box stays covered for ``hold_frames`` frames after the
detector last reported it, growing a little every frame it is held so a moving face stays
inside; if the detector raises, the whole frame becomes one zone.
"""

from __future__ import annotations

from dataclasses import dataclass

from camera_node.detect import Box
from common.config import StaticZoneSection
from common.format import ZoneClass

HOLD_GROWTH_PER_FRAME = 0.04  # share of the box size added on each side per held frame


@dataclass(frozen=True)
class Zone:
    x: int
    y: int
    w: int
    h: int
    zone_class: ZoneClass


def clip_zone(x: float, y: float, w: float, h: float, zone_class: ZoneClass,
              width: int, height: int) -> Zone | None:
    """Round outward to whole pixels and clip to the frame; None if nothing is left."""
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(width, int(-(-(x + w) // 1))), min(height, int(-(-(y + h) // 1)))
    if x1 <= x0 or y1 <= y0:
        return None
    return Zone(x0, y0, x1 - x0, y1 - y0, zone_class)


def resolve_static_zones(zones: list[StaticZoneSection], width: int, height: int) -> list[Zone]:
    out = []
    for cfg in zones:
        x, y, w, h = cfg.rect
        if cfg.units == "fraction":
            x, y, w, h = x * width, y * height, w * width, h * height
        zone = clip_zone(x, y, w, h, ZoneClass.from_label(cfg.zone_class), width, height)
        if zone is not None:
            out.append(zone)
    return out


def grow(box: Box, margin: float) -> Box:
    return Box(box.x - box.w * margin, box.y - box.h * margin,
               box.w * (1 + 2 * margin), box.h * (1 + 2 * margin), box.score)


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    box: Box
    missed: int = 0


class FaceHold:
    """Keeps faces covered between and after detections."""

    def __init__(self, margin: float, hold_frames: int) -> None:
        self.margin = margin
        self.hold_frames = hold_frames
        self._tracks: list[_Track] = []

    def update(self, detections: list[Box]) -> list[Box]:
        """Feed this frame's detections; returns the boxes to cover (grown by the margin)."""
        fresh = [_Track(d) for d in detections]
        for track in self._tracks:
            if any(_iou(track.box, f.box) > 0.3 for f in fresh):
                continue
            track.missed += 1
            if track.missed <= self.hold_frames:
                fresh.append(track)
        self._tracks = fresh
        return [grow(t.box, self.margin + HOLD_GROWTH_PER_FRAME * t.missed) for t in self._tracks]

    def fail_closed(self) -> None:
        """Forget nothing: count a frame as missed for every track (used when detection fails)."""
        for track in self._tracks:
            track.missed += 1
