"""Is the browser page's live video smooth? MJPEG frame rate and gaps, public and unlocked.

Runs store, camera (the sample clip scaled to --size, paced at --fps) and the web viewer as
processes on loopback, then reads ``/stream/CAM.mjpg`` as a browser does for --seconds, first
without a session (the camera's own JPEG bytes forwarded), then unlocked (decrypt + composite +
re-encode in the viewer), and reports parts per second, the gaps between parts (p50, p99,
max) and the viewer's CPU in each window, against the camera's publishing rate read from its
metrics endpoint over the same window.

    python bench/web_stream.py --seconds 15 --size 720p --fps 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    ROOT,
    SIZES,
    NodeSet,
    free_port_base,
    machine,
    make_clip,
    use_yunet,
    veilcam,
)

PASSWORD = "web stream pass phrase 42"


def published(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("veilcam_camera_frames_published_total{"):
                return float(line.rsplit(" ", 1)[1])
    raise RuntimeError("camera metrics have no frames_published_total")


def read_stream(url: str, seconds: float, cookie: str = "") -> list[float]:
    """Arrival times of whole MJPEG parts during ``seconds``."""
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    arrivals = []
    with urllib.request.urlopen(req, timeout=10) as resp:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            line = resp.readline()
            if not line:
                break
            if line.strip() != b"--veilcamframe":
                continue
            length = 0
            while header := resp.readline().strip():
                key, value = header.decode().split(":", 1)
                if key.lower() == "content-length":
                    length = int(value)
            resp.read(length)
            arrivals.append(time.monotonic())
    return arrivals


def window(
    nodes: NodeSet, viewer, metrics_port: int, url: str, seconds: float, cookie: str = ""
) -> dict:
    read_stream(url, 1.0, cookie)  # warm up: the first part is the latest frame at once
    cpu0, pub0, t0 = viewer.read_cpu(), published(metrics_port), time.monotonic()
    arrivals = read_stream(url, seconds, cookie)
    elapsed = time.monotonic() - t0
    cpu1, pub1 = viewer.read_cpu(), published(metrics_port)
    gaps = np.diff(arrivals) * 1000 if len(arrivals) > 1 else np.array([0.0])
    shown_fps = len(arrivals) / seconds
    camera_fps = (pub1 - pub0) / elapsed
    return {
        "parts": len(arrivals),
        "fps": round(shown_fps, 2),
        "camera_fps": round(camera_fps, 2),
        "ratio": round(shown_fps / camera_fps, 3) if camera_fps else None,
        "gap_ms_p50": round(float(np.percentile(gaps, 50)), 1),
        "gap_ms_p99": round(float(np.percentile(gaps, 99)), 1),
        "gap_ms_max": round(float(gaps.max()), 1),
        "viewer_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--size", choices=sorted(SIZES), default="720p")
    ap.add_argument("--fps", type=float, default=30)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "web_stream.json"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="veilcam-bench-web-"))
    clip = make_clip(SIZES[args.size], args.fps, 20, tmp / "clip.mp4")
    home = tmp / "home"
    base = free_port_base(6)
    web_port, metrics_port = base + 3, base + 4
    veilcam(
        "init",
        str(home),
        "--source",
        str(clip),
        "--loop",
        "--port-base",
        str(base),
        "--web-port",
        str(web_port),
    )
    veilcam("user", "add", "alice", "--home", str(home), "--password-stdin", stdin=PASSWORD + "\n")
    cfg = home / "config" / "camera.toml"
    cfg.write_text(
        use_yunet(cfg.read_text().replace("loop = true", f"loop = true\nfps = {args.fps}"))
    )
    nodes = NodeSet(tmp / "logs")
    try:
        nodes.start_veilcam("store", "store", "store", "--home", str(home))
        viewer = nodes.start_veilcam("viewer", "viewer", "view", "--home", str(home), "--web")
        nodes.start_veilcam(
            "camera",
            "camera",
            *("camera", "--home", str(home), "--metrics-port", str(metrics_port)),
            timeout=60,
        )
        time.sleep(2)
        url = f"http://127.0.0.1:{web_port}/stream/cam1.mjpg"
        public = window(nodes, viewer, metrics_port, url, args.seconds)
        req = urllib.request.Request(
            f"http://127.0.0.1:{web_port}/api/unlock",
            method="POST",
            data=json.dumps({"user": "alice", "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
        unlocked = window(nodes, viewer, metrics_port, url, args.seconds, cookie)
    finally:
        nodes.stop_all()
    result = {
        "size": args.size,
        "fps": args.fps,
        "seconds": args.seconds,
        "machine": machine(),
        "public": public,
        "unlocked": unlocked,
    }
    print(
        f"{'stream':<10}{'fps':>7}{'camera':>8}{'ratio':>7}{'gap p50':>9}{'p99':>8}"
        f"{'max':>8}{'viewer CPU':>12}"
    )
    for name in ("public", "unlocked"):
        r = result[name]
        print(
            f"{name:<10}{r['fps']:>7}{r['camera_fps']:>8}{r['ratio']:>7}"
            f"{r['gap_ms_p50']:>8} ms{r['gap_ms_p99']:>6}{r['gap_ms_max']:>8}"
            f"{r['viewer_cpu_pct']:>10} %"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
