"""The face-leak metric of ``bench/leaks.py``: which faces of a frame can anybody read in the
public frame?

* **Reference faces** of a frame: YuNet (``cv2.FaceDetectorYN``) run on the frame at its full
  native resolution (input size = frame size), score >= 0.75. This is the slow, thorough pass
  the camera cannot afford live; it runs on the *original* frame (the unlocked one).
* A reference face is **readable** in the public frame when the public pixels of its box
  (clipped to the frame) are close to the original ones: PSNR >= 30 dB **and** the Pearson
  correlation of the Laplacians (``cv2.Laplacian`` of the grayscale patches, float) >= 0.5.
  A covered face (pixelated, solid, noise, blurred) scores a correlation near 0; an uncovered
  one near 1 (the pixels outside zones are bit-identical in the two frames). The second test
  keeps a dark, flat patch that is a little brighter, close in PSNR, from counting.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h in pixels

REF_SCORE = 0.75
PSNR_MIN_DB = 30.0
CORR_MIN = 0.5


# --------------------------------------------------------------------------- reference faces


def make_detector(model: str | Path, score: float = REF_SCORE) -> cv2.FaceDetectorYN:
    """A YuNet detector for the reference pass (its input size is set per frame)."""
    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"YuNet model {model} not found")
    return cv2.FaceDetectorYN.create(str(model), "", (320, 320), score, 0.3, 5000)


def reference_faces(
    image: np.ndarray, detector: cv2.FaceDetectorYN, score: float = REF_SCORE
) -> list[Box]:
    """Faces YuNet finds on ``image`` at its native resolution, score >= ``score``, as boxes
    clipped to the frame (empty boxes are dropped)."""
    h, w = image.shape[:2]
    detector.setInputSize((w, h))
    detector.setScoreThreshold(score)
    _, faces = detector.detect(image)
    boxes: list[Box] = []
    for row in [] if faces is None else faces:
        if float(row[14]) < score:
            continue
        box = clip_box(
            (
                int(math.floor(row[0])),
                int(math.floor(row[1])),
                int(math.ceil(row[2])),
                int(math.ceil(row[3])),
            ),
            w,
            h,
        )
        if box is not None:
            boxes.append(box)
    return boxes


def time_reference(
    images: list[np.ndarray], detector: cv2.FaceDetectorYN, repeats: int = 3
) -> float:
    """Frames per second of the reference pass alone (YuNet at native resolution, this
    process, OpenCV's default threads): each frame is timed ``repeats`` times and its fastest
    run kept (other processes on a shared machine only ever add time), then the median frame
    is taken. 0.0 without images."""
    if not images:
        return 0.0
    reference_faces(images[0], detector)  # warm-up: first inference allocates
    best = []
    for image in images:
        times = []
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            reference_faces(image, detector)
            times.append(time.perf_counter() - t)
        best.append(min(times))
    return 1.0 / float(np.median(best))


def clip_box(box: Box, width: int, height: int) -> Box | None:
    """``box`` clipped to a ``width`` x ``height`` frame, or None when nothing is left."""
    x, y, w, h = box
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def iou(a: Box, b: Box) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


# --------------------------------------------------------------------------- readable test


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 patches of the same shape (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def _gray(patch: np.ndarray) -> np.ndarray:
    if patch.ndim == 3 and patch.shape[2] == 3:
        patch = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
    elif patch.ndim == 3:
        patch = patch[:, :, 0]
    return patch.astype(np.float64)


def laplacian_corr(public: np.ndarray, original: np.ndarray) -> float:
    """Pearson correlation of the Laplacians of two patches; 0 when either Laplacian is
    constant (a solid fill, a flat patch: no structure to share)."""
    lp = cv2.Laplacian(_gray(public), cv2.CV_64F).ravel()
    lo = cv2.Laplacian(_gray(original), cv2.CV_64F).ravel()
    lp, lo = lp - lp.mean(), lo - lo.mean()
    den = math.sqrt(float(lp @ lp) * float(lo @ lo))
    if den <= 1e-9:
        return 0.0
    return float(lp @ lo) / den


def is_readable(
    public: np.ndarray,
    original: np.ndarray,
    box: Box,
    psnr_min: float = PSNR_MIN_DB,
    corr_min: float = CORR_MIN,
) -> tuple[bool, float, float]:
    """(readable, PSNR dB, Laplacian correlation) of ``box`` (clipped to the frame) in the
    public frame against the original. An empty box is not readable."""
    if public.shape != original.shape:
        raise ValueError(f"public {public.shape} and original {original.shape} differ")
    h, w = original.shape[:2]
    clipped = clip_box(box, w, h)
    if clipped is None:
        return False, 0.0, 0.0
    x, y, bw, bh = clipped
    pub = public[y : y + bh, x : x + bw]
    org = original[y : y + bh, x : x + bw]
    p = psnr(pub, org)
    c = laplacian_corr(pub, org)
    return (p >= psnr_min and c >= corr_min), p, c


# --------------------------------------------------------------------------- zones


def zone_share(zones: list[dict], width: int, height: int) -> tuple[float, bool]:
    """(union area of the zones / frame area, whole frame covered?) for one frame's zone
    records as the headless viewer describes them (``x, y, w, h, class``). A ``full`` zone
    (fail closed) or a zone equal to the frame counts as the whole frame."""
    if width <= 0 or height <= 0:
        return 0.0, False
    mask = np.zeros((height, width), dtype=bool)
    for z in zones:
        x, y, w, h = int(z["x"]), int(z["y"]), int(z["w"]), int(z["h"])
        if z.get("class") == "full" or (x <= 0 and y <= 0 and x + w >= width and y + h >= height):
            return 1.0, True
        c = clip_box((x, y, w, h), width, height)
        if c is not None:
            mask[c[1] : c[1] + c[3], c[0] : c[0] + c[2]] = True
    share = float(mask.mean())
    return share, share >= 1.0


def longest_readable_run(frames: list[list[Box]], min_iou: float = 0.3) -> int:
    """Longest run of consecutive frames one face stays readable: readable boxes of
    consecutive frames are chained when they overlap (IoU >= ``min_iou``)."""
    best = 0
    prev: list[tuple[Box, int]] = []
    for boxes in frames:
        cur: list[tuple[Box, int]] = []
        for b in boxes:
            run = 1 + max((n for pb, n in prev if iou(pb, b) >= min_iou), default=0)
            cur.append((b, run))
            best = max(best, run)
        prev = cur
    return best


# --------------------------------------------------------------------------- results


@dataclass
class ClipLeaks:
    """Per-clip results of the leak benchmark."""

    clip: str
    size: str = ""
    clip_fps: float = 0.0
    frames_in_clip: int = 0
    frames_published: int = 0
    frames_compared: int = 0  # frames present in both archive read-backs
    reference_faces: int = 0
    readable_faces: int = 0
    frames_with_readable: int = 0
    longest_readable_run: int = 0
    zone_area_mean: float = 0.0
    frames_full_cover: int = 0
    fail_closed: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)
    latency_ms: dict = field(default_factory=dict)
    camera_fps: float = 0.0
    camera_cpu_s: float = 0.0  # CPU time of the camera process (all its threads)
    detect_source: dict = field(default_factory=dict)  # camera.detect_source run: its counts
    reference_fps: float = 0.0
    detector: str = ""
    notes: list[str] = field(default_factory=list)
    readable_examples: list[dict] = field(default_factory=list)

    @property
    def readable_percent(self) -> float:
        return 100.0 * self.readable_faces / self.reference_faces if self.reference_faces else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["readable_percent"] = round(self.readable_percent, 2)
        d["camera_to_reference_fps"] = (
            round(self.camera_fps / self.reference_fps, 2) if self.reference_fps else None
        )
        return d
