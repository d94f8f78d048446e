"""Redaction styles: make a zone of the public frame unreadable, in place. Picked by name."""

from __future__ import annotations

import os
from collections.abc import Callable

import cv2
import numpy as np

Redactor = Callable[[np.ndarray], None]  # takes a view of the zone and overwrites it


def pixelate(blocks: int) -> Redactor:
    def apply(region: np.ndarray) -> None:
        h, w = region.shape[:2]
        scale = blocks / max(w, h)
        bw, bh = max(1, round(w * scale)), max(1, round(h * scale))
        small = cv2.resize(region, (bw, bh), interpolation=cv2.INTER_AREA)
        region[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    return apply


def solid(region: np.ndarray) -> None:
    region[:] = (32, 32, 32)


def blur(region: np.ndarray) -> None:
    """Three passes of a box blur as wide as half the zone: as smooth as a big Gaussian, cheaper."""
    h, w = region.shape[:2]
    k = max(3, (max(w, h) // 2) | 1)
    out = region
    for _ in range(3):
        out = cv2.blur(out, (k, k), borderType=cv2.BORDER_REFLECT)
    region[:] = out


_rng = np.random.default_rng(int.from_bytes(os.urandom(8), "big"))


def noise(region: np.ndarray) -> None:
    region[:] = _rng.integers(0, 256, region.shape, dtype=np.uint8)


def make_redactor(style: str, pixelate_blocks: int = 8) -> Redactor:
    styles: dict[str, Redactor] = {"pixelate": pixelate(pixelate_blocks), "solid": solid,
                                   "blur": blur, "noise": noise}
    try:
        return styles[style]
    except KeyError:
        raise ValueError(f"unknown redaction style {style!r} (one of {', '.join(styles)})") from None
