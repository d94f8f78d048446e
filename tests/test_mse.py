"""The live H.264 stream for Media Source Extensions (viewer/msestream.py), in-process: the
fragmented MP4 built from verified access units decodes back (PyAV) to the very pictures of
those AUs, its samples are the AUs' NAL units, holes restart at a keyframe and are told, and the
WebSocket route of the real web app hands a new page the current GOP, then the live frames."""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import av
import numpy as np
import pytest
import uvicorn
from veilcam.common.lifecycle import StopFlag
from veilcam.viewer.client import ReceivedFrame
from veilcam.viewer.framehub import Latest
from veilcam.viewer.msestream import (
    LiveMuxer,
    avc_config,
    nal_type,
    nal_units,
    parse_sps,
)
from veilcam.viewer.sessions import Sessions
from veilcam.viewer.webapp import COOKIE, ViewerApp
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.factory import Camera, H264Camera

GOP = 4


# ---------------------------------------------------------------------------- reading MP4
def boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, payload) of the boxes one after the other in ``data``."""
    pos = 0
    while pos < len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        assert size >= 8 and pos + size <= len(data), (kind, size)
        yield kind, data[pos + 8 : pos + size]
        pos += size


def child(data: bytes, *path: bytes) -> bytes:
    """The payload of the box at ``path`` (first match at each level)."""
    for kind in path:
        data = next(p for k, p in boxes(data) if k == kind)
    return data


def avcc_of(init: bytes) -> bytes:
    stsd = child(init, b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd")
    avc1 = child(stsd[8:], b"avc1")  # full box header and entry count
    return child(avc1[78:], b"avcC")  # the visual sample entry's fixed fields


def length_prefixed_units(sample: bytes) -> list[bytes]:
    units, pos = [], 0
    while pos < len(sample):
        (n,) = struct.unpack_from(">I", sample, pos)
        units.append(sample[pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert pos == len(sample)
    return units


def decode_mp4(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


def decode_aus(aus: list[bytes]) -> list[np.ndarray]:
    codec = av.CodecContext.create("h264", "r")
    out = []
    for au in aus:
        out += [f.to_ndarray(format="yuv420p") for f in codec.decode(av.Packet(au))]
    return out + [f.to_ndarray(format="yuv420p") for f in codec.decode(None)]


def frames(n: int, gop: int = GOP) -> list[ReceivedFrame]:
    cam = H264Camera(gop=gop)
    return [ReceivedFrame(cam.frame()[0], True) for _ in range(n)]


def run(muxer: LiveMuxer, got: list[ReceivedFrame]) -> list[str | bytes]:
    return [m for g in got for m in muxer.push(g)]


def texts(out: list[str | bytes]) -> list[dict]:
    return [json.loads(m) for m in out if isinstance(m, str)]


# ---------------------------------------------------------------------------- the muxer
def test_fragments_decode_to_the_pictures_of_the_access_units() -> None:
    got = frames(10)
    out = run(LiveMuxer(), got)
    init_doc = texts(out)[0]["init"]
    binary = [m for m in out if isinstance(m, bytes)]
    assert isinstance(out[0], str) and len(texts(out)) == 1  # one init, then binaries only
    assert len(binary) == 1 + len(got)  # the init segment, then one fragment per frame
    aus = [g.msg.public_image for g in got]
    via_mp4, direct = decode_mp4(b"".join(binary)), decode_aus(aus)
    assert len(via_mp4) == len(direct) == len(got)
    for a, b in zip(via_mp4, direct, strict=True):
        assert np.array_equal(a, b)
    # the page's codec string comes from the stream's own SPS
    sps = next(u for u in nal_units(aus[0]) if nal_type(u) == 7)
    assert init_doc["codec"] == parse_sps(sps).codec == f"avc1.{sps[1:4].hex()}"
    assert init_doc["mime"] == f'video/mp4; codecs="{init_doc["codec"]}"'
    assert (init_doc["width"], init_doc["height"]) == (320, 240)


def test_samples_are_the_access_units_nal_units_and_avcc_is_the_streams() -> None:
    got = frames(6)
    binary = [m for m in run(LiveMuxer(), got) if isinstance(m, bytes)]
    init, fragments = binary[0], binary[1:]
    units0 = nal_units(got[0].msg.public_image)
    sps = next(u for u in units0 if nal_type(u) == 7)
    pps = next(u for u in units0 if nal_type(u) == 8)
    assert avcc_of(init) == avc_config(sps, pps)
    with av.open(io.BytesIO(init + fragments[0])) as container:  # FFmpeg reads the same record
        assert container.streams.video[0].codec_context.extradata == avc_config(sps, pps)
    previous_end = 0
    for g, fragment in zip(got, fragments, strict=True):
        (moof, moof_body), (mdat, sample) = list(boxes(fragment))
        assert (moof, mdat) == (b"moof", b"mdat")
        assert length_prefixed_units(sample) == nal_units(g.msg.public_image)
        # Annex B and MP4 differ only in how each NAL unit is delimited: every other byte is kept
        assert b"".join(length_prefixed_units(sample)) == re.sub(
            rb"\x00?\x00\x00\x01", b"", g.msg.public_image
        )
        traf = child(moof_body, b"traf")
        (decode_time,) = struct.unpack(">Q", child(traf, b"tfdt")[4:])
        trun = child(traf, b"trun")
        count, offset, duration, size, flags = struct.unpack(">IiIII", trun[4:24])
        assert (count, size) == (1, len(sample))
        assert offset == 8 + len(moof_body) + 8  # the sample starts right after mdat's header
        assert decode_time == previous_end  # no hole in the page's buffered range
        assert duration == 3000  # 33 333 us between capture times, at 90 kHz
        assert bool(flags & 0x00010000) != g.msg.is_keyframe  # non-sync flag on P frames only
        previous_end = decode_time + duration


def test_a_missing_frame_is_a_gap_and_the_stream_restarts_at_the_next_keyframe() -> None:
    got = frames(9)  # keyframes at 0, 4, 8
    muxer = LiveMuxer()
    first = run(muxer, got[:2])
    assert len([m for m in first if isinstance(m, bytes)]) == 1 + 2
    out = muxer.push(got[3])  # #2 missing: #3 cannot be decoded, nothing of it goes out
    assert texts(out) == [{"gap": "frame #2 is missing (next came #3): waiting for a keyframe"}]
    assert [m for m in out if isinstance(m, bytes)] == []
    restart = run(muxer, got[4:8])  # the next keyframe starts again, with an init segment
    assert list(texts(restart)[0]) == ["init"] and texts(restart)[0]["init"]["seq"] == 4
    binary = [m for m in restart if isinstance(m, bytes)]
    assert len(binary) == 1 + 4
    pictures = decode_mp4(b"".join(binary))  # the restart decodes on its own
    expected = decode_aus([g.msg.public_image for g in got[4:8]])
    assert len(pictures) == 4
    assert all(np.array_equal(a, b) for a, b in zip(pictures, expected, strict=True))
    assert muxer.gaps == 1


def test_a_rejected_frame_is_a_gap_too_and_a_late_start_waits_for_a_keyframe() -> None:
    got = frames(9)
    muxer = LiveMuxer()
    out = run(muxer, got[1:3])  # joined mid-GOP: wait, say so once, send nothing
    assert texts(out) == [{"waiting": "waiting for a keyframe"}]
    assert [m for m in out if isinstance(m, bytes)] == []
    assert len([m for m in run(muxer, got[4:6]) if isinstance(m, bytes)]) == 1 + 2
    bad = ReceivedFrame(got[6].msg, False, "bad_signature: no")
    gap = muxer.push(bad)
    assert texts(gap) == [
        {"gap": "frame #6 failed verification (bad_signature: no): waiting for a keyframe"}
    ]
    assert [m for m in gap if isinstance(m, bytes)] == []
    assert run(muxer, got[7:8]) == []  # the next frame follows the rejected one: still a hole
    assert "init" in texts(muxer.push(got[8]))[0]


def test_decode_times_follow_capture_intervals_and_run_on_over_a_restart() -> None:
    got = frames(9)
    muxer = LiveMuxer()
    run(muxer, got[:2])
    assert muxer.decode_time == 2 * 3000
    run(muxer, got[4:5])  # hole, then a keyframe: the buffered range goes on where it was
    assert muxer.decode_time == 3 * 3000


def test_sps_of_high_and_baseline_profiles() -> None:
    got = frames(1)
    sps = next(u for u in nal_units(got[0].msg.public_image) if nal_type(u) == 7)
    info = parse_sps(sps)
    assert (info.profile, info.chroma_format, info.bit_depth_luma) == (100, 1, 8)
    baseline = parse_sps(bytes([0x67, 66, 0xC0, 30, 0xF4]))
    assert baseline.codec == "avc1.42c01e"
    with pytest.raises(ValueError):
        parse_sps(bytes([0x68, 0xEE, 0x3C, 0x80]))  # a PPS


def test_nal_units_of_an_annex_b_stream() -> None:
    au = b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x67\x64\x00\x00\x00\x00\x01\x65\x88\x00"
    assert nal_units(au) == [b"\x09\xf0", b"\x67\x64", b"\x65\x88"]


# ---------------------------------------------------------------------------- the route
@dataclass
class FakeHub:
    """What the web app uses of FrameHub; ``put`` plays the relay thread's part."""

    cameras: list[str]
    stop: StopFlag = field(default_factory=StopFlag)
    latest: dict[str, Latest] = field(default_factory=dict)
    counter: int = 0
    on_frame: object = None
    freshness: object = None

    def put(self, got: ReceivedFrame) -> None:
        self.counter += 1
        self.latest[got.msg.camera_id] = Latest(got, self.counter, time.time())
        if self.on_frame is not None:
            self.on_frame()


@pytest.fixture
def served():
    """The real web app (its routes, Host check and lifespan) on a loopback port, in a thread,
    with a fake hub and real sessions."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    hub = FakeHub(["cam1", "jpegcam"])
    sessions = Sessions()
    hosts = {f"127.0.0.1:{port}"}
    viewer = ViewerApp(None, hub, 80, sessions, None, hosts)  # type: ignore[arg-type]
    config = uvicorn.Config(viewer.app, lifespan="on", log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield SimpleNamespace(hub=hub, sessions=sessions, port=port)
    hub.stop.set("test over")
    server.should_exit = True
    thread.join(5)
    sock.close()


def open_ws(served, camera: str = "cam1", host: str = "127.0.0.1", **headers: str):
    origin = headers.pop("origin", f"http://{host}:{served.port}")
    return connect(
        f"ws://{host}:{served.port}/ws/live/{camera}",
        additional_headers={"Origin": origin, **headers},
        open_timeout=5,
    )


def receive_until(ws, count: int) -> list[str | bytes]:
    return [ws.recv(timeout=5) for _ in range(count)]


def test_route_gives_a_new_page_the_current_gop_then_the_live_frames(served) -> None:
    got = frames(12)
    hub = served.hub
    with open_ws(served) as ws:  # the first page: the route attaches to the hub now
        deadline = time.monotonic() + 5
        while getattr(hub.on_frame, "__name__", "") != "_on_frame":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for g in got[:6]:  # keyframes at 0 and 4
            hub.put(g)
        first = receive_until(ws, 2 + 6)
        assert "init" in json.loads(first[0])
    with open_ws(served) as ws:  # a later page: the GOP since #4 at once, then live
        early = receive_until(ws, 2 + 2)
        assert json.loads(early[0])["init"]["seq"] == 4
        for g in got[6:10]:
            hub.put(g)
        live = receive_until(ws, 4)
        binary = [m for m in early + live if isinstance(m, bytes)]
        pictures = decode_mp4(b"".join(binary))
        expected = decode_aus([g.msg.public_image for g in got[4:10]])
        assert len(pictures) == 6
        assert all(np.array_equal(a, b) for a, b in zip(pictures, expected, strict=True))
        hub.put(got[11])  # #10 never came
        assert json.loads(ws.recv(timeout=5)) == {
            "gap": "frame #10 is missing (next came #11): waiting for a keyframe"
        }


def test_route_refuses_other_origins_and_sends_other_views_to_mjpeg(served) -> None:
    with pytest.raises(InvalidStatus):  # another site's page must not read the stream
        open_ws(served, origin="http://evil.example")
    with pytest.raises(InvalidStatus):  # the Host check covers the socket too
        open_ws(served, host="localhost")  # not among this server's names
    with open_ws(served, "nocam") as ws:
        assert json.loads(ws.recv(timeout=5)) == {"error": "unknown camera 'nocam'"}
    jpeg = Camera("jpegcam")
    served.hub.put(ReceivedFrame(jpeg.frame(), True))
    with open_ws(served, "jpegcam") as ws:
        assert json.loads(ws.recv(timeout=5)) == {"mjpeg": "this camera sends JPEG frames"}
    token = served.sessions.create(SimpleNamespace(user="alice", forget=lambda: None))
    with open_ws(served, Cookie=f"{COOKIE}={token}") as ws:  # an unlocked view is composed
        assert json.loads(ws.recv(timeout=5)) == {
            "mjpeg": "an unlocked view is composed in the viewer"
        }
