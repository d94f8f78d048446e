"""Delivery without loss: the store goes away mid-stream (stopped, or killed) and comes back;
the camera spools and resends, and the archive ends with every frame once, in order."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_CLIP, make_home, run_cli

pytestmark = pytest.mark.e2e
NO_ROTATION = "\n[keys]\nrotate_seconds = 3600\n"  # exactly one key envelope per run
FRAMES = 240  # 8 s at the clip's 30 fps


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_store_outage_loses_nothing(tmp_path: Path, procs, how: str) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, extra_camera_toml=NO_ROTATION)
    cfg = home / "config" / "camera.toml"
    # a small memory window, so the outage is held in the on-disk spool
    cfg.write_text(cfg.read_text().replace("[store]\n", "[store]\nmax_in_flight = 20\n", 1))
    store = procs.start_ready("store", "store", "--home", str(home))
    camera = procs.start_ready("camera", "camera", "--home", str(home), "--max-frames", str(FRAMES))
    time.sleep(2.0)
    store.send_signal(getattr(signal, how))
    store.wait(timeout=15)
    time.sleep(3.0)  # ~90 frames captured while the store is away
    procs.start("store2", "store", "--home", str(home))
    assert camera.wait(timeout=90) == 0, procs.log("camera")
    log = procs.log("camera")
    assert (
        f"{FRAMES} published, {FRAMES} acknowledged (+1 key envelopes/gap notices), "
        "0 messages rejected" in log
    ), log
    assert "spooling to" in log and "store connection lost; reconnecting" in log
    for name in ("store", "store2"):
        assert "Traceback" not in procs.log(name)
    report = json.loads(run_cli("verify", str(home), "--json").stdout)
    assert report["intact"], report["problems"]
    cam = report["cameras"][0]
    assert (cam["frames"], cam["first_seq"], cam["last_seq"]) == (FRAMES, 0, FRAMES - 1)


def test_store_killed_repeatedly_during_writes_keeps_every_acknowledged_frame(
    tmp_path: Path, procs
) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, extra_camera_toml=NO_ROTATION)
    frames = 300
    store = procs.start_ready("store0", "store", "--home", str(home))
    camera = procs.start_ready("camera", "camera", "--home", str(home), "--max-frames", str(frames))
    for i in range(1, 4):  # bounded: three crashes in the middle of the stream
        time.sleep(1.5)
        store.send_signal(signal.SIGKILL)
        store.wait(timeout=10)
        time.sleep(0.3)
        store = procs.start_ready(f"store{i}", "store", "--home", str(home))
    assert camera.wait(timeout=120) == 0, procs.log("camera")
    assert (
        f"{frames} published, {frames} acknowledged (+1 key envelopes/gap notices), "
        "0 messages rejected" in procs.log("camera")
    )
    report = json.loads(run_cli("verify", str(home), "--json").stdout)
    assert report["intact"], report["problems"]
    cam = report["cameras"][0]
    assert (cam["frames"], cam["first_seq"], cam["last_seq"]) == (frames, 0, frames - 1)


def test_spool_overflow_drops_oldest_and_declares_the_gap(tmp_path: Path, procs) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, extra_camera_toml=NO_ROTATION)
    cfg = home / "config" / "camera.toml"
    cfg.write_text(
        cfg.read_text().replace(
            "[store]\n", '[store]\nmax_in_flight = 5\nspool_max_mb = 1\ndrop_policy = "oldest"\n', 1
        )
    )
    store = procs.start_ready("store", "store", "--home", str(home))
    camera = procs.start_ready("camera", "camera", "--home", str(home), "--max-frames", "150")
    time.sleep(1.0)
    store.send_signal(signal.SIGTERM)
    store.wait(timeout=15)
    time.sleep(2.5)  # the store is away: the 1 MB spool overflows
    procs.start("store2", "store", "--home", str(home))
    assert camera.wait(timeout=90) == 0, procs.log("camera")
    assert "dropped the oldest" in procs.log("camera")
    assert "declares frames" in procs.log("store2")
    report = json.loads(run_cli("verify", str(home), "--json").stdout)
    assert report["intact"], report["problems"]
    assert any(n["kind"] == "declared_gap" for n in report["notes"])
    assert report["cameras"][0]["last_seq"] == 149 and report["cameras"][0]["frames"] < 150


def test_camera_restarted_during_an_outage_sends_its_spool_first(tmp_path: Path, procs) -> None:
    """No store at all: the camera gives up draining and exits 3, keeping every unacknowledged
    message in its spool; the next run, with the store up, sends those first, then its own."""
    home = make_home(tmp_path, SAMPLE_CLIP, extra_camera_toml=NO_ROTATION)
    cfg = home / "config" / "camera.toml"
    cfg.write_text(
        cfg.read_text().replace(
            "[store]\n", "[store]\nmax_in_flight = 10\ndrain_timeout_s = 1\n", 1
        )
    )
    before_ms = time.time_ns() // 1_000_000
    first = procs.start("camera1", "camera", "--home", str(home), "--max-frames", "40", "--no-pace")
    assert first.wait(timeout=60) == 3, procs.log("camera1")
    # no chain state and no store to ask where the chain ended: numbered from the clock
    assert "41 unacknowledged message(s) kept in" in procs.log("camera1")  # 40 frames + envelope
    spool = home / "state" / "spool-cam1"
    assert len(list(spool.glob("*.msg"))) == 41

    procs.start_ready("store", "store", "--home", str(home))
    second = procs.start(
        "camera2", "camera", "--home", str(home), "--max-frames", "25", "--no-pace"
    )
    assert second.wait(timeout=60) == 0, procs.log("camera2")
    log = procs.log("camera2")
    assert "41 message(s) a previous run left unacknowledged" in log, log
    # 41 old (40 frames + envelope) + 25 frames + envelope
    assert (
        "25 published, 65 acknowledged (+2 key envelopes/gap notices), 0 messages rejected" in log
    ), log
    assert list(spool.glob("*.msg")) == []
    report = json.loads(run_cli("verify", str(home), "--json").stdout)
    assert report["intact"], report["problems"]
    cam = report["cameras"][0]
    assert cam["frames"] == 65 and cam["first_seq"] >= before_ms
    assert cam["last_seq"] == cam["first_seq"] + 64


@pytest.mark.e2e
def test_second_camera_process_on_one_home_is_refused(tmp_path: Path, procs) -> None:
    """A systemd unit plus a manual run would publish the same frame numbers: the second
    process stops at once (exit 2) with a message naming the running one."""
    home = make_home(tmp_path, SAMPLE_CLIP)
    first = procs.start_ready("camera", "camera", "--home", str(home), "--loop", timeout=60)
    second = run_cli("camera", "--home", str(home), "--max-frames", "5")
    assert second.returncode == 2, second.stderr
    assert f"camera cam1 is already running from this home (pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.poll() is None  # the running one is untouched


def test_camera_lock_is_per_camera_and_freed_on_release(tmp_path: Path) -> None:
    from veilcam.camera_node.runlock import CameraLock
    from veilcam.common.errors import VeilcamError

    first = CameraLock(tmp_path / "camera-cam1.lock", "cam1")
    with pytest.raises(VeilcamError, match=r"camera cam1 is already running .*pid \d+"):
        CameraLock(tmp_path / "camera-cam1.lock", "cam1")
    CameraLock(tmp_path / "camera-cam2.lock", "cam2").release()  # other cameras are free
    first.release()
    CameraLock(tmp_path / "camera-cam1.lock", "cam1").release()  # and it is free again


def test_camera_that_lost_its_state_resumes_after_the_stores_last_frame(
    tmp_path: Path, procs
) -> None:
    """The state folder lost (a replaced disk): the camera asks the store where its chain
    ended and starts a new chain after it, instead of sending numbers the store refuses as
    replays. With the store away too, it starts above any number used (the clock in ms)."""
    home = make_home(tmp_path, SAMPLE_CLIP, extra_camera_toml=NO_ROTATION)
    procs.start_ready("store", "store", "--home", str(home))
    first = procs.start("camera1", "camera", "--home", str(home), "--max-frames", "20", "--no-pace")
    assert first.wait(timeout=60) == 0, procs.log("camera1")
    (home / "state" / "camera-cam1.json").unlink()  # what a lost state folder leaves
    second = procs.start(
        "camera2", "camera", "--home", str(home), "--max-frames", "15", "--no-pace"
    )
    assert second.wait(timeout=60) == 0, procs.log("camera2")
    log = procs.log("camera2")
    assert "the store holds frames up to #19; a new chain starts at #20" in log, log
    assert "15 published, 15 acknowledged" in log and " 0 messages rejected" in log, log
    report = json.loads(run_cli("verify", str(home), "--json").stdout)
    assert report["intact"], report["problems"]
    cam = report["cameras"][0]
    assert (cam["frames"], cam["first_seq"], cam["last_seq"]) == (35, 0, 34)

    # lost again, and the store is down: numbered from the clock, kept in the spool
    procs.stop("store")
    (home / "state" / "camera-cam1.json").unlink()
    cfg = home / "config" / "camera.toml"
    cfg.write_text(cfg.read_text().replace("[store]\n", "[store]\ndrain_timeout_s = 1\n", 1))
    before_ms = time.time_ns() // 1_000_000
    third = procs.start("camera3", "camera", "--home", str(home), "--max-frames", "10", "--no-pace")
    assert third.wait(timeout=60) == 3, procs.log("camera3")  # nothing acknowledged yet
    assert "(the clock in ms), above any number used before" in procs.log("camera3")
    procs.start_ready("store2", "store", "--home", str(home))
    fourth = procs.start("camera4", "camera", "--home", str(home), "--max-frames", "5", "--no-pace")
    assert fourth.wait(timeout=60) == 0, procs.log("camera4")
    assert " 0 messages rejected" in procs.log("camera4")
    report = json.loads(run_cli("verify", str(home), "--json").stdout)
    assert report["intact"], report["problems"]
    cam = report["cameras"][0]
    assert cam["frames"] == 50 and cam["last_seq"] >= before_ms
