"""``veilcam demo``: store, camera (sample clip, looped) and browser viewer, as three processes."""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
import time
from pathlib import Path

from veilcam.admin import add_user
from veilcam.common import deployment
from veilcam.common.home import Home
from veilcam.common.lifecycle import StopFlag
from veilcam.common.provision import init_home
from veilcam.common.secretfiles import write_secret
from veilcam.sample_videos import DEMO_CLIP

log = logging.getLogger("veilcam.demo")

DEMO_USER = "demo"


def prepare_demo_home(root: Path, port_base: int, web_port: int) -> tuple[Home, str]:
    """Create (or reuse) the demo deployment; returns it and the demo user's password."""
    password_file = Path(root) / "demo-password.txt"
    home = Home(Path(root).resolve())
    if not home.config_dir.exists():
        if not DEMO_CLIP.is_file():
            raise SystemExit(f"the bundled sample clip {DEMO_CLIP} is missing")
        home = init_home(root, "demo-cam", str(DEMO_CLIP), port_base, web_port, loop=True)
        password = secrets.token_urlsafe(12)
        add_user(home, DEMO_USER, password)
        write_secret(password_file, (password + "\n").encode())
    password = password_file.read_text().strip()
    return home, password


def run_demo(root: Path, port_base: int, web_port: int, verbose: bool = False) -> int:
    home, password = prepare_demo_home(root, port_base, web_port)
    web = deployment.viewer_config(home).viewer
    base = [sys.executable, "-m", "veilcam"] + (["--verbose"] if verbose else [])
    store_metrics, camera_metrics = port_base + 90, port_base + 91
    commands = {
        "store": base + ["store", "--home", str(home.root), "--metrics-port", str(store_metrics)],
        "camera": base
        + ["camera", "--home", str(home.root), "--loop", "--metrics-port", str(camera_metrics)],
        "viewer": base + ["view", "--home", str(home.root), "--web"],
    }
    procs: dict[str, subprocess.Popen] = {}
    stop = StopFlag().install()
    exit_code = 0
    try:
        for name, cmd in commands.items():
            # own session: Ctrl-C reaches only this process, which then stops the camera
            # first (so its last frames are acknowledged), then the viewer and the store
            procs[name] = subprocess.Popen(cmd, start_new_session=True)
            time.sleep(0.3)
        print(
            f"\n  veilcam demo is running\n"
            f"  open    http://{web.web_host}:{web.web_port}/\n"
            f"  user    {DEMO_USER}\n"
            f"  password {password}\n"
            f"  home    {home.root}\n"
            f"  metrics http://127.0.0.1:{store_metrics}/metrics (store), "
            f"http://127.0.0.1:{camera_metrics}/metrics (camera)\n"
            f"  Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stop.wait(0.5):
            for name, proc in procs.items():
                if proc.poll() is not None:
                    log.error(
                        "%s process exited with code %s; stopping the demo", name, proc.returncode
                    )
                    stop.set(f"{name} exited")
                    exit_code = 1
    finally:
        for name in ("camera", "viewer", "store"):
            running = procs.get(name)
            if running is None:
                continue
            if running.poll() is None:
                running.terminate()
            try:
                running.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop within 10 s; killing it", name)
                running.kill()
                running.wait()
        log.info("demo stopped: %s", stop.reason)
    return exit_code
