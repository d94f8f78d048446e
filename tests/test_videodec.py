"""Decoding verified H.264 access units in sequence (viewer/videodec.py): a picture per access
unit, and after a missing one nothing until the next keyframe."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from veilcam.viewer.videodec import StreamDecoder, WaitingForKeyframe

from tests.conftest import SAMPLE_CLIP


def _encode(images: list[np.ndarray], gop: int) -> list[tuple[bytes, bool]]:
    """libx264 as the camera configures it: no B-frames, zerolatency, a keyframe every gop."""
    height, width = images[0].shape[:2]
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base, codec.framerate = Fraction(1, 30), Fraction(30, 1)
    codec.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "18", "bf": "0",
                     "g": str(gop), "repeat-headers": "1"}  # fmt: skip
    out = []
    for i, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = i
        packets = codec.encode(frame)
        assert len(packets) == 1  # one access unit per frame, at once
        out.append((bytes(packets[0]), packets[0].is_keyframe))
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return cv2.PSNR(a, b)


def _moving(n: int) -> list[np.ndarray]:
    """Frames of the sample clip (natural pictures: chroma survives 4:2:0 as in real video)."""
    cap = cv2.VideoCapture(str(SAMPLE_CLIP))
    frames = []
    while len(frames) < n:
        ok, image = cap.read()
        assert ok, "the sample clip is shorter than the test needs"
        frames.append(cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA))
    cap.release()
    return frames


def test_each_access_unit_gives_its_own_picture_at_once() -> None:
    images = _moving(12)
    aus = _encode(images, gop=6)
    assert [k for _, k in aus] == [True, False, False, False, False, False] * 2
    dec = StreamDecoder("cam1 public")
    for seq, ((au, key), image) in enumerate(zip(aus, images, strict=True)):
        picture = dec.decode(seq, au, key)
        assert picture.seq == seq and _psnr(picture.image, image) > 30, seq


def test_a_missing_access_unit_means_no_picture_until_the_next_keyframe() -> None:
    images = _moving(12)
    aus = _encode(images, gop=6)
    dec = StreamDecoder("cam1 public")
    with pytest.raises(WaitingForKeyframe):
        dec.decode(2, *aus[2])  # joined mid-GOP
    for seq in (0, 1, 2):
        dec.decode(seq, *aus[seq])
    for seq in (4, 5):  # #3 never arrived: #4 would decode to a corrupted picture
        with pytest.raises(WaitingForKeyframe):
            dec.decode(seq, *aus[seq])
    assert dec.gaps == 1
    picture = dec.decode(6, *aus[6])  # the keyframe: decoding resumes, exact again
    assert _psnr(picture.image, images[6]) > 30
    assert _psnr(dec.decode(7, *aus[7]).image, images[7]) > 30
