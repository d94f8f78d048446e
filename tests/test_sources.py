"""Frame sources: files replay every frame; live sources drop (and count) frames, not time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from veilcam.camera_node.sources import JITTER_FRAMES, FrameSource, describe_source
from veilcam.common.errors import VeilcamError
from veilcam.common.urls import redact_text, redact_url

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
    held = source.captured - got - source.dropped_overload  # read, not yet taken
    assert 0 <= held <= JITTER_FRAMES + 1


def test_live_source_holds_the_frames_of_one_slow_iteration() -> None:
    """One frame that takes 2.4 frame intervals (an IDR, a scene cut's detection) loses no
    frame: the source keeps the newest JITTER_FRAMES for the pipeline to catch up on."""
    source = FrameSource(str(SAMPLE_CLIP), pace=True, fps=20, live=True)
    got = 0
    for _ in source.frames():
        got += 1
        if got == 5:
            time.sleep(0.12)
        if got == 20:
            break
    source.close()
    assert JITTER_FRAMES >= 3
    assert source.dropped_overload == 0, source.dropped_overload


def test_urls_are_shown_without_passwords() -> None:
    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/Streaming/Channels/101") == (
        "rtsp://admin:***@10.0.0.5:554/Streaming/Channels/101"
    )
    assert redact_url("rtsps://u:p%40ss:w@cam/x") == "rtsps://u:***@cam/x"
    assert redact_url("rtsp://:only@cam/x") == "rtsp://:***@cam/x"
    assert redact_url("rtsp://admin@cam/x") == "rtsp://admin@cam/x"  # no password to hide
    assert redact_url("rtsp://cam/x?user=admin&password=s3cret&channel=1") == (
        "rtsp://cam/x?user=admin&password=***&channel=1"
    )
    assert redact_url("http://cam/video.cgi?PWD=abc") == "http://cam/video.cgi?PWD=***"
    assert redact_url("/videos/clip.mp4") == "/videos/clip.mp4"
    message = "Server returned 401 Unauthorized: 'rtsp://admin:s3cret@cam/x'"
    assert redact_text(message) == "Server returned 401 Unauthorized: 'rtsp://admin:***@cam/x'"


def test_a_stream_that_cannot_open_is_named_without_its_password() -> None:
    """OpenCV sources (an HTTP MJPEG URL here) say which stream failed, password redacted."""
    try:
        FrameSource("http://admin:s3cret@127.0.0.1:9/video.mjpg")
    except VeilcamError as exc:
        assert "s3cret" not in str(exc) and "admin:***@127.0.0.1" in str(exc)
    else:
        raise AssertionError("a closed port opened")


def test_a_dropped_frame_passes_its_source_lost_mark_on() -> None:
    """The first frame after an outage carries ``after_loss`` (the camera declares the
    outage before it); dropped for overload, its mark goes to the oldest frame still held."""
    import numpy as np
    from veilcam.camera_node.sources import CapturedFrame

    image = np.zeros((4, 4, 3), np.uint8)
    first_taken = threading.Event()

    def burst() -> Iterator[CapturedFrame]:
        yield CapturedFrame(image, 0)
        first_taken.wait(5)  # the rest arrives while the pipeline is busy with frame 0
        for i in range(1, 10):
            yield CapturedFrame(image, i, 0.0, after_loss=(i == 2))

    source = FrameSource(str(SAMPLE_CLIP), live=True)
    source._read_frames = burst  # type: ignore[method-assign]
    frames = source.frames()
    taken = [next(frames)]
    first_taken.set()
    time.sleep(0.3)
    taken += list(frames)
    source.close()
    held = list(range(10 - JITTER_FRAMES, 10))
    assert [f.capture_time_us for f in taken] == [0, *held]
    assert [f.after_loss for f in taken] == [False, True] + [False] * (JITTER_FRAMES - 1)
    assert source.dropped_overload == 9 - JITTER_FRAMES
