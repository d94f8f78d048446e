"""Shared fixtures: deployment homes on loopback ports, real media, processes with time limits."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"
MEDIA = SHARED / "media"
SAMPLE_CLIP = ROOT / "sample_videos" / "people.mp4"
PASSWORD = "correct horse battery"


def free_port_base(count: int = 3) -> int:
    """A base port with ``count`` consecutive free ports on 127.0.0.1, below the ephemeral
    range (so outgoing connections of other processes do not take them meanwhile)."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(20000, 32000 - count)
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free ports")


def yunet_model() -> Path | None:
    return YUNET if YUNET.is_file() else None


def require_media(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (real media lives in ../shared, not in a fresh clone)")
    return path


def veilcam_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "veilcam", *args]


def run_cli(
    *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        veilcam_cmd(*args), input=stdin, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


class Procs:
    """Starts node processes and guarantees they are stopped at the end of the test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, *args: str, stdin: str | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen(
            veilcam_cmd(*args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            cwd=ROOT,
            text=True,
        )
        if stdin is not None:
            proc.stdin.write(stdin)
            proc.stdin.close()
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def wait_for_log(self, name: str, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log(name):
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} did not log {text!r} within {timeout} s:\n{self.log(name)}")

    def start_web_pipeline(self, home: Path) -> subprocess.Popen:
        """Store, browser viewer, then camera (looping its file), each waited for; returns the
        camera process."""
        self.start("store", "store", "--home", str(home))
        self.wait_for_log("store", "store ready")
        self.start("viewer", "view", "--home", str(home), "--web")
        self.wait_for_log("viewer", "viewer ready")
        camera = self.start("camera", "camera", "--home", str(home), "--loop")
        self.wait_for_log("camera", "new content-key epoch", timeout=60)
        return camera

    def stop_all(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _name, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture
def procs(tmp_path: Path):
    p = Procs(tmp_path)
    yield p
    p.stop_all()


def make_home(
    tmp_path: Path,
    source: Path,
    *,
    users: tuple[str, ...] = ("alice",),
    extra_camera_toml: str = "",
    camera_id: str = "cam1",
) -> Path:
    """``veilcam init`` + users, with YuNet from ../shared when present."""
    home = tmp_path / "home"
    base = free_port_base(4)  # ingest, relay, query, web
    web = base + 3
    r = run_cli(
        "init",
        str(home),
        "--camera-id",
        camera_id,
        "--source",
        str(source),
        "--port-base",
        str(base),
        "--web-port",
        str(web),
    )
    assert r.returncode == 0, r.stderr
    for user in users:
        r = run_cli(
            "user", "add", user, "--home", str(home), "--password-stdin", stdin=PASSWORD + "\n"
        )
        assert r.returncode == 0, r.stderr
    cfg = home / "config" / "camera.toml"
    text = cfg.read_text()
    model = yunet_model()
    if model:
        text = text.replace('backend = "auto"', f'backend = "yunet"\nmodel = "{model}"')
    cfg.write_text(text + "\n" + extra_camera_toml)
    return home


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the user's real model cache from tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture(autouse=True)
def _own_zmq_context(monkeypatch: pytest.MonkeyPatch):
    """Each test's in-process sockets (viewer links, relay clients, doctor probes) on a ZeroMQ
    context of its own, destroyed at the end: a test that leaves the shared context busy (a
    hostile store's 300 MiB in flight, a failed handshake) must not leave every later
    in-process query unanswered. Module-scoped fixtures are set up before this and keep the
    shared context."""
    import zmq

    ctx = zmq.Context()
    monkeypatch.setattr(zmq.Context, "instance", classmethod(lambda cls, *a, **k: ctx))
    yield
    monkeypatch.undo()
    ctx.destroy(linger=0)
