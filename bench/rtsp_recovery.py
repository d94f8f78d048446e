"""RTSP recovery benchmark (issue 15): a real RTSP server, store and camera; the server killed
and restarted N times; time to recover and frames lost outside declared outages.

Debian's GStreamer RTSP server (tests/rtsp_server.py, the system Python with python3-gi; see
.ci/install-rtsp) serves the bundled clip as H.264 behind basic auth on 127.0.0.1. A store and
a camera node (its camera.source the server's URL, the default timeouts and backoff unless
given) run as real processes (bench/harness.py). After ``--up`` seconds of streaming, the
server is killed (SIGKILL: a camera losing power or network), stays down ``--down`` seconds,
and starts again on the same port; this ``--restarts`` times. Then the camera and the store
stop, and the archive is read back:

* **time to recover**: from the moment the restarted server accepts connections to the capture
  time of the first frame archived after it (the end of the camera's offline notice, which is
  that frame's capture time), p50 / p99 / max;
* **frames lost outside declared gaps**: sequence numbers missing from the archive that no
  signed gap notice declares (``veilcam verify`` problems of kind ``gap``), and holes in
  capture time longer than ``--hole-s`` between consecutive frames that no offline notice
  covers; both must be 0;
* each restart must have its offline notice, its span holding the time the server was down.

Usage: ``python bench/rtsp_recovery.py [--restarts 10] [--down 3] [--up 4]``; results in
bench/results/rtsp_recovery.json. Figures: docs/RELIABILITY.md ("RTSP source restarts").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from veilcam.common.format import FrameMessage, GapNotice, decode_message_body  # noqa: E402
from veilcam.common.segments import Record, list_segments, scan_segment  # noqa: E402

from bench.harness import (  # noqa: E402
    SAMPLE_CLIP,
    NodeSet,
    free_port_base,
    machine,
    use_yunet,
    veilcam,
)
from tests.rtsp_server import RtspServer, encode_clip, missing_requirements  # noqa: E402

USER, PASSWORD = "admin", "bench-Pa55-word"
CAMERA = "cam1"


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (of 10 samples, p99 is the largest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _read_archive(
    home: Path,
) -> tuple[list[tuple[int, int]], list[GapNotice], set[int]]:
    """(seq, capture µs) of every frame, the offline notices, and the frames spool-full
    notices declare dropped, from the segments."""
    frames, notices, dropped = [], [], set()
    for seg in list_segments(home / "archive" / "segments" / CAMERA):
        for rec in scan_segment(seg):
            if not isinstance(rec, Record):
                continue
            msg = decode_message_body(rec.kind, rec.parts)
            if isinstance(msg, FrameMessage):
                frames.append((msg.header.seq, msg.header.capture_time_us))
            elif isinstance(msg, GapNotice) and msg.offline:
                notices.append(msg)
            elif isinstance(msg, GapNotice):
                dropped.update(range(msg.first_seq, msg.last_seq + 1))
    frames.sort()
    unique = {n.body_bytes: n for n in notices}  # a notice resent after a store restart
    return frames, sorted(unique.values(), key=lambda n: n.from_us), dropped


def _missing(frames: list[tuple[int, int]], dropped: set[int]) -> list[int]:
    """Sequence numbers between the first and last frame neither archived nor declared."""
    have = {seq for seq, _ in frames}
    if not have:
        return []
    return [s for s in range(min(have), max(have) + 1) if s not in have and s not in dropped]


def _undeclared_holes(
    frames: list[tuple[int, int]], notices: list[GapNotice], hole_s: float
) -> list[dict]:
    """Consecutive frames further apart in capture time than ``hole_s`` with no offline
    notice naming exactly them."""
    declared = {(n.first_seq, n.last_seq) for n in notices}
    holes = []
    for (seq_a, t_a), (seq_b, t_b) in zip(frames, frames[1:], strict=False):
        if (t_b - t_a) / 1e6 > hole_s and (seq_a, seq_b) not in declared:
            holes.append({"after_seq": seq_a, "seconds": round((t_b - t_a) / 1e6, 2)})
    return holes


def _setup(work: Path, url: str, args: argparse.Namespace) -> Path:
    home = work / "home"
    base = free_port_base(4)
    veilcam(
        "init",
        str(home),
        "--camera-id",
        CAMERA,
        "--source",
        str(SAMPLE_CLIP),
        "--port-base",
        str(base),
        "--web-port",
        str(base + 3),
    )
    cfg = home / "config" / "camera.toml"
    keys = f"source = {json.dumps(url)}\n"
    for name in ("open_timeout_s", "read_timeout_s", "reconnect_max_s"):
        value = getattr(args, name)
        if value is not None:
            keys += f"{name} = {value}\n"
    text = "\n".join(
        line for line in cfg.read_text().splitlines() if not line.startswith("source = ")
    )
    cfg.write_text(use_yunet(text.replace("[camera]\n", "[camera]\n" + keys, 1)) + "\n")
    return home


def run(args: argparse.Namespace, work: Path) -> dict:
    aus = work / "people.aus"
    fps = encode_clip(SAMPLE_CLIP, aus)
    server = RtspServer(aus, fps=fps, user=USER, password=PASSWORD, log_path=work / "rtsp.log")
    server.start()
    home = _setup(work, server.url(), args)
    nodes = NodeSet(work)
    stats = work / "camera-stats.json"
    restarts: list[dict] = []
    try:
        nodes.start_veilcam("store", "store", "store", "--home", str(home))
        camera = nodes.start_veilcam(
            "camera", "camera", "camera", "--home", str(home), "--stats-out", str(stats), timeout=90
        )
        nodes.wait_for_log(camera, "connected: h264", timeout=30)
        time.sleep(args.up)
        for i in range(args.restarts):
            killed = time.time()
            server.stop()
            time.sleep(args.down)
            server.start()  # returns once the port accepts connections
            back = time.time()
            deadline = time.monotonic() + 120
            while camera.log().count("reconnected after") < i + 1:
                if time.monotonic() > deadline or camera.poll():
                    raise RuntimeError(f"camera did not reconnect:\n{camera.log()[-3000:]}")
                time.sleep(0.05)
            restarts.append({"killed": killed, "back": back})
            print(f"restart {i + 1}/{args.restarts}: camera reconnected", flush=True)
            time.sleep(args.up)
        camera_exit = camera.stop(30)
        nodes.stop_all(timeout=30)
    finally:
        nodes.stop_all(timeout=10)
        server.stop()
    return _judge(home, restarts, camera_exit, stats, camera.log(), args)


def _judge(
    home: Path,
    restarts: list[dict],
    camera_exit: int,
    stats: Path,
    camera_log: str,
    args: argparse.Namespace,
) -> dict:
    frames, notices, dropped = _read_archive(home)
    report = json.loads(veilcam("verify", str(home), "--json", check=False).stdout)
    seq_gaps = [p for p in report["problems"] if p["kind"] == "gap"]
    recovery, matched = [], 0
    for r in restarts:
        # the notice of this outage: it starts before the kill and ends after the restart
        found = [
            n
            for n in notices
            if n.from_us / 1e6 <= r["killed"] + 0.5 and n.to_us / 1e6 >= r["back"]
        ]
        found = [n for n in found if n.from_us / 1e6 >= r["killed"] - 2.0]
        if found:
            matched += 1
            r["declared_from"], r["declared_to"] = found[0].from_us / 1e6, found[0].to_us / 1e6
            r["recovery_s"] = round(r["declared_to"] - r["back"], 3)
            recovery.append(r["recovery_s"])
    holes = _undeclared_holes(frames, notices, args.hole_s)
    camera_stats = json.loads(stats.read_text()) if stats.exists() else {}
    return {
        "benchmark": "rtsp_recovery",
        "machine": machine(),
        "settings": {
            "restarts": args.restarts,
            "down_s": args.down,
            "up_s": args.up,
            "hole_s": args.hole_s,
            "open_timeout_s": args.open_timeout_s,
            "read_timeout_s": args.read_timeout_s,
            "reconnect_max_s": args.reconnect_max_s,
        },
        "recovery_s": {
            "p50": round(statistics.median(recovery), 3) if recovery else None,
            "p99": _percentile(recovery, 99) if recovery else None,
            "max": max(recovery) if recovery else None,
            "each": recovery,
        },
        "restarts_declared": f"{matched}/{len(restarts)}",
        "offline_notices": len(notices),
        "frames_archived": len(frames),
        "frames_lost_outside_declared_gaps": len(_missing(frames, dropped)),
        "seq_gap_problems": seq_gaps,
        "undeclared_time_holes": holes,
        "verify_intact": report["intact"],
        "verify_problems": report["problems"][:10],
        "camera_exit": camera_exit,
        "camera_reconnects": camera_stats.get("source_reconnects"),
        "camera_dropped_overload": camera_stats.get("dropped_overload"),
        "password_in_log": PASSWORD in camera_log,
        "restarts": restarts,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--down", type=float, default=3.0, help="seconds the server stays down")
    ap.add_argument("--up", type=float, default=4.0, help="seconds of streaming between")
    ap.add_argument("--hole-s", type=float, default=1.0, help="capture-time hole to count")
    ap.add_argument("--open-timeout-s", type=float, default=None, help="camera.open_timeout_s")
    ap.add_argument("--read-timeout-s", type=float, default=None, help="camera.read_timeout_s")
    ap.add_argument("--reconnect-max-s", type=float, default=None, help="camera.reconnect_max_s")
    ap.add_argument("--out", help="results JSON (default bench/results/rtsp_recovery.json)")
    args = ap.parse_args()
    why = missing_requirements()
    if why:
        print(f"no RTSP server here: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="veilcam-rtsp-bench-") as tmp:
        result = run(args, Path(tmp))
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / "rtsp_recovery.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    rec = result["recovery_s"]
    print(
        f"recovery after {args.restarts} restarts (down {args.down:g} s): p50 {rec['p50']} s, "
        f"p99 {rec['p99']} s, max {rec['max']} s; declared {result['restarts_declared']}; "
        f"frames lost outside declared gaps {result['frames_lost_outside_declared_gaps']}, "
        f"undeclared holes {len(result['undeclared_time_holes'])}; verify "
        f"{'INTACT' if result['verify_intact'] else 'NOT INTACT'}; results: {out}"
    )
    ok = (
        result["verify_intact"]
        and not result["undeclared_time_holes"]
        and result["frames_lost_outside_declared_gaps"] == 0
        and result["restarts_declared"] == f"{args.restarts}/{args.restarts}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
