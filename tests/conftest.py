"""Shared fixtures: deployment homes on loopback ports, real media, the command line in this
process, and node processes with time limits (the process harness is bench/harness.py).

Test tiers: a test that starts a process (a veilcam command, a browser, a node) is marked
``e2e``; ``pytest -m "not e2e"`` is the fast tier, which reaches the command line in-process
through ``cli``."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

# the names tests import from here, re-exported from the one process harness
from bench.harness import ROOT as ROOT
from bench.harness import SAMPLE_CLIP as SAMPLE_CLIP
from bench.harness import SHARED as SHARED
from bench.harness import YUNET as YUNET
from bench.harness import Node, NodeSet
from bench.harness import free_port_base as free_port_base
from bench.harness import veilcam as _run_veilcam
from bench.harness import veilcam_cmd as veilcam_cmd

MEDIA = SHARED / "media"
PASSWORD = "correct horse battery"


def yunet_model() -> Path | None:
    return YUNET if YUNET.is_file() else None


def require_media(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (real media lives in ../shared, not in a fresh clone)")
    return path


def run_cli(
    *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """``python -m veilcam ARGS`` as a process (e2e tests): exit code, stdout, stderr."""
    return _run_veilcam(*args, stdin=stdin, check=False, timeout=timeout)


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``veilcam ARGS`` in this process (the fast tier): ``veilcam.cli.main`` with ``stdin``
    as standard input, its stdout and stderr (logging included) captured, and the exit code
    the process would have had (argparse's SystemExit; 1 and the traceback on stderr for an
    exception the CLI let through, as the interpreter would print it). Logging, signal
    handlers and the working directory are restored afterwards. For commands that end on
    their own only: a node that serves until stopped needs a process (``procs``)."""
    from veilcam.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    saved_stdin, saved_cwd = sys.stdin, os.getcwd()
    sys.stdin = io.StringIO(stdin or "")
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.stdin = saved_stdin
        os.chdir(saved_cwd)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        for handler in root.handlers[:]:
            if handler not in saved_handlers:
                root.removeHandler(handler)
        for handler in saved_handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(saved_level)
    return subprocess.CompletedProcess(
        ["veilcam", *args], code, stdout=out.getvalue(), stderr=err.getvalue()
    )


class Procs:
    """Node processes of one test (bench/harness.py's NodeSet, logs in the test's tmp
    folder), stopped at its end. ``start_ready`` waits for the node's ``--ready-file``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.nodes = NodeSet(tmp)
        self.by_name: dict[str, Node] = {}

    def start(
        self, name: str, *args: str, stdin: str | None = None, preexec_fn=None
    ) -> subprocess.Popen:
        """``veilcam ARGS`` without waiting (a command that ends, or one without a ready
        file)."""
        node = self.nodes.start(name, name, veilcam_cmd(*args), stdin=stdin, preexec_fn=preexec_fn)
        self.by_name[name] = node
        return node.proc

    def start_ready(
        self,
        name: str,
        *args: str,
        stdin: str | None = None,
        preexec_fn=None,
        timeout: float | None = 30,
    ) -> subprocess.Popen:
        """``veilcam ARGS --ready-file ...`` (store, camera, view), returned once its ready
        file is written (raises if it exits first or within ``timeout`` s it is not; None:
        returned at once, ``ready(name)`` waits)."""
        node = self.nodes.start_veilcam(
            name, name, *args, stdin=stdin, preexec_fn=preexec_fn, timeout=timeout
        )
        self.by_name[name] = node
        return node.proc

    def ready(self, name: str, timeout: float = 30) -> dict:
        """What the node wrote to its ready file (pid and endpoints), waited for."""
        return self.nodes.wait_ready(self.by_name[name], timeout)

    def log(self, name: str) -> str:
        return self.by_name[name].log()

    def wait_for_log(self, name: str, text: str, timeout: float = 20) -> None:
        """Wait for an event the node logs (not for readiness: ``start_ready``)."""
        try:
            self.nodes.wait_for_log(self.by_name[name], text, timeout)
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from None

    def stop(self, name: str, timeout: float = 15) -> int:
        """SIGINT, then SIGKILL after ``timeout`` s; the exit code."""
        return self.by_name[name].stop(timeout)

    def start_web_pipeline(self, home: Path) -> subprocess.Popen:
        """Store, browser viewer, then camera (looping its file), each waited for; returns the
        camera process."""
        self.start_ready("store", "store", "--home", str(home))
        self.start_ready("viewer", "view", "--home", str(home), "--web")
        return self.start_ready("camera", "camera", "--home", str(home), "--loop", timeout=60)

    def stop_all(self) -> None:
        self.nodes.stop_all(timeout=10)


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
    """``veilcam init`` + users (in this process), with YuNet from ../shared when present."""
    home = tmp_path / "home"
    base = free_port_base(4)  # ingest, relay, query, web
    web = base + 3
    r = cli(
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
        r = cli("user", "add", user, "--home", str(home), "--password-stdin", stdin=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
    cfg = home / "config" / "camera.toml"
    text = cfg.read_text()
    model = yunet_model()
    if model:
        text = text.replace('backend = "auto"', f'backend = "yunet"\nmodel = "{model}"')
    cfg.write_text(text + "\n" + extra_camera_toml)
    return home


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """The fast tier (``-m "not e2e"``) starts no process: a test that does is marked e2e.
    Enforced here, so a new slow test cannot slip into the fast tier unmarked."""
    if request.node.get_closest_marker("e2e") is None:

        def refuse(self, args, *_a, **_k) -> None:
            raise AssertionError(f"this test starts a process ({args!r}): mark it e2e")

        monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


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
