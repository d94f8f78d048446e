"""H.264 encoding of the public stream and of the per-class zone streams (format version 2).

libx264 through PyAV. Every stream is tuned for live use: ``tune=zerolatency`` and no
B-frames, so each input frame comes out at once as exactly one access unit (AU), Annex B,
with SPS/PPS repeated in-band on every IDR (``repeat-headers=1``) so decoding can start at any
keyframe. x264 never places a keyframe by itself (``keyint=infinite``, ``scenecut=0``): the
public encoder forces an IDR every ``keyframe_interval`` frames, and the zone streams force
theirs on the same frames, so every GOP of every stream starts on the same public keyframe.

Zone streams (``ZoneStreams``): one stream per zone class that has zones. Its picture is the
full frame in YUV 4:4:4 (High 4:4:4 Predictive profile; common.colorspace), flat grey
(Y = U = V = 128) except inside this frame's rectangles of that class, which hold the original
pixels; x264 codes the flat area for almost nothing, and without adaptive quantization the
zones get the stream's full quality. The camera
encrypts each AU under the class key (common.zonecrypt); a viewer holding it decodes the stream
and pastes the rectangles. Stream life (docs/FORMAT.md, version 2): a stream starts with an IDR
on the first frame with a zone of its class; while active every frame carries an AU of it (a
frame without such zones gives a flat picture, a tiny P-skip AU); at each public keyframe it
ends if its class had no zone during the whole GOP that just ended, else it goes on with an IDR.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from veilcam.camera_node.zones import Zone
from veilcam.common.colorspace import bgr_to_i420, bgr_to_yuv444
from veilcam.common.format import ZoneClass

GREY = 128  # Y, U and V of the flat area of a zone stream


@dataclass(frozen=True)
class H264Settings:
    """What the ``[encoding]`` section says about H.264 (common.config)."""

    keyframe_s: float = 2.0
    crf: int = 23
    max_kbps: int = 6000
    preset: str = "veryfast"
    zone_crf: int = 19
    threads: int = 1
    zone_preset: str = "superfast"

    def keyframe_interval(self, fps: float) -> int:
        """Frames per GOP: ``round(keyframe_s * fps)``, at least 1."""
        return max(1, round(self.keyframe_s * fps))


def even_size(width: int, height: int) -> tuple[int, int]:
    """H.264 4:2:0 needs even sizes: an odd last column or row is cut off."""
    return width & ~1, height & ~1


class _Stream:
    """One libx264 encoder producing one Annex-B AU per frame, IDRs only when forced."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        crf: int,
        preset: str,
        threads: int,
        max_kbps: int = 0,
        pix_fmt: str = "yuv420p",
        extra_params: str = "",
    ) -> None:
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ValueError(f"H.264 4:2:0 needs an even, non-empty size, not {width}x{height}")
        self.width, self.height = width, height
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(30)
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height, cc.pix_fmt = width, height, pix_fmt
        self.pix_fmt = pix_fmt
        cc.time_base = 1 / rate
        cc.framerate = rate
        cc.max_b_frames = 0
        cc.thread_count = threads
        options = {
            "preset": preset,
            "tune": "zerolatency",
            "crf": str(crf),
            "forced-idr": "1",
            "x264-params": "repeat-headers=1:bframes=0:open-gop=0:scenecut=0:keyint=infinite"
            + extra_params,
        }
        if max_kbps > 0:
            options["maxrate"] = f"{max_kbps}k"
            options["bufsize"] = f"{max_kbps}k"
        cc.options = options
        cc.open()
        self._cc = cc
        self._pts = 0

    def encode(self, planes: np.ndarray, idr: bool) -> tuple[bytes, bool]:
        """One frame in (planar, in the stream's pixel format), its AU out (bytes, whether it
        is an IDR)."""
        frame = av.VideoFrame.from_ndarray(planes, format=self.pix_fmt)
        frame.pts = self._pts
        self._pts += 1
        if idr:
            frame.pict_type = av.video.frame.PictureType.I
        packets = self._cc.encode(frame)
        # zerolatency, no B-frames, no lookahead: one packet per frame, never held back
        if len(packets) != 1:
            raise RuntimeError(f"libx264 gave {len(packets)} packets for one frame; expected 1")
        packet = packets[0]
        if idr and not packet.is_keyframe:
            raise RuntimeError("libx264 did not make the forced IDR a keyframe")
        return bytes(packet), bool(packet.is_keyframe)

    def close(self) -> None:
        """Free the encoder now rather than at garbage collection (it holds frame buffers)."""
        self._cc = None  # type: ignore[assignment]


@dataclass(frozen=True)
class PublicAU:
    """The public stream's AU of one frame and its place in the GOP."""

    au: bytes
    keyframe: bool
    gop_index: int


class PublicEncoder:
    """The public (redacted) stream: one AU per frame, an IDR every ``keyframe_interval``."""

    def __init__(
        self, width: int, height: int, fps: float, keyframe_interval: int, settings: H264Settings
    ) -> None:
        self.keyframe_interval = max(1, keyframe_interval)
        self._stream = _Stream(
            width, height, fps, settings.crf, settings.preset, settings.threads, settings.max_kbps
        )
        self._frames = 0

    @property
    def size(self) -> tuple[int, int]:
        return self._stream.width, self._stream.height

    @property
    def next_is_keyframe(self) -> bool:
        """Whether the next frame encoded will be a keyframe (the zone streams align on it)."""
        return self._frames % self.keyframe_interval == 0

    def encode_i420(self, i420: np.ndarray) -> PublicAU:
        gop_index = self._frames % self.keyframe_interval
        au, keyframe = self._stream.encode(i420, idr=gop_index == 0)
        if keyframe != (gop_index == 0):
            raise RuntimeError(f"libx264 placed a keyframe at GOP index {gop_index} by itself")
        self._frames += 1
        return PublicAU(au, keyframe, gop_index)

    def encode(self, image: np.ndarray) -> PublicAU:
        """Encode one BGR frame of the encoder's size."""
        return self.encode_i420(bgr_to_i420(image))

    def close(self) -> None:
        self._stream.close()


@dataclass(frozen=True)
class StreamAU:
    """One zone-class stream's AU of one frame (plaintext; the camera encrypts it)."""

    zone_class: ZoneClass
    au: bytes
    keyframe: bool


MACROBLOCK = 16
WHOLE_FRAME_SHARE = 0.15  # boxes covering more of the frame: convert the canvas whole, once


def _macroblock_box(z: Zone, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The 16-pixel macroblocks zone ``z`` touches, as (x0, y0, x1, y1) clipped to the frame."""
    mb = MACROBLOCK
    x0, y0 = max(0, z.x // mb * mb), max(0, z.y // mb * mb)
    x1 = min(width, -(-(z.x + z.w) // mb) * mb)
    y1 = min(height, -(-(z.y + z.h) // mb) * mb)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


class _Canvas:
    """A class stream's picture, reused frame to frame: flat grey, with the original pixels
    of this frame's rectangles of the class. The rest of the 16-pixel macroblocks a zone
    touches holds the *redacted public* picture: public pixels, so nothing of another class's
    zones enters this stream, and those macroblocks are whole natural picture, which x264
    codes as it codes any video (a small face on a grey field lost 2-6 dB to the edges,
    measured in tests/test_e2e.py). One more macroblock of context all round kept 0.3 dB more
    at the worst zone for 11 % more zone-stream bytes (2026-11-30, zones of a real camera run
    replayed; tests/test_e2e.py for the dB): not worth it.

    The picture is composed in BGR (grey 128 is Y = U = V = 128 in full-range YCbCr) and only
    the boxes that changed since the last frame are converted to planar YUV 4:4:4: one
    conversion per pixel, into buffers kept from frame to frame (a fresh 6 MB array per 1080p
    frame costs its page faults again)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.bgr = np.full((height, width, 3), GREY, dtype=np.uint8)
        self.planes = np.full((3, height, width), GREY, dtype=np.uint8)
        self._dirty: list[tuple[int, int, int, int]] = []

    def paint(self, original: np.ndarray, public: np.ndarray, zones: list[Zone]) -> np.ndarray:
        """``original``: the captured frame (BGR); ``public``: the same frame redacted.
        Returns the planar YUV 4:4:4 picture (a buffer this canvas reuses)."""
        for x0, y0, x1, y1 in self._dirty:
            self.bgr[y0:y1, x0:x1] = GREY
        boxes = [b for b in (_macroblock_box(z, self.width, self.height) for z in zones) if b]
        for x0, y0, x1, y1 in boxes:  # context first: public pixels in the zone's macroblocks
            self.bgr[y0:y1, x0:x1] = public[y0:y1, x0:x1]
        for z in zones:  # then the zones themselves, original
            x0, y0 = max(0, z.x), max(0, z.y)
            x1, y1 = min(self.width, z.x + z.w), min(self.height, z.y + z.h)
            if x1 > x0 and y1 > y0:
                self.bgr[y0:y1, x0:x1] = original[y0:y1, x0:x1]
        changed = self._dirty + boxes  # last frame's boxes are grey again, this frame's new
        self._dirty = boxes
        area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in changed)
        if area > WHOLE_FRAME_SHARE * self.width * self.height:
            return bgr_to_yuv444(self.bgr, out=self.planes)
        for x0, y0, x1, y1 in changed:
            self.planes[:, y0:y1, x0:x1] = bgr_to_yuv444(self.bgr[y0:y1, x0:x1])
        return self.planes


class ZoneStreams:
    """The zone-class streams of one camera (see the module docstring for their life)."""

    def __init__(self, width: int, height: int, fps: float, settings: H264Settings) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 4:2:0 needs an even size, not {width}x{height}")
        self.width, self.height, self.fps, self.settings = width, height, fps, settings
        self._active: dict[ZoneClass, tuple[_Stream, _Canvas]] = {}
        self._seen_in_gop: set[ZoneClass] = set()
        self.started = 0  # streams started (for tests and stats)
        self.ended = 0

    @property
    def active(self) -> list[ZoneClass]:
        return sorted(self._active)

    def encode(
        self,
        image: np.ndarray,
        zones: list[Zone],
        public_keyframe: bool,
        public: np.ndarray | None = None,
    ) -> list[StreamAU]:
        """This frame's AUs, one per active class stream, in increasing class order.

        ``image`` holds the *original* pixels (before redaction), ``public`` the redacted frame
        (the zones' surroundings; ``image`` when not given, for a frame whose zones are all of
        one class or callers that only test stream life); ``public_keyframe`` says whether the
        public AU of this frame is an IDR (every stream then gives an IDR too)."""
        by_class: dict[ZoneClass, list[Zone]] = {}
        for z in zones:
            by_class.setdefault(ZoneClass(z.zone_class), []).append(z)
        if public_keyframe:
            for zone_class in list(self._active):
                if zone_class not in self._seen_in_gop and zone_class not in by_class:
                    self._active.pop(zone_class)[0].close()
                    self.ended += 1
            self._seen_in_gop = set()
        public = image if public is None else public
        out = []
        for zone_class in sorted(set(self._active) | set(by_class)):
            idr = public_keyframe
            if zone_class not in self._active:
                stream = _Stream(
                    self.width,
                    self.height,
                    self.fps,
                    self.settings.zone_crf,
                    self.settings.zone_preset,
                    self.settings.threads,
                    pix_fmt="yuv444p",  # High 4:4:4: a small face keeps its colour (>= 40 dB)
                    # no QP taken from the zones for the flat grey (aq), and fidelity
                    # rather than psychovisual "detail" (psy-rd), which spends bits on
                    # texture the eye likes, not on the pixels: at the same bytes the worst
                    # zone gains 1.7 dB (1080p crowd, zones replayed, 2026-11-30)
                    extra_params=":aq-mode=0:psy=0",
                )
                self._active[zone_class] = (stream, _Canvas(self.width, self.height))
                self.started += 1
                idr = True
            stream, canvas = self._active[zone_class]
            picture = canvas.paint(image, public, by_class.get(zone_class, []))
            au, keyframe = stream.encode(picture, idr)
            out.append(StreamAU(zone_class, au, keyframe))
        self._seen_in_gop |= set(by_class)
        return out

    def close(self) -> None:
        for stream, _ in self._active.values():
            stream.close()
        self._active.clear()
