"""Decoding H.264 access units that were verified one by one (format version 2).

Every frame of an H.264 camera carries one access unit (AU) of its public stream and, per zone
class with zones, one encrypted AU of that class's zone stream (docs/FORMAT.md, version 2). An
AU can be decoded only after every earlier AU of its stream back to a keyframe. So a decoder
here is fed strictly in sequence: a frame that is missing (lost, rejected, not yet arrived)
resets it, and nothing is shown until the next keyframe. The caller reports that as a gap,
never conceals it with a stale or corrupted picture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import cast

import av
import numpy as np
from av.video.codeccontext import VideoCodecContext
from veilcam.common.colorspace import i420_to_bgr, yuv444_to_bgr

log = logging.getLogger("veilcam.viewer")


class WaitingForKeyframe(Exception):
    """The stream cannot be decoded at this frame: it starts, or restarts after a gap, at the
    next keyframe."""


@dataclass
class DecodedPicture:
    """A decoded picture as its planes (``av.VideoFrame.to_ndarray()``: yuv420p as one
    ``(h * 3 / 2, w)`` array, yuv444p as ``(3, h, w)``), and as BGR on demand, converted
    with the camera's own matrix (common.colorspace; FFmpeg's bgr24 conversion costs 1-5 dB
    inside zones)."""

    planes: np.ndarray
    seq: int
    pix_fmt: str = "yuv420p"
    _bgr: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def width(self) -> int:
        return int(self.planes.shape[-1])

    @property
    def height(self) -> int:
        if self.pix_fmt == "yuv444p":
            return int(self.planes.shape[1])
        return int(self.planes.shape[0]) * 2 // 3

    @property
    def image(self) -> np.ndarray:
        """BGR, height x width x 3 (converted once)."""
        if self._bgr is None:
            self._bgr = (
                yuv444_to_bgr(self.planes)
                if self.pix_fmt == "yuv444p"
                else i420_to_bgr(self.planes)
            )
        return self._bgr

    def region_bgr(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """BGR of the rectangle, converted alone (a zone of a 4:4:4 stream: cheap, and equal
        to the same region of the whole picture converted)."""
        if self.pix_fmt == "yuv444p":
            return yuv444_to_bgr(self.planes[:, y : y + h, x : x + w])
        return self.image[y : y + h, x : x + w]


class StreamDecoder:
    """One H.264 stream of one camera (its public stream, or one class's zone stream)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._codec: VideoCodecContext | None = None
        self._last_seq: int | None = None
        self.gaps = 0  # times the stream had to wait for a keyframe after a missing AU

    def reset(self) -> None:
        self._codec = None
        self._last_seq = None

    def _new_codec(self) -> VideoCodecContext:
        codec = cast(VideoCodecContext, av.CodecContext.create("h264", "r"))
        codec.thread_count = 1  # frame threads would hold back pictures: one AU in, one out
        return codec

    def decode(self, seq: int, au: bytes, keyframe: bool) -> DecodedPicture:
        """The picture of frame ``seq``. Raises WaitingForKeyframe if the stream has no
        decodable history at ``seq`` (first frame seen, or a frame before it is missing)."""
        if self._codec is not None and self._last_seq is not None and seq != self._last_seq + 1:
            log.info("%s: frame #%d follows #%d: waiting for a keyframe", self.name, seq,
                     self._last_seq)  # fmt: skip
            self.gaps += 1
            self.reset()
        if self._codec is None:
            if not keyframe:
                raise WaitingForKeyframe(f"{self.name}: waiting for a keyframe")
            self._codec = self._new_codec()
        try:
            frames = self._codec.decode(av.Packet(au))
        except av.error.FFmpegError as exc:  # verified bytes that still do not decode
            self.reset()
            raise WaitingForKeyframe(
                f"{self.name}: access unit #{seq} does not decode ({exc})"
            ) from None
        if not frames:
            self.reset()
            raise WaitingForKeyframe(f"{self.name}: access unit #{seq} gave no picture")
        self._last_seq = seq
        frame = frames[-1]
        pix_fmt = frame.format.name
        if pix_fmt not in ("yuv420p", "yuv444p"):  # the public (4:2:0) and zone (4:4:4) streams
            frame, pix_fmt = frame.reformat(format="yuv420p"), "yuv420p"
        return DecodedPicture(np.ascontiguousarray(frame.to_ndarray()), seq, pix_fmt)
