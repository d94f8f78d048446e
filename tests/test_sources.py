"""Frame sources: files replay every frame; live sources drop (and count) frames, not time."""

from __future__ import annotations

import time

from veilcam.camera_node.sources import FrameSource, describe_source

from tests.conftest import SAMPLE_CLIP


def test_source_kinds() -> None:
    assert describe_source("0") == ("device", 0)
    assert describe_source("rtsp://cam.local/stream")[0] == "url"
    assert describe_source("https://cam.local/mjpg")[0] == "url"
    assert describe_source("clip.mp4") == ("file", "clip.mp4")


def test_file_replay_loses_no_frame_when_the_pipeline_is_slow() -> None:
    source = FrameSource(str(SAMPLE_CLIP), pace=False)
    frames = []
    for frame in source.frames():
        frames.append(frame)
        if len(frames) == 5:
            time.sleep(0.2)
        if len(frames) == 30:
            break
    source.close()
    assert source.dropped_overload == 0 and source.captured == 30


def test_live_source_drops_and_counts_frames_when_the_pipeline_is_slow() -> None:
    source = FrameSource(str(SAMPLE_CLIP), pace=True, fps=100, live=True)
    got = 0
    started = time.monotonic()
    for _ in source.frames():
        got += 1
        time.sleep(0.05)  # a pipeline 5x slower than the source
        if time.monotonic() - started > 1.0:
            break
    source.close()
    assert source.dropped_overload > 0
    assert got + source.dropped_overload <= source.captured <= got + source.dropped_overload + 1
