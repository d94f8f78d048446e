"""A source that changes its frame size mid-stream (an IP camera reconfigured), in-process: the
camera's H.264 encoders start again with a keyframe at the new size, the chain goes on and
verifies, the viewer's decoders and its MSE stream follow (a new init segment), and the faces
the camera holds are rescaled with the picture."""

from __future__ import annotations

import json

import numpy as np
from veilcam.camera_node.zones import Box, FaceHold
from veilcam.common.signing import ChainLink, ChainTracker
from veilcam.viewer.client import ReceivedFrame
from veilcam.viewer.msestream import LiveMuxer
from veilcam.viewer.render import Renderer

from tests.factory import GOP, H264Camera, textured


def test_h264_stream_restarts_at_a_keyframe_of_the_new_size_and_the_viewer_follows() -> None:
    cam = H264Camera()
    sizes = [(320, 240)] * (GOP + 2) + [(160, 120)] * (GOP + 2) + [(320, 240)] * 2
    frames = [cam.frame(textured(w, h, seed=i))[0] for i, (w, h) in enumerate(sizes)]
    chain, renderer, muxer = ChainTracker(), Renderer(), LiveMuxer()
    inits = []
    for i, (msg, (w, h)) in enumerate(zip(frames, sizes, strict=True)):
        assert (msg.header.width, msg.header.height) == (w, h)
        changed = i > 0 and sizes[i - 1] != (w, h)
        if changed:  # the first frame at a new size is an IDR starting a new GOP
            assert msg.is_keyframe and msg.header.gop_seq == msg.header.seq
        cam.trust.verify_frame(msg)
        assert chain.check(msg) in (ChainLink.FIRST, ChainLink.NEXT)  # one chain throughout
        chain.accept(msg)
        shown = renderer.render(msg)
        assert not shown.is_gap and shown.image is not None, shown.detail
        assert shown.image.shape[:2] == (h, w)
        for out in muxer.push(ReceivedFrame(msg, True)):
            if isinstance(out, str) and "init" in json.loads(out):
                inits.append((json.loads(out)["init"]["width"], json.loads(out)["init"]["height"]))
    assert inits == [(320, 240), (160, 120), (320, 240)] and muxer.gaps == 0
    assert renderer.gaps == 0


def test_held_faces_follow_the_picture_to_its_new_size() -> None:
    hold = FaceHold(margin=0.0, hold_frames=5)
    hold.update([Box(400, 100, 40, 50, 0.9)], 0)
    hold.rescale(0.5, 0.5)
    (box,) = hold.boxes(0)
    assert (box.x, box.y, box.w, box.h) == (200, 50, 20, 25)
    assert np.isclose(box.score, 0.9)
