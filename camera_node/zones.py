"""Privacy zones per frame: static rectangles from config plus held, grown face detections.

Fail closed against the detector: a face box stays covered for ``hold_frames`` frames after the
detector last reported it, growing a little every frame it is held so a moving face stays
inside; if the detector raises, the whole frame becomes one zone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from veilcam.camera_node.detect import Box
from veilcam.common.config import StaticZoneSection
from veilcam.common.errors import ConfigError
from veilcam.common.format import ZoneClass

HOLD_GROWTH_PER_FRAME = 0.04  # share of the box size added on each side per held frame


@dataclass(frozen=True)
class Zone:
    x: int
    y: int
    w: int
    h: int
    zone_class: ZoneClass


def clip_zone(
    x: float, y: float, w: float, h: float, zone_class: ZoneClass, width: int, height: int
) -> Zone | None:
    """Round outward to whole pixels and clip to the frame; None if nothing is left."""
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(width, int(-(-(x + w) // 1))), min(height, int(-(-(y + h) // 1)))
    if x1 <= x0 or y1 <= y0:
        return None
    return Zone(x0, y0, x1 - x0, y1 - y0, zone_class)


def without_contained(zones: list[Zone]) -> list[Zone]:
    """``zones`` less each one that lies wholly inside another zone of the same class (of two
    identical ones, the first stays): the same pixels stay covered under the same class key.
    A crowd's held face boxes inside the cells still waiting for a rescan would otherwise
    count against MAX_ZONES, past which the whole frame is covered (pan720 at the 0.45
    native threshold: 15 of 210 frames), and each would travel as its own encrypted crop in
    JPEG mode."""
    n = len(zones)
    if n < 2:
        return list(zones)
    a = np.array([(z.x, z.y, z.x + z.w, z.y + z.h, z.zone_class) for z in zones], np.int64)
    x0, y0, x1, y1, cls = (a[:, k] for k in range(5))
    # inside[i, j]: zone i lies within zone j, same class
    inside = (
        (cls[:, None] == cls[None, :])
        & (x0[:, None] >= x0[None, :])
        & (y0[:, None] >= y0[None, :])
        & (x1[:, None] <= x1[None, :])
        & (y1[:, None] <= y1[None, :])
    )
    np.fill_diagonal(inside, False)
    order = np.arange(n)
    inside &= ~(inside.T & (order[:, None] < order[None, :]))  # identical: keep the first
    drop = inside.any(axis=1)
    return [z for z, d in zip(zones, drop, strict=True) if not d]


def resolve_static_zones(zones: list[StaticZoneSection], width: int, height: int) -> list[Zone]:
    """The configured zones in pixels of a ``width`` x ``height`` frame. A zone that lies
    wholly outside the frame is a configuration error (ConfigError), not silently nothing: it
    was meant to hide something, and would hide nothing."""
    out = []
    for i, cfg in enumerate(zones):
        x, y, w, h = cfg.rect
        if cfg.units == "fraction":
            x, y, w, h = x * width, y * height, w * width, h * height
        zone = clip_zone(x, y, w, h, ZoneClass.from_label(cfg.zone_class), width, height)
        if zone is None:
            name = f" ({cfg.name})" if cfg.name else ""
            raise ConfigError(
                f"camera config: key 'zones[{i}]'{name}: rect "
                f"{[float(v) for v in cfg.rect]} ({cfg.units}) lies outside the "
                f"{width}x{height} frame and would cover nothing"
            )
        out.append(zone)
    return out


def grow(box: Box, margin: float) -> Box:
    return Box(
        box.x - box.w * margin,
        box.y - box.h * margin,
        box.w * (1 + 2 * margin),
        box.h * (1 + 2 * margin),
        box.score,
    )


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def iou_matrix(a: list[Box], b: list[Box]) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b`` (len(a) x len(b)), vectorised: a
    crowd of hundreds of faces is hundreds of thousands of pairs."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    p = np.array([(x.x, x.y, x.x + x.w, x.y + x.h) for x in a])[:, None, :]
    q = np.array([(x.x, x.y, x.x + x.w, x.y + x.h) for x in b])[None, :, :]
    iw = np.clip(np.minimum(p[..., 2], q[..., 2]) - np.maximum(p[..., 0], q[..., 0]), 0, None)
    ih = np.clip(np.minimum(p[..., 3], q[..., 3]) - np.maximum(p[..., 1], q[..., 1]), 0, None)
    inter = iw * ih
    area_p = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])
    area_q = (q[..., 2] - q[..., 0]) * (q[..., 3] - q[..., 1])
    union = area_p + area_q - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass
class _Track:
    box: Box
    frame_no: int  # the frame the box was detected on
    vx: float = 0.0  # estimated motion, pixels per frame
    vy: float = 0.0
    missed: int = 0


def _shift(box: Box, dx: float, dy: float) -> Box:
    return Box(box.x + dx, box.y + dy, box.w, box.h, box.score)


def _union(a: Box, b: Box) -> Box:
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    x1, y1 = max(a.x + a.w, b.x + b.w), max(a.y + a.h, b.y + b.h)
    return Box(x0, y0, x1 - x0, y1 - y0, max(a.score, b.score))


class FaceHold:
    """Keeps faces covered between and after detections, following their motion.

    Each face is a track with a constant-velocity estimate from its last two detections.
    Between detections (and for ``hold_frames`` detections after the face was last seen) the
    covered box is the union of where it was last seen and where its motion predicts it now,
    both grown by the margin plus a little more for every frame since: a face that keeps
    moving, stops, or turns stays inside.
    """

    def __init__(self, margin: float, hold_frames: int) -> None:
        self.margin = margin
        self.hold_frames = hold_frames
        self._tracks: list[_Track] = []

    def update(self, detections: list[Box], frame_no: int = 0) -> list[Box]:
        """Feed a detection result made on frame ``frame_no``; returns the boxes to cover."""
        fresh: list[_Track] = []
        matched: set[int] = set()
        overlaps = iou_matrix(detections, [self._predict(t, frame_no) for t in self._tracks])
        for row, det in zip(overlaps, detections, strict=True):
            best = None
            if row.size:
                row[list(matched)] = 0.0
                j = int(np.argmax(row))
                best = j if row[j] > 0.2 else None
            track = _Track(det, frame_no)
            if best is not None:
                matched.add(best)
                old = self._tracks[best]
                dt = frame_no - old.frame_no
                if dt > 0:
                    vx = (det.x + det.w / 2 - old.box.x - old.box.w / 2) / dt
                    vy = (det.y + det.h / 2 - old.box.y - old.box.h / 2) / dt
                    track.vx, track.vy = 0.5 * (vx + old.vx), 0.5 * (vy + old.vy)
            fresh.append(track)
        for i, track in enumerate(self._tracks):
            if i in matched:
                continue
            track.missed += 1
            if track.missed <= self.hold_frames:
                fresh.append(track)
        self._tracks = fresh
        return self.boxes(frame_no)

    def rescale(self, sx: float, sy: float) -> None:
        """The source changed its frame size (an IP camera reconfigured): the faces held are
        where they were in the picture, so their boxes and motion scale with it."""
        for t in self._tracks:
            b = t.box
            t.box = Box(b.x * sx, b.y * sy, b.w * sx, b.h * sy, b.score)
            t.vx, t.vy = t.vx * sx, t.vy * sy

    @staticmethod
    def _predict(track: _Track, frame_no: int) -> Box:
        dt = frame_no - track.frame_no
        return _shift(track.box, track.vx * dt, track.vy * dt)

    def boxes(self, frame_no: int = 0) -> list[Box]:
        """The boxes to cover on frame ``frame_no`` (at or after the last detection)."""
        out = []
        for t in self._tracks:
            dt = max(0, frame_no - t.frame_no)
            margin = self.margin + HOLD_GROWTH_PER_FRAME * (dt + t.missed)
            out.append(_union(grow(t.box, margin), grow(self._predict(t, frame_no), margin)))
        return out
