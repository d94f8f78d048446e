"""Colour conversions of the H.264 streams, the same matrix at both ends (format version 2).

The public stream is 4:2:0 (``bgr_to_i420``: BT.601, limited range, what every player
expects). Zone streams are 4:4:4 (``bgr_to_yuv444``: BT.601 full range, JPEG's YCbCr), since
only veilcam decodes them and 4:2:0 alone loses more than the 40 dB a zone must keep (a small
face's chroma). The camera converts with OpenCV and the viewer converts back with OpenCV, so
what the encoder saw is what comes back; FFmpeg's own BGR conversion differs by 1-5 dB.
"""

from __future__ import annotations

import cv2
import numpy as np


def bgr_to_i420(image: np.ndarray) -> np.ndarray:
    """BGR (even size) to planar YUV 4:2:0, BT.601 limited range as FFmpeg decodes it back,
    as one ``(h * 3 / 2, w)`` array: Y, then U, then V."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)


def i420_to_bgr(i420: np.ndarray) -> np.ndarray:
    """Inverse of ``bgr_to_i420`` (``av.VideoFrame.to_ndarray()`` of a yuv420p frame)."""
    return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)


def bgr_to_yuv444(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """BGR to planar YUV 4:4:4, full range: a ``(3, h, w)`` array Y, U (Cb), V (Cr), the
    layout of an ``av.VideoFrame`` in yuv444p. ``out``: a C-contiguous ``(3, h, w)`` uint8
    array to write into (a 1080p frame: 1.5 ms with OpenCV's channel shuffle, against 4 ms
    for ``np.stack`` into a new array)."""
    ycrcb = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
    if out is None:
        out = np.empty((3, *ycrcb.shape[:2]), np.uint8)
    if not out.flags.c_contiguous or out.shape != (3, *ycrcb.shape[:2]):
        raise ValueError(f"out must be C-contiguous (3, h, w) of the image's size, not {out.shape}")
    cv2.mixChannels([ycrcb], [out[0], out[1], out[2]], [0, 0, 2, 1, 1, 2])
    return out


def yuv444_to_bgr(planes: np.ndarray) -> np.ndarray:
    """Inverse of ``bgr_to_yuv444`` for a ``(3, h, w)`` array (or a region of one)."""
    ycrcb = cv2.merge((planes[0], planes[2], planes[1]))
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)
