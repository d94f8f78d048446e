#!/usr/bin/env python
"""Build the veilcam demo clip ``people.mp4`` from images bundled with scikit-image.

The clip imitates a fixed indoor security camera: a static brick-wall /
gravel-floor scene over which head-and-shoulders cut-outs of real people
move smoothly, enter and leave the frame, change scale slightly and partly
overlap, with mild per-frame sensor noise and a timestamp overlay.

Every source image ships inside the scikit-image wheel (``skimage/data/``);
nothing is downloaded.  See ``README.md`` next to this script for the source
and licence of each image.

Usage::

    python sample_videos/tools/build_sample.py [OUTPUT.mp4] [--annotations BOXES.csv]

``OUTPUT.mp4`` defaults to ``people.mp4`` beside this script.  With
``--annotations`` a CSV of the ground-truth face boxes (one row per face per
frame, with the fraction of the face box that is visible) is written too.

Requirements at build time only: numpy, opencv-python(-headless) 4.x and
scikit-image (imported lazily; veilcam itself does not depend on it).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 640, 360
FPS = 30
DURATION_S = 20
N_FRAMES = FPS * DURATION_S  # 600
SEED = 20240601
NOISE_SIGMA = 3.0  # mild Gaussian sensor noise, in 8-bit grey levels
FOURCC = "mp4v"
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "people.mp4"


# --------------------------------------------------------------------------
# Source images (all from skimage/data, loaded through skimage.data so that
# no network access is needed: these files are part of the wheel).
# --------------------------------------------------------------------------


def load_sources() -> dict[str, np.ndarray]:
    import skimage.data as skd  # build-time only dependency

    return {
        "astronaut": skd.astronaut(),  # (512, 512, 3) RGB, NASA, public domain
        "camera": skd.camera(),  # (512, 512) grey, CC0 (Lav Varshney)
        "brick": skd.brick(),  # (512, 512) grey, CC0 (CC0Textures)
        "gravel": skd.gravel(),  # (512, 512) grey, CC0 (CC0Textures)
    }


def rgb2bgr(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[..., ::-1])


def grey2bgr(img: np.ndarray) -> np.ndarray:
    return np.dstack([img, img, img])


# --------------------------------------------------------------------------
# Background: brick wall, skirting board and a gravel floor seen in
# perspective, with a warm lamp gradient and vignetting.
# --------------------------------------------------------------------------


def build_background(src: dict[str, np.ndarray]) -> np.ndarray:
    h, w = HEIGHT, WIDTH
    horizon = 236  # wall/floor boundary (row)

    # Wall: brick texture, slightly enlarged, tinted to a warm red-brown.
    brick = src["brick"].astype(np.float32) / 255.0
    brick = cv2.resize(brick, (720, 720), interpolation=cv2.INTER_CUBIC)
    wall = brick[40 : 40 + horizon, 40 : 40 + w]
    wall = 0.35 + 0.55 * wall
    wall_bgr = np.dstack([wall * 0.62, wall * 0.70, wall * 0.92])

    # Floor: gravel texture warped so that it recedes towards the wall.
    gravel = src["gravel"].astype(np.float32) / 255.0
    gh, gw = gravel.shape
    floor_h = h - horizon
    src_quad = np.float32([[0, 0], [gw - 1, 0], [gw - 1, gh - 1], [0, gh - 1]])
    dst_quad = np.float32([[150, 0], [w - 150, 0], [w + 260, floor_h - 1], [-260, floor_h - 1]])
    m = cv2.getPerspectiveTransform(src_quad, dst_quad)
    floor = cv2.warpPerspective(
        gravel, m, (w, floor_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    floor = 0.30 + 0.50 * floor
    floor_bgr = np.dstack([floor * 0.80, floor * 0.85, floor * 0.88])

    bg = np.concatenate([wall_bgr, floor_bgr], axis=0)

    # Skirting board along the base of the wall.
    bg[horizon - 7 : horizon + 1] = np.float32([0.18, 0.20, 0.22])
    bg[horizon + 1 : horizon + 3] *= 0.6  # contact shadow

    # Lighting: warm ceiling lamp top-centre plus vignetting.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lamp = np.exp(-(((xx - 0.55 * w) / (0.75 * w)) ** 2 + ((yy - 0.05 * h) / (0.9 * h)) ** 2))
    r = np.sqrt(((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2)
    vignette = 1.0 - 0.28 * np.clip(r - 0.35, 0, None) ** 1.5
    light = (0.55 + 0.60 * lamp) * vignette
    bg *= light[..., None]

    # Security cameras are rarely perfectly sharp.
    bg = cv2.GaussianBlur(bg, (0, 0), 0.8)
    return np.clip(bg * 255.0, 0, 255).astype(np.float32)


# --------------------------------------------------------------------------
# Person "cards": head-and-shoulders cut-outs with a feathered alpha matte.
# --------------------------------------------------------------------------


@dataclass
class Card:
    name: str
    rgb: np.ndarray  # float32 BGR, 0..255, (h, w, 3)
    alpha: np.ndarray  # float32 0..1, (h, w)
    face: tuple[float, float, float, float]  # x, y, w, h of the face in card coords


def _grabcut(bgr: np.ndarray, rect, fg_polys=(), bg_polys=(), iters: int = 6) -> np.ndarray:
    """Foreground matte (0/1 float32) from OpenCV GrabCut with a few hand seeds."""
    cv2.setRNGSeed(SEED)  # GrabCut's k-means initialisation uses OpenCV's RNG
    mask = np.full(bgr.shape[:2], cv2.GC_BGD, np.uint8)
    x, y, w, h = rect
    mask[y : y + h, x : x + w] = cv2.GC_PR_FGD
    for poly in bg_polys:
        cv2.fillPoly(mask, [np.int32(poly)], cv2.GC_BGD)
    for poly in fg_polys:
        cv2.fillPoly(mask, [np.int32(poly)], cv2.GC_FGD)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.grabCut(bgr, mask, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    # keep the largest connected component (drops stray specks)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n > 2:
        keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        fg = (lab == keep).astype(np.uint8)
    return fg.astype(np.float32)


def _finish_alpha(fg: np.ndarray, feather: float, edge_fade: int) -> np.ndarray:
    """Feather the matte and fade it out towards the left/right/bottom card edges
    (where the person is cut by the border of the original photograph)."""
    a = cv2.GaussianBlur(fg, (0, 0), feather)
    h, w = a.shape
    ramp_x = np.minimum(np.arange(w), np.arange(w)[::-1]).astype(np.float32)
    ramp_x = np.clip(ramp_x / edge_fade, 0, 1)
    ramp_y = np.clip(np.arange(h)[::-1].astype(np.float32) / edge_fade, 0, 1)
    a *= ramp_x[None, :] * ramp_y[:, None]
    a[:1] = 0
    return a


def build_cards(src: dict[str, np.ndarray]) -> list[Card]:
    cards = []

    # 1) Eileen Collins (astronaut.png).  Face box in the 512x512 photo is
    #    about (178, 63, 90, 113) (YuNet on the original).
    ast_full = rgb2bgr(src["astronaut"])
    fg = _grabcut(
        ast_full,
        rect=(20, 5, 380, 507),
        fg_polys=[
            [[190, 75], [260, 75], [260, 165], [190, 165]],  # face
            [[185, 30], [265, 30], [265, 55], [185, 55]],  # hair
            [[150, 190], [290, 190], [290, 250], [150, 250]],  # collar ring
            [[120, 300], [340, 300], [340, 420], [120, 420]],  # suit
        ],
        bg_polys=[
            [[0, 0], [120, 0], [120, 240], [0, 240]],
            [[330, 0], [512, 0], [512, 240], [330, 240]],
        ],
    )
    x0, y0, x1, y1 = 20, 0, 400, 512
    ast = ast_full[y0:y1, x0:x1].astype(np.float32) * 0.93
    a = _finish_alpha(fg[y0:y1, x0:x1], feather=1.6, edge_fade=30)
    cards.append(Card("astronaut", ast, a, (178 - x0, 63 - y0, 90, 113)))

    # 2) The cameraman (camera.png, greyscale).  Face box about
    #    (196, 113, 61, 81); the crop is upscaled x1.45 so the face is roughly
    #    the size of the astronaut's.
    cam_full = grey2bgr(src["camera"])
    fg = _grabcut(
        cam_full,
        rect=(0, 55, 336, 457),
        fg_polys=[
            [[195, 105], [240, 105], [240, 180], [195, 180]],  # face
            [[180, 80], [250, 80], [250, 100], [180, 100]],  # hair
            [[40, 250], [150, 250], [150, 450], [40, 450]],  # coat
        ],
        bg_polys=[
            [[268, 55], [420, 55], [420, 132], [268, 132]],  # sky by the camcorder
            [[302, 212], [420, 212], [420, 512], [302, 512]],
        ],
    )  # skyline/grass, tripod legs
    x0, y0, x1, y1 = 0, 50, 340, 512
    s = 1.45
    cam = cv2.resize(
        cam_full[y0:y1, x0:x1], None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC
    ).astype(np.float32)
    cam *= np.float32([0.95, 0.98, 1.02])  # faint warm cast, like the colour cards
    a = cv2.resize(fg[y0:y1, x0:x1], None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
    a = _finish_alpha(a, feather=2.0, edge_fade=40)
    cards.append(Card("camera", cam, a, ((196 - x0) * s, (113 - y0) * s, 61 * s, 81 * s)))

    # 3) A mirrored, desaturated, darker copy of the astronaut card, used as
    #    a smaller third passer-by further from the camera.
    base = cards[0]
    mir = base.rgb[:, ::-1].copy()
    grey = mir.mean(axis=2, keepdims=True)
    mir = (0.45 * mir + 0.55 * grey) * np.float32([0.85, 0.88, 0.95]) * 0.85
    alpha = base.alpha[:, ::-1].copy()
    fx, fy, fw, fh = base.face
    cards.append(Card("astronaut_mirrored", mir, alpha, (base.rgb.shape[1] - fx - fw, fy, fw, fh)))
    return cards


# --------------------------------------------------------------------------
# Motion: each track walks across the frame; position/scale are smooth
# functions of time.  Tracks are drawn in list order (later ones in front).
# --------------------------------------------------------------------------


@dataclass
class Track:
    card: int
    t0: float  # seconds: start (card just outside the frame)
    t1: float  # seconds: end (card just outside the other side)
    direction: int  # +1 left->right, -1 right->left
    y_face: float  # row of the top of the face box (plus a small walking bob)
    scale0: float
    scale1: float
    bob_hz: float
    bob_px: float
    phase: float


TRACKS = [
    # far passer-by: mirrored astronaut, smaller, walks left->right
    Track(
        card=2,
        t0=7.5,
        t1=17.0,
        direction=+1,
        y_face=80,
        scale0=0.66,
        scale1=0.74,
        bob_hz=1.9,
        bob_px=2.0,
        phase=0.4,
    ),
    # astronaut: enters right, crosses to the left
    Track(
        card=0,
        t0=0.6,
        t1=10.5,
        direction=-1,
        y_face=70,
        scale0=0.95,
        scale1=1.12,
        bob_hz=1.7,
        bob_px=3.0,
        phase=0.0,
    ),
    # cameraman: enters left, crosses right (faster), overlaps the astronaut mid-way
    Track(
        card=1,
        t0=2.5,
        t1=9.5,
        direction=+1,
        y_face=95,
        scale0=0.96,
        scale1=1.06,
        bob_hz=2.0,
        bob_px=3.0,
        phase=1.3,
    ),
    # astronaut again, later and nearer the camera, left->right
    Track(
        card=0,
        t0=12.0,
        t1=19.6,
        direction=+1,
        y_face=58,
        scale0=1.10,
        scale1=1.22,
        bob_hz=1.8,
        bob_px=3.0,
        phase=2.1,
    ),
    # cameraman again, right->left, a bit smaller; crosses the far passer-by and the astronaut
    Track(
        card=1,
        t0=10.5,
        t1=19.0,
        direction=-1,
        y_face=110,
        scale0=0.86,
        scale1=0.94,
        bob_hz=2.1,
        bob_px=2.5,
        phase=0.7,
    ),
]


def _smoothstep(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    # mostly linear with gentle ease-in/out, like a person starting to walk
    return 0.8 * u + 0.2 * (u * u * (3 - 2 * u))


def track_pose(tr: Track, card: Card, t: float):
    """Return (affine 2x3, scale) mapping card coords to frame coords, or None."""
    if not (tr.t0 <= t <= tr.t1):
        return None
    u = (t - tr.t0) / (tr.t1 - tr.t0)
    s = tr.scale0 + (tr.scale1 - tr.scale0) * u
    fx, fy, fw, _ = card.face
    # The face centre travels so that the whole card (its visible alpha extent)
    # starts just outside one edge of the frame and ends just outside the other.
    cols = np.flatnonzero(card.alpha.max(axis=0) > 0.01)
    ax0, ax1 = float(cols[0]), float(cols[-1] + 1)
    fcx = fx + fw / 2
    if tr.direction > 0:
        x_start = -(ax1 - fcx) * tr.scale0
        x_end = WIDTH + (fcx - ax0) * tr.scale1
    else:
        x_start = WIDTH + (fcx - ax0) * tr.scale0
        x_end = -(ax1 - fcx) * tr.scale1
    face_cx = x_start + (x_end - x_start) * _smoothstep(u)
    face_top = tr.y_face + tr.bob_px * math.sin(2 * math.pi * tr.bob_hz * t + tr.phase)
    # card origin so that the face centre / top land where requested
    ox = face_cx - (fx + fw / 2) * s
    oy = face_top - fy * s
    m = np.float32([[s, 0, ox], [0, s, oy]])
    return m, s


def face_box(card: Card, m: np.ndarray) -> tuple[float, float, float, float]:
    fx, fy, fw, fh = card.face
    s = float(m[0, 0])
    return (fx * s + float(m[0, 2]), fy * s + float(m[1, 2]), fw * s, fh * s)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def render(output: Path, annotations: Path | None = None) -> dict:
    src = load_sources()
    bg = build_background(src)
    cards = build_cards(src)
    rng = np.random.default_rng(SEED)

    output.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*FOURCC), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {output} with fourcc {FOURCC!r}")

    rows = []
    # Slow, very small global exposure drift (auto-exposure hunting).
    drift_phase = rng.uniform(0, 2 * math.pi)
    for i in range(N_FRAMES):
        t = i / FPS
        frame = bg.copy()
        placed = []  # (track index, card, matrix, warped alpha) far-to-near
        for k, tr in enumerate(TRACKS):
            card = cards[tr.card]
            pose = track_pose(tr, card, t)
            if pose is None:
                continue
            m, _ = pose
            a = cv2.warpAffine(
                card.alpha,
                m,
                (WIDTH, HEIGHT),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
            if not a.any():
                continue
            img = cv2.warpAffine(
                card.rgb,
                m,
                (WIDTH, HEIGHT),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
            # soft contact shadow on the wall behind the person
            sh = cv2.GaussianBlur(a, (0, 0), 9)
            sh = np.roll(sh, (6, 8), axis=(0, 1))
            frame *= (1.0 - 0.25 * sh)[..., None]
            frame = frame * (1.0 - a[..., None]) + img * a[..., None]
            placed.append((k, card, m, a))

        # ground truth: visible fraction of each face box
        for j, (k, card, m, _a) in enumerate(placed):
            x, y, w, h = face_box(card, m)
            x0, y0 = round(x), round(y)
            x1, y1 = round(x + w), round(y + h)
            area = max(1, (x1 - x0) * (y1 - y0))
            cx0, cy0 = max(0, x0), max(0, y0)
            cx1, cy1 = min(WIDTH, x1), min(HEIGHT, y1)
            if cx1 <= cx0 or cy1 <= cy0:
                visible = 0.0
            else:
                occl = np.zeros((cy1 - cy0, cx1 - cx0), bool)
                for _, _, _, a2 in placed[j + 1 :]:
                    occl |= a2[cy0:cy1, cx0:cx1] > 0.5
                visible = float((~occl).sum()) / area
            rows.append(
                (
                    i,
                    TRACKS[k].card,
                    cards[TRACKS[k].card].name,
                    k,
                    round(x, 1),
                    round(y, 1),
                    round(w, 1),
                    round(h, 1),
                    round(visible, 3),
                )
            )

        gain = 1.0 + 0.02 * math.sin(2 * math.pi * t / 7.0 + drift_phase)
        frame *= gain
        frame += rng.normal(0.0, NOISE_SIGMA, frame.shape).astype(np.float32)
        out = np.clip(frame, 0, 255).astype(np.uint8)
        stamp = f"CAM 02  LOBBY   2024-06-01 03:14:{7 + int(t):02d}.{i % FPS:02d}"
        cv2.putText(out, stamp, (10, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(
            out, stamp, (10, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1, cv2.LINE_AA
        )
        writer.write(out)
    writer.release()

    if annotations is not None:
        annotations.parent.mkdir(parents=True, exist_ok=True)
        with open(annotations, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(
                ["frame", "card", "source", "track", "x", "y", "w", "h", "visible_fraction"]
            )
            wr.writerows(rows)

    # read-back check
    cap = cv2.VideoCapture(str(output))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    decoded = 0
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        decoded += 1
    cap.release()
    if (w, h) != (WIDTH, HEIGHT) or decoded != N_FRAMES:
        raise RuntimeError(f"read-back mismatch: {w}x{h}, {decoded} decoded / {n} reported frames")
    return {
        "path": str(output),
        "frames": decoded,
        "reported_frames": n,
        "size": (w, h),
        "bytes": output.stat().st_size,
        "boxes": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "output",
        nargs="?",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"output .mp4 (default: {DEFAULT_OUTPUT})",
    )
    ap.add_argument(
        "--annotations",
        type=Path,
        default=None,
        help="also write ground-truth face boxes to this CSV",
    )
    args = ap.parse_args(argv)
    info = render(args.output, args.annotations)
    print(
        f"wrote {info['path']}: {info['size'][0]}x{info['size'][1]}, {FPS} fps, "
        f"{info['frames']} frames, {info['bytes']} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
