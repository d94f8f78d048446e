"""From a verified frame to the picture a viewer shows, plus its description for scripts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from veilcam.common.format import FrameMessage
from veilcam.common.imagecodec import decode_image
from veilcam.viewer.unlock import Unlocker


@dataclass
class Shown:
    image: np.ndarray
    unlocked: bool
    zone_unlocked: list[bool]


def render(msg: FrameMessage, unlocker: Unlocker | None) -> Shown:
    """Decode the public frame; if a user is unlocked, paste back the zones they may see."""
    h = msg.header
    image = decode_image(msg.public_image, h.image_codec, h.width, h.height).copy()
    if unlocker is None:
        return Shown(image, False, [False] * len(h.zones))
    done = unlocker.unlock(msg, image)
    has_keys = bool(unlocker.keys_for(msg.camera_id, h.epoch_id))
    return Shown(image, has_keys and all(done), done)


def describe(msg: FrameMessage, verified: bool, shown: Shown | None, problem: str = "") -> dict:
    h = msg.header
    zone_unlocked = shown.zone_unlocked if shown else [False] * len(h.zones)
    return {
        "seq": h.seq,
        "camera": msg.camera_id,
        "capture_time_us": h.capture_time_us,
        "epoch": h.epoch_id.hex(),
        "verified": verified,
        "unlocked": bool(shown and shown.unlocked),
        "width": h.width,
        "height": h.height,
        "zones": [
            {"x": z.x, "y": z.y, "w": z.w, "h": z.h, "class": z.zone_class.label, "unlocked": ok}
            for z, ok in zip(h.zones, zone_unlocked, strict=True)
        ],
        **({"problem": problem} if problem else {}),
    }
