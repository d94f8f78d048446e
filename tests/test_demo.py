"""`veilcam demo`: three processes up, page live, Ctrl-C stops them all, archive intact (e2e;
ready when the page's status query shows frames)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port_base, run_cli

pytestmark = pytest.mark.e2e


def test_demo_runs_and_stops_cleanly_on_ctrl_c(tmp_path: Path, procs) -> None:
    base = free_port_base(4)
    web = base + 3
    home = tmp_path / "demo"
    procs.start(
        "demo", "demo", "--home", str(home), "--port-base", str(base), "--web-port", str(web)
    )
    try:
        deadline = time.monotonic() + 60
        status = {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/status", timeout=2) as r:
                    status = json.loads(r.read())
                if status["cameras"] and status["cameras"][0].get("seq", 0) >= 3:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        text = procs.log("demo")
        assert "user    demo" in text and f"http://127.0.0.1:{web}/" in text
        password = text.split("password ", 1)[1].split()[0]
        assert (home / "demo-password.txt").read_text().strip() == password
        cam = status["cameras"][0]
        assert cam["camera"] == "demo-cam" and cam["verified"] and cam["live"]
    finally:
        code = procs.stop("demo", timeout=30)  # Ctrl-C: SIGINT (SIGKILL only after 30 s)
    text = procs.log("demo")
    assert code == 0, text
    for line in (
        "camera demo-cam stopped: signal SIGTERM",
        "viewer stopped: signal SIGTERM",
        "store stopped: signal SIGTERM",
    ):
        assert line in text, text
    assert "killing" not in text and "Traceback" not in text
    verify = run_cli("verify", str(home))
    assert verify.returncode == 0, verify.stdout
