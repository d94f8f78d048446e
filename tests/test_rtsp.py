"""RTSP cameras against a real RTSP server (Debian's gst-rtsp-server, tests/rtsp_server.py) on
loopback: capture, reconnection after the server restarts (the outage declared in a signed
offline notice with its time span), a camera stopped while its source is down, a stream that
comes back at another resolution, wrong credentials, a server that accepts the connection and
never answers, and ``veilcam doctor`` opening the source. Every test starts a process: all are e2e, and they
skip (saying why) where the server's packages are missing; CI installs them (.ci/install-rtsp)."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from veilcam.camera_node.sources import FrameSource
from veilcam.common.errors import VeilcamError
from veilcam.common.format import GapNotice, decode_message_body
from veilcam.common.segments import Record, list_segments, scan_segment

from tests.conftest import SAMPLE_CLIP, make_home, run_cli
from tests.rtsp_server import RtspServer, encode_clip, missing_requirements

pytestmark = pytest.mark.e2e

USER, SECRET = "admin", "s3cret-Pa55"


@pytest.fixture(scope="module")
def rtsp_ready() -> None:
    why = missing_requirements()
    if why:
        pytest.skip(f"no RTSP server here: {why}")


@pytest.fixture(scope="module")
def clip_aus(tmp_path_factory: pytest.TempPathFactory, rtsp_ready: None) -> tuple[Path, float]:
    """The bundled clip as H.264 access units (10 s, a keyframe a second), made once."""
    out = tmp_path_factory.mktemp("rtsp") / "people.aus"
    return out, encode_clip(SAMPLE_CLIP, out)


@pytest.fixture
def server(clip_aus: tuple[Path, float], tmp_path: Path) -> Iterator[RtspServer]:
    aus, fps = clip_aus
    srv = RtspServer(aus, fps=fps, user=USER, password=SECRET, log_path=tmp_path / "rtsp.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP listener that accepts connections and never says a word: the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    listener.close()


def _set_camera_keys(home: Path, **keys: object) -> None:
    cfg = home / "config" / "camera.toml"
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    cfg.write_text(cfg.read_text().replace("[camera]\n", "[camera]\n" + lines, 1))


def _offline_notices(home: Path) -> list[GapNotice]:
    """The offline notices in the archive's segments, read directly."""
    out = []
    for seg in list_segments(home / "archive" / "segments" / "cam1"):
        for rec in scan_segment(seg):
            if isinstance(rec, Record) and rec.kind == GapNotice.kind:
                msg = decode_message_body(rec.kind, rec.parts)
                assert isinstance(msg, GapNotice)
                if msg.offline:
                    out.append(msg)
    return out


def _start_store_and_camera(procs, home: Path, url: str, stats: Path):
    """The home's store, then its camera on ``url`` writing its stats to ``stats``; both ready."""
    procs.start_ready("store", "store", "--home", str(home))
    return procs.start_ready(
        "camera",
        "camera",
        "--home",
        str(home),
        "--source",
        url,
        "--stats-out",
        str(stats),
        timeout=60,
    )


def _frames(source: FrameSource, n: int, timeout_s: float = 20) -> int:
    got, deadline = 0, time.monotonic() + timeout_s
    for _ in source.frames():
        got += 1
        if got >= n or time.monotonic() > deadline:
            break
    return got


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_source_reads_the_camera_over_either_transport(server: RtspServer, transport: str) -> None:
    source = FrameSource(server.url(), rtsp_transport=transport, open_timeout_s=5)
    try:
        assert source.fps == pytest.approx(30, abs=0.5)
        assert _frames(source, 20) == 20
        assert source.up and source.reconnects == 0
    finally:
        source.close()


def test_source_reconnects_after_the_server_restarts(
    server: RtspServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed mid-stream, down 3 s, back on the same port: one 'lost' line, one 'reconnected'
    line, the reconnect counted, frames again; the time from restart to frames is printed."""
    caplog.set_level("INFO", logger="veilcam.source")
    source = FrameSource(server.url(), open_timeout_s=3, read_timeout_s=2, reconnect_max_s=4)
    frames = source.frames()
    try:
        for _ in range(15):
            next(frames)
        server.stop()
        time.sleep(3)
        assert not source.up
        restarted = time.monotonic()
        server.start()
        next(frames)
        while not source.up:  # the one before the restart may have still been in the slot
            next(frames)
        recovery = time.monotonic() - restarted
        for _ in range(15):
            next(frames)
    finally:
        source.close()
    print(f"rtsp: frames again {recovery:.2f} s after the server restarted")
    assert source.reconnects == 1 and recovery < 8
    text = caplog.text
    assert text.count(" lost (") == 1 and text.count("reconnected after") == 1, text
    assert SECRET not in text and f"{USER}:***@" in text


def test_wrong_credentials_are_one_clear_error(server: RtspServer) -> None:
    with pytest.raises(VeilcamError, match="refused the credentials") as err:
        FrameSource(server.url(password="wrong-one"), open_timeout_s=5)
    assert "wrong-one" not in str(err.value) and f"{USER}:***@" in str(err.value)


def test_camera_from_rtsp_archives_and_reconnects(
    server: RtspServer, tmp_path: Path, procs
) -> None:
    """A camera node on the RTSP URL into a real store: frames archived, the server killed
    and restarted mid-stream, the camera reconnects (counted in its stats), declares the outage
    in a signed offline notice whose span holds the time the server was down, the archive
    verifies and ``veilcam verify`` names the outage; the password appears in no log or stats
    file."""
    home = make_home(tmp_path, SAMPLE_CLIP)
    _set_camera_keys(home, read_timeout_s=2.0, open_timeout_s=3.0, reconnect_max_s=4.0)
    stats = tmp_path / "stats.json"
    camera = _start_store_and_camera(procs, home, server.url(), stats)
    procs.wait_for_log("camera", "connected: h264 640x360", timeout=20)
    time.sleep(2)
    killed = time.time()
    server.stop()
    procs.wait_for_log("camera", " lost (", timeout=15)
    time.sleep(2)
    restarted, restarted_wall = time.monotonic(), time.time()
    server.start()
    procs.wait_for_log("camera", "reconnected after", timeout=20)
    print(f"camera: reconnected {time.monotonic() - restarted:.2f} s after the restart (log)")
    procs.wait_for_log("camera", "declared to the store: camera offline", timeout=10)
    back = time.time()
    time.sleep(2)
    assert procs.stop("camera") == 0 and camera.returncode == 0, (
        procs.log("camera")
        + procs.log("store")
        + f"store exit {procs.by_name['store'].proc.poll()}"
    )
    log = procs.log("camera")
    assert "Traceback" not in log and SECRET not in log, log
    doc = json.loads(stats.read_text())
    assert doc["source_reconnects"] == 1 and SECRET not in stats.read_text()
    assert doc["offline_notices"] == 1
    report = json.loads(run_cli("verify", str(home), "--json").stdout)
    assert report["intact"], report["problems"]
    assert report["cameras"][0]["frames"] >= 60, report["cameras"][0]
    assert report["cameras"][0]["offline_spans"] == 1, report["cameras"][0]
    (notice,) = _offline_notices(home)
    # from the last frame before the kill to the first after the restart
    assert killed - 1.0 <= notice.from_us / 1e6 <= killed + 0.2, (notice, killed)
    assert restarted_wall <= notice.to_us / 1e6 <= back, (notice, restarted_wall, back)
    assert notice.last_seq == notice.first_seq + 1
    text = run_cli("verify", str(home)).stdout
    assert "camera offline " in text and "source lost, declared by the camera" in text, text
    assert "\nINTACT: every record verified" in text, text


def test_camera_with_wrong_credentials_exits_with_one_clear_error(
    server: RtspServer, tmp_path: Path
) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    r = run_cli("camera", "--home", str(home), "--source", server.url(password="nope-123"))
    assert r.returncode != 0
    assert "refused the credentials" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "nope-123" not in r.stderr + r.stdout


def test_silent_server_times_out_retries_and_ctrl_c_stops_the_camera(
    silent_server: int, tmp_path: Path, procs
) -> None:
    """A server that accepts the connection and never answers: the open times out (bounded),
    the camera keeps retrying without hanging, and SIGINT stops it within a few seconds."""
    home = make_home(tmp_path, SAMPLE_CLIP)
    _set_camera_keys(home, open_timeout_s=1.5, read_timeout_s=1.5, reconnect_max_s=2.0)
    url = f"rtsp://{USER}:{SECRET}@127.0.0.1:{silent_server}/stream"
    procs.start_ready("store", "store", "--home", str(home))
    camera = procs.start_ready("camera", "camera", "--home", str(home), "--source", url)
    procs.wait_for_log("camera", "(timed out)", timeout=15)
    time.sleep(3)  # now in a backoff or a blocked open
    assert camera.poll() is None
    asked = time.monotonic()
    camera.send_signal(signal.SIGINT)
    camera.wait(timeout=15)
    took = time.monotonic() - asked
    log = procs.log("camera")
    print(f"silent server: camera stopped {took:.2f} s after SIGINT")
    assert took < 6 and camera.returncode == 0, log
    assert "Traceback" not in log and SECRET not in log, log
    assert len(re.findall(r"timed out", log)) == 1, log  # one line for the state, not per try


def test_camera_stopped_while_its_source_is_down_declares_the_outage_until_the_stop(
    server: RtspServer, tmp_path: Path, procs
) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    _set_camera_keys(home, read_timeout_s=2.0, open_timeout_s=2.0, reconnect_max_s=2.0)
    procs.start_ready("store", "store", "--home", str(home))
    camera = procs.start_ready(
        "camera", "camera", "--home", str(home), "--source", server.url(), timeout=60
    )
    procs.wait_for_log("camera", "connected: h264 640x360", timeout=20)
    time.sleep(2)
    killed = time.time()
    server.stop()
    procs.wait_for_log("camera", " lost (", timeout=15)
    time.sleep(1)
    asked = time.time()
    assert procs.stop("camera") == 0 and camera.returncode == 0, procs.log("camera")
    log = procs.log("camera")
    assert "declared to the store: camera offline" in log and "until the camera stopped" in log
    (notice,) = _offline_notices(home)
    assert notice.last_seq == notice.first_seq
    assert killed - 1.0 <= notice.from_us / 1e6 <= killed + 0.2
    assert asked <= notice.to_us / 1e6 <= time.time()
    report = json.loads(run_cli("verify", str(home), "--json").stdout)
    assert report["intact"] and report["cameras"][0]["offline_spans"] == 1, report


def test_stream_back_at_another_resolution_keeps_the_camera_running(
    clip_aus: tuple[Path, float], tmp_path: Path, procs
) -> None:
    """The IP camera reconfigured: the stream comes back at 320x180 on the same URL. The camera
    (H.264 mode) logs the change once, starts a new GOP at the new size on the same chain, and
    the archive verifies with frames of both sizes."""
    aus, fps = clip_aus
    small = tmp_path / "small.aus"
    encode_clip(SAMPLE_CLIP, small, max_frames=150, size=(320, 180))
    big = RtspServer(aus, fps=fps, user=USER, password=SECRET, log_path=tmp_path / "rtsp.log")
    second = RtspServer(small, fps=fps, port=big.port, user=USER, password=SECRET)
    home = make_home(tmp_path, SAMPLE_CLIP)
    _set_camera_keys(home, read_timeout_s=2.0, open_timeout_s=3.0, reconnect_max_s=2.0)
    cfg = home / "config" / "camera.toml"
    cfg.write_text(cfg.read_text() + '\n[encoding]\nvideo = "h264"\nkeyframe_s = 1.0\n')
    stats = tmp_path / "stats.json"
    big.start()
    try:
        camera = _start_store_and_camera(procs, home, big.url(), stats)
        procs.wait_for_log("camera", "connected: h264 640x360", timeout=20)
        time.sleep(2)
        big.stop()
        procs.wait_for_log("camera", " lost (", timeout=15)
        second.start()
        procs.wait_for_log("camera", "changed its frame size from 640x360 to 320x180", timeout=20)
        time.sleep(3)
        assert camera.poll() is None, procs.log("camera")
        assert procs.stop("camera") == 0 and camera.returncode == 0, procs.log("camera")
    finally:
        big.stop()
        second.stop()
    log = procs.log("camera")
    assert "Traceback" not in log and log.count("changed its frame size") == 1, log
    assert json.loads(stats.read_text())["source_size_changes"] == 1
    report = json.loads(run_cli("verify", str(home), "--json").stdout)
    assert report["intact"], report["problems"]
    assert report["cameras"][0]["chain_starts"] == 0, report["cameras"][0]
    sizes = set()
    for seg in list_segments(home / "archive" / "segments" / "cam1"):
        for rec in scan_segment(seg):
            if isinstance(rec, Record) and rec.kind == b"F":
                h = decode_message_body(rec.kind, rec.parts).header
                sizes.add((h.width, h.height))
    assert sizes == {(640, 360), (320, 180)}, sizes


def test_doctor_opens_the_camera_stream_and_reports_it_without_the_password(
    server: RtspServer, tmp_path: Path
) -> None:
    """``veilcam doctor`` on a home whose camera.source is the RTSP URL: codec, resolution and
    frame rate; wrong credentials a FAIL saying so; never the password."""
    home = make_home(tmp_path, SAMPLE_CLIP)
    cfg = home / "config" / "camera.toml"
    original = cfg.read_text()
    for password, status, finding in (
        (SECRET, "OK", "h264 640x360 at 30.0 fps"),
        ("wrong-pw-9", "FAIL", "refused the credentials"),
    ):
        url = server.url(password=password)
        cfg.write_text(
            re.sub(r"(?m)^source = .*$", lambda _, u=url: f"source = {json.dumps(u)}", original)
        )
        started = time.monotonic()
        r = run_cli("doctor", "--home", str(home), "--json")
        took = time.monotonic() - started
        (check,) = [c for c in json.loads(r.stdout)["checks"] if c["check"] == "source"]
        assert check["status"] == status and finding in check["finding"], check
        assert f"{USER}:***@" in check["finding"] and password not in r.stdout + r.stderr
        assert took < 30, took


def test_camera_detects_on_the_sub_stream_and_falls_back_when_it_goes_down(
    server: RtspServer, tmp_path: Path, procs
) -> None:
    """camera.detect_source on a second server (the clip at 320x180, as a camera's sub-stream):
    faces are detected on it; when it goes down the camera goes on detecting on the main
    frames (logged once, counted), and the archive verifies. Neither password is logged."""
    small = tmp_path / "sub.aus"
    encode_clip(SAMPLE_CLIP, small, max_frames=300, size=(320, 180))
    sub = RtspServer(small, fps=server.fps, user=USER, password=SECRET + "-sub")
    home = make_home(tmp_path, SAMPLE_CLIP)
    _set_camera_keys(
        home,
        read_timeout_s=2.0,
        open_timeout_s=3.0,
        reconnect_max_s=2.0,
        detect_source=sub.url(),
        detect_tolerance_ms=100.0,
    )
    stats = tmp_path / "stats.json"
    sub.start()
    try:
        camera = _start_store_and_camera(procs, home, server.url(), stats)
        procs.wait_for_log("camera", "connected: h264 320x180", timeout=20)
        time.sleep(3)
        sub.stop()
        procs.wait_for_log("camera", "detecting on the main frames", timeout=15)
        time.sleep(2)
        assert camera.poll() is None, procs.log("camera")
        assert procs.stop("camera") == 0 and camera.returncode == 0, procs.log("camera")
    finally:
        sub.stop()
    log = procs.log("camera")
    assert "Traceback" not in log and SECRET not in log, log
    counts = json.loads(stats.read_text())["detect_source"]
    assert counts["used"] >= 30 and counts["late"] >= 10, counts
    assert SECRET not in stats.read_text()
    report = json.loads(run_cli("verify", str(home), "--json").stdout)
    assert report["intact"], report["problems"]
