"""Redaction styles: make a zone of the public frame unreadable, in place. Picked by name.

``solid`` (the default) and ``noise`` leak nothing of the zone. ``pixelate`` and ``blur`` keep
a coarse version of it; zone rectangles are public (signed header), so an attacker can align
the zones of many frames of a moving face and fuse them into more detail than any one frame
shows (tests/test_redaction.py measures it). They stay selectable for looks, not for secrecy.
"""

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


SOLID_FILL = (64, 64, 64)  # neutral dark grey (BGR, one level): a cover, not a dead display


def solid(region: np.ndarray) -> None:
    """A flat neutral dark-grey fill. It depends on nothing but the zone's (public) rectangle,
    so no frame, and no number of frames fused, tells anything about what it covers."""
    region.fill(
        SOLID_FILL[0]
    )  # one grey level: a memset per row (a tuple broadcast is ~50x slower)


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
    styles: dict[str, Redactor] = {
        "solid": solid,
        "pixelate": pixelate(pixelate_blocks),
        "blur": blur,
        "noise": noise,
    }
    try:
        return styles[style]
    except KeyError:
        raise ValueError(
            f"unknown redaction style {style!r} (one of {', '.join(styles)})"
        ) from None
