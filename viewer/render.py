"""From a verified frame to the picture a viewer shows, plus its description for scripts.

Version-1 frames (JPEG mode) are still images: each one decodes alone (``render``).
Version-2 frames (H.264 mode) carry one access unit (AU) of the camera's public stream and one
encrypted AU per zone-class stream; an AU decodes only after every earlier AU of its stream back
to a keyframe. So a viewer (one stream consumer: a headless run, one browser stream, one
playback, one export) keeps a ``Renderer``: one public decoder per camera, and one decoder per
(camera, class) stream it holds the class key for. Each class stream's decoder sees every AU of
its stream or restarts at the stream's next IDR (a key missing for one epoch, a frame not
verified, a frame missing). When no picture can be made (``Shown.gap``, e.g. "waiting for
keyframe") the caller reports the gap: never a corrupted or stale picture as if current.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from veilcam.common.format import (
    FORMAT_VERSION_H264,
    FrameMessage,
    ZoneClass,
    ZoneRecord,
    ZoneRect,
)
from veilcam.common.imagecodec import decode_image
from veilcam.common.zonecrypt import decrypt_stream_au
from veilcam.viewer.unlock import Unlocker
from veilcam.viewer.videodec import DecodedPicture, StreamDecoder, WaitingForKeyframe

log = logging.getLogger("veilcam.viewer")

GAP_WAITING = "waiting for keyframe"


@dataclass
class Shown:
    """What a frame shows: ``image`` (BGR), or None with ``gap`` saying why there is none."""

    image: np.ndarray | None
    unlocked: bool
    zone_unlocked: list[bool]
    gap: str = ""  # no picture for this frame (the stream waits for a keyframe)
    detail: str = ""  # why, for logs

    @property
    def is_gap(self) -> bool:
        return self.image is None


def render(msg: FrameMessage, unlocker: Unlocker | None) -> Shown:
    """Decode the public frame; if a user is unlocked, paste back the zones they may see.

    Stateless: right for version-1 frames. A version-2 frame gets a one-off ``Renderer``, so
    only a keyframe gives a picture; a consumer of a stream keeps a ``Renderer`` instead."""
    if msg.version == FORMAT_VERSION_H264:
        return Renderer(unlocker).render(msg)
    h = msg.header
    image = decode_image(msg.public_image, h.image_codec, h.width, h.height).copy()
    if unlocker is None:
        return Shown(image, False, [False] * len(h.zones))
    done = unlocker.unlock(msg, image)
    has_keys = bool(unlocker.keys_for(msg.camera_id, h.epoch_id))
    return Shown(image, has_keys and all(done), done)


class Renderer:
    """The pictures of one stream consumer, frame after frame (see the module docstring).

    Feed it every verified frame in order (a frame left out is a gap for its camera's
    decoders: they wait for the next keyframe). Version-1 frames render as ``render`` does.
    ``unlocker`` may change between frames (a web session locked or expired): the class
    decoders of the old one are dropped."""

    def __init__(self, unlocker: Unlocker | None = None) -> None:
        self._unlocker = unlocker
        self._public: dict[str, StreamDecoder] = {}
        self._zones: dict[tuple[str, ZoneClass], StreamDecoder] = {}
        self._last_seq: dict[str, int] = {}
        self.gaps = 0  # frames that gave no picture

    @property
    def unlocker(self) -> Unlocker | None:
        return self._unlocker

    @unlocker.setter
    def unlocker(self, unlocker: Unlocker | None) -> None:
        if unlocker is not self._unlocker:
            self._zones.clear()  # another user (or none): its streams start at their IDRs
        self._unlocker = unlocker

    def reset(self, camera_id: str) -> None:
        """Forget ``camera_id``'s decoding state: its next picture comes at a keyframe."""
        self._public.pop(camera_id, None)
        self._last_seq.pop(camera_id, None)
        self._drop_zones(camera_id)

    def _drop_zones(self, camera_id: str, keep: set[ZoneClass] | None = None) -> None:
        for key in [k for k in self._zones if k[0] == camera_id]:
            if keep is None or key[1] not in keep:
                del self._zones[key]

    def render(self, msg: FrameMessage) -> Shown:
        """The picture of ``msg`` (already verified), or a gap."""
        if msg.version != FORMAT_VERSION_H264:
            return render(msg, self._unlocker)
        h, camera = msg.header, msg.camera_id
        last = self._last_seq.get(camera)
        if last is not None and h.seq <= last:  # out of order: never show an older picture
            self.reset(camera)
            return self._gap(msg, f"{camera}: frame #{h.seq} after #{last} (out of order)")
        self._last_seq[camera] = h.seq
        public = self._public.get(camera)
        if public is None:
            public = self._public[camera] = StreamDecoder(f"{camera} public")
        try:
            picture = public.decode(h.seq, msg.public_image, msg.is_keyframe)
        except WaitingForKeyframe as exc:
            self._drop_zones(camera)  # they miss this frame too: they restart at the keyframe
            return self._gap(msg, str(exc))
        if (picture.width, picture.height) != (h.width, h.height):
            self.reset(camera)
            return self._gap(
                msg,
                f"{camera}: access unit #{h.seq} decodes to {picture.width}x{picture.height}, "
                f"the header says {h.width}x{h.height}",
            )
        image = picture.image
        zone_ok = [False] * len(h.zone_rects)
        if self._unlocker is None:
            return Shown(image, False, zone_ok)
        keys = self._unlocker.keys_for(camera, h.epoch_id)
        self._drop_zones(camera, keep={s.zone_class for s in msg.streams})  # streams that ended
        for record, ciphertext in zip(msg.streams, msg.stream_ciphertexts, strict=True):
            zone_class = record.zone_class
            zone_picture = self._zone_picture(msg, zone_class, record.is_keyframe, ciphertext, keys)
            if zone_picture is None:
                continue
            for i, z in enumerate(h.zone_rects):
                if z.zone_class != zone_class:
                    continue
                image[z.y : z.y + z.h, z.x : z.x + z.w] = zone_picture.region_bgr(
                    z.x, z.y, z.w, z.h
                )
                zone_ok[i] = True
        return Shown(image, bool(keys) and all(zone_ok), zone_ok)

    def _zone_picture(
        self,
        msg: FrameMessage,
        zone_class: ZoneClass,
        keyframe: bool,
        ciphertext: bytes,
        keys: dict[ZoneClass, bytes],
    ) -> DecodedPicture | None:
        """This frame's picture of one class stream, or None (no key, or its decoder waits
        for the stream's next IDR)."""
        h, camera = msg.header, msg.camera_id
        key = keys.get(zone_class)
        if key is None:  # this AU is lost to the stream's decoder: restart at its next IDR
            self._zones.pop((camera, zone_class), None)
            return None
        decoder = self._zones.get((camera, zone_class))
        if decoder is None:
            decoder = self._zones[(camera, zone_class)] = StreamDecoder(
                f"{camera} {zone_class.label} stream"
            )
        au = decrypt_stream_au(key, h.seq, zone_class, ciphertext)
        try:
            picture = decoder.decode(h.seq, au, keyframe)
        except WaitingForKeyframe as exc:
            log.debug("%s", exc)
            return None
        if (picture.width, picture.height) != (h.width, h.height):
            log.error(
                "%s#%d: the %s stream decodes to %dx%d, not the frame's %dx%d",
                camera,
                h.seq,
                zone_class.label,
                picture.width,
                picture.height,
                h.width,
                h.height,
            )
            self._zones.pop((camera, zone_class), None)
            return None
        return picture

    def _gap(self, msg: FrameMessage, detail: str) -> Shown:
        self.gaps += 1
        return Shown(None, False, [False] * len(msg.header.zone_rects), GAP_WAITING, detail)


def describe(msg: FrameMessage, verified: bool, shown: Shown | None, problem: str = "") -> dict:
    h = msg.header
    v2 = msg.version == FORMAT_VERSION_H264
    zones: Sequence[ZoneRect | ZoneRecord] = h.zone_rects if v2 else h.zones
    zone_unlocked = shown.zone_unlocked if shown else [False] * len(zones)
    extra: dict[str, object] = {"keyframe": msg.is_keyframe} if v2 else {}
    if shown is not None and shown.gap:
        extra["gap"] = shown.gap
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
            for z, ok in zip(zones, zone_unlocked, strict=True)
        ],
        **extra,
        **({"problem": problem} if problem else {}),
    }
