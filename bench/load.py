"""Load and soak: N camera nodes (720p file sources) into one store, two unlocked viewers.

    python bench/load.py [--seconds 120] [--cameras 8] [--fps 10] [--faults] [--out FILE]
    python bench/load.py --soak [--seconds 3600]         # long manual run, same checks
    python bench/load.py --disk-fill [--disk-method tmpfs|rlimit]

A fresh deployment in a temporary folder, made with the CLI (``veilcam init``, ``cert issue
camera:camN``, ``user add``): cameras cam1..camN, each its own process reading the same 720p
clip (the bundled sample plus ../shared media, scaled once with OpenCV), looped and paced at
``--fps`` (``camera.fps`` in each camera's config), face detection on (YuNet from ../shared
when present); one store; two headless viewers unlocked as a user (``veilcam view --headless
--user``), each following one camera live; viewer 1 runs throughout.

Every ``--sample-s`` seconds it records the RSS (/proc/PID/status VmRSS) and CPU
(/proc/PID/stat) of every process, and how far the archive is behind each camera (newest
indexed capture time against now). With ``--faults``: the store is SIGKILLed and restarted at
30 % of the run, the last viewer SIGKILLed and restarted at 50 %, and the store's sockets stop
answering for 10 s at 60 % (SIGSTOP of the store process, then SIGCONT: the TCP connections
stay up but nothing is read or answered, as on a dead network path).

At the end it waits until the archive has caught up with every camera, stops the cameras
(SIGTERM: they drain and exit), the viewers, then the store, and counts per camera: frames
published (camera --stats-out), frames archived (``veilcam verify --json``, which re-reads
the segments, and the SQLite index), frames declared dropped (signed gap notices), and
frames lost = published - archived - declared (must be 0); the archive must verify with every
frame once and in order. It prints a table, writes JSON (``--out``), and exits 1 if a frame
was lost, the archive does not verify, a node crashed or exited non-zero, or the store's
memory grew: median RSS of the last quarter of the run above ``--rss-bound`` (1.5) times the
median of the first quarter (after the warm-up).

``--disk-fill`` is a separate, shorter scenario: the store's archive lives on a small tmpfs
(when run as root) or the store runs under RLIMIT_FSIZE; the cameras fill it, the store must
log a clear error and stop acknowledging, space is then given back, and at the end nothing
may be lost (an acknowledged frame the store lost would never be sent again).

On one machine the cameras take the CPU the store and viewers would have on their own:
``--camera-nice 10`` makes them yield, as separate camera devices would; ``--detect-width
320`` is the lighter detection setting. The archive's segments are deleted once counted
unless ``--keep-archive`` (logs, index and results stay). Figures: docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.harness import (  # noqa: E402
    ROOT,
    Node,
    NodeSet,
    free_port_base,
    machine,
    make_clip,
    rss_mb,
    rss_split_mb,
    use_yunet,
    veilcam,
)

USER, PASSWORD = "alice", "load test pass phrase 42"
LAG_OK_S = 3.0  # the archive is "caught up" with a camera when its newest frame is this fresh
BYTES_PER_FRAME_720P = 110_000  # public JPEG + zones, docs/PERFORMANCE.md (for the disk check)


@dataclass
class Fault:
    at: float  # fraction of the run
    action: str  # kill_store | kill_viewer | pause_store
    duration_s: float = 0.0


DEFAULT_FAULTS = [
    Fault(0.3, "kill_store"),
    Fault(0.5, "kill_viewer"),
    Fault(0.6, "pause_store", 10.0),
]


@dataclass
class LoadOptions:
    seconds: float = 120.0
    cameras: int = 8
    fps: float = 10.0
    size: tuple[int, int] = (1280, 720)
    clip: Path | None = None  # use this clip as it is instead of scaling one
    viewers: int = 2
    faults: list[Fault] = field(default_factory=list)
    detect_width: int | None = None  # lighter detection: faces.detect_width
    camera_nice: int = 0  # >0: cameras yield the CPU to store and viewers (separate devices)
    sample_s: float = 2.0
    warmup_s: float | None = None  # default: max(10 s, 10 % of the run)
    rss_bound: float = 1.5
    workdir: Path | None = None
    progress_s: float = 10.0
    quiet: bool = False
    keep_archive: bool = False  # else the segments go once counted (logs and index stay)


# --------------------------------------------------------------------------- deployment


class Deployment:
    """A fresh home with cameras cam1..camN, one user, and the nodes running on it."""

    def __init__(
        self,
        root: Path,
        cameras: int,
        fps: float,
        clip: Path,
        detect_width: int | None = None,
        camera_nice: int = 0,
    ) -> None:
        self.root = Path(root)
        self.home = self.root / "home"
        self.nodes = NodeSet(self.root / "logs")
        self.camera_ids = [f"cam{i}" for i in range(1, cameras + 1)]
        self.fps, self.clip, self.detect_width = fps, clip, detect_width
        self.camera_nice = camera_nice
        self.store: Node | None = None
        self.store_preexec = None
        self.viewer_nodes: dict[int, Node] = {}
        self._started: dict[str, int] = {}

    def create(self, archive_path: Path | None = None) -> None:
        base = free_port_base(4)
        veilcam(
            "init",
            str(self.home),
            "--camera-id",
            self.camera_ids[0],
            "--source",
            str(self.clip),
            "--loop",
            "--port-base",
            str(base),
            "--web-port",
            str(base + 3),
        )
        for cam in self.camera_ids[1:]:
            veilcam("cert", "issue", f"camera:{cam}", "--home", str(self.home))
        veilcam(
            "user", "add", USER, "--home", str(self.home), "--password-stdin", stdin=PASSWORD + "\n"
        )  # after the certificates: grants every camera
        template = use_yunet((self.home / "config" / "camera.toml").read_text())
        template = template.replace("loop = true", f"loop = true\nfps = {self.fps:g}", 1)
        if self.detect_width:
            template = template.replace(
                "[faces]\n", f"[faces]\ndetect_width = {self.detect_width}\n", 1
            )
        for cam in self.camera_ids:
            text = template.replace(f'id = "{self.camera_ids[0]}"', f'id = "{cam}"', 1)
            self.camera_config(cam).write_text(text)
        if archive_path is not None:
            store_cfg = self.home / "config" / "store.toml"
            store_cfg.write_text(
                store_cfg.read_text().replace(
                    'path = "archive"', f"path = {json.dumps(str(archive_path))}", 1
                )
            )

    def camera_config(self, cam: str) -> Path:
        return self.home / "config" / f"{cam}.toml"

    @property
    def archive(self) -> Path:
        from veilcam.common import deployment
        from veilcam.common.home import Home

        return deployment.archive_dir(Home(self.home))

    def _name(self, base: str) -> str:
        n = self._started.get(base, 0) + 1
        self._started[base] = n
        return base if n == 1 else f"{base}-r{n - 1}"

    def start_store(self) -> float:
        """Start the store; seconds until it is ready."""
        name = self._name("store")
        self.store = self.nodes.start_veilcam(
            name,
            "store",
            *("store", "--home", str(self.home), "--stats-out", str(self.root / f"{name}.json")),
            preexec_fn=self.store_preexec,
            timeout=90,
        )
        return time.monotonic() - self.store.started

    def start_camera(self, cam: str) -> Node:
        nice = self.camera_nice
        return self.nodes.start_veilcam(
            cam,
            "camera",
            "camera",
            "--home",
            str(self.home),
            "--config",
            str(self.camera_config(cam)),
            "--stats-out",
            str(self.root / f"{cam}.json"),
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
            timeout=None,  # started together; _start_nodes waits for their ready files
        )

    def start_viewer(self, index: int) -> float:
        """Viewer ``index`` (1-based) follows camera ``index`` live; seconds until ready."""
        camera = self.camera_ids[(index - 1) % len(self.camera_ids)]
        name = self._name(f"viewer{index}")
        out = self.root / "views" / name
        node = self.nodes.start_veilcam(
            name,
            "viewer",
            "view",
            "--home",
            str(self.home),
            "--headless",
            "--user",
            USER,
            "--password-stdin",
            "--out",
            str(out),
            "--frames",
            str(10**9),
            "--timeout",
            str(10**7),
            "--camera",
            camera,
            stdin=PASSWORD + "\n",
            timeout=None,
        )
        node.out_dir, node.camera = out, camera
        node.started_wall = time.time()
        self.viewer_nodes[index] = node
        self.nodes.wait_ready(node, timeout=60)
        return time.monotonic() - node.started


def index_progress(archive: Path) -> dict[str, dict]:
    """Per camera: frames indexed, highest seq, newest capture time (read-only, WAL)."""
    path = archive / "index.sqlite3"
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            rows = db.execute(
                "SELECT camera, COUNT(*), MIN(seq), MAX(seq), MAX(capture_us) "
                "FROM frames GROUP BY camera"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return {}
    return {
        cam: {"frames": n, "min_seq": lo, "max_seq": hi, "newest_us": newest}
        for cam, n, lo, hi, newest in rows
    }


def archive_lag(archive: Path, cameras: list[str]) -> dict[str, float | None]:
    """Seconds between now and the newest archived capture of each camera."""
    progress, now = index_progress(archive), time.time()
    return {
        cam: (round(now - progress[cam]["newest_us"] / 1e6, 2) if cam in progress else None)
        for cam in cameras
    }


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


# --------------------------------------------------------------------------- sampling


class Sampler(threading.Thread):
    """Every ``interval`` s: RSS and CPU of every node, archive lag per camera; deletes the
    viewers' PNGs (their frames.jsonl stays) so a long run does not fill the disk."""

    def __init__(self, dep: Deployment, interval: float, t0: float) -> None:
        super().__init__(name="sampler", daemon=True)
        self.dep, self.interval, self.t0 = dep, interval, t0
        self.samples: list[dict] = []
        self._halt = threading.Event()
        self._prev: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - a sampling hiccup must not end the run
                print(f"sampler: {exc!r}", file=sys.stderr)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def sample(self) -> dict:
        now = time.monotonic()
        row: dict = {"t": round(now - self.t0, 1), "rss_mb": {}, "cpu_pct": {}}
        for node in list(self.dep.nodes.nodes):
            if node.poll():
                continue
            try:
                rss = rss_mb(node.pid)
            except OSError:
                continue
            if rss == 0:  # a zombie: exited, not yet reaped
                continue
            cpu = node.read_cpu()
            row["rss_mb"][node.name] = round(rss, 1)
            if node.role == "store":
                row["store_rss_split_mb"] = rss_split_mb(node.pid)
            prev = self._prev.get(node.name)
            if prev is not None and now > prev[0]:
                row["cpu_pct"][node.name] = round((cpu - prev[1]) / (now - prev[0]) * 100, 1)
            self._prev[node.name] = (now, cpu)
        row["lag_s"] = archive_lag(self.dep.archive, self.dep.camera_ids)
        row["archived"] = sum(p["frames"] for p in index_progress(self.dep.archive).values())
        row["loadavg1"] = os.getloadavg()[0]
        for node in self.dep.viewer_nodes.values():
            for png in node.out_dir.glob("*.png"):
                png.unlink(missing_ok=True)
        with self.lock:
            self.samples.append(row)
        return row


# --------------------------------------------------------------------------- the load run


def _log(opts: LoadOptions, text: str) -> None:
    if not opts.quiet:
        print(text, flush=True)


def _declared(notes: list[dict], camera: str) -> int:
    n = 0
    for note in notes:
        if note["kind"] == "declared_gap" and note["camera"] == camera:
            m = re.search(r"#(\d+)\.\.#(\d+)", note["detail"])
            if m:
                n += int(m.group(2)) - int(m.group(1)) + 1
    return n


def _viewer_summary(node: Node) -> dict:
    lines = []
    jsonl = node.out_dir / "frames.jsonl"
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by SIGKILL
    seqs = [d["seq"] for d in lines if d.get("verified")]
    out = {
        "name": node.name,
        "camera": node.camera,
        "frames": len(lines),
        "verified": len(seqs),
        "failed_verification": len(lines) - len(seqs),
        "unlocked": sum(1 for d in lines if d.get("unlocked")),
        "out_of_order": sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b <= a),
        "exit_code": node.exit_code,
    }
    if seqs:
        out["first_seq"], out["last_seq"] = seqs[0], seqs[-1]
        out["missed_live"] = seqs[-1] - seqs[0] + 1 - len(set(seqs))
        first_us = next(d["capture_time_us"] for d in lines if d.get("verified"))
        out["first_frame_after_start_s"] = round(first_us / 1e6 - node.started_wall, 2)
    return out


def _quartile_medians(series: list[tuple[float, float]]) -> tuple[float, float]:
    values = [v for _, v in series]
    q = max(1, len(values) // 4)
    return statistics.median(values[:q]), statistics.median(values[-q:])


def _stats(values: list[float]) -> dict:
    if not values:
        return {}
    return {
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def _recovery_s(samples: list[dict], after_t: float) -> float | None:
    """Seconds from ``after_t`` until every camera's archive lag is under LAG_OK_S again."""
    for s in samples:
        if s["t"] >= after_t:
            lags = [v for v in s["lag_s"].values() if v is not None]
            if lags and max(lags) < LAG_OK_S:
                return round(s["t"] - after_t, 1)
    return None


def check_disk(workdir: Path, opts: LoadOptions) -> None:
    need = opts.cameras * opts.fps * opts.seconds * BYTES_PER_FRAME_720P * 1.3
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise SystemExit(
            f"load: about {need / 1e9:.1f} GB needed for the archive, "
            f"{free / 1e9:.1f} GB free in {workdir}; use --workdir elsewhere"
        )


class _Clock:
    """Seconds since the harness began, and the log of what happened when."""

    def __init__(self, opts: LoadOptions) -> None:
        self.t0, self.opts = time.monotonic(), opts
        self.timeline: list[dict] = []

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def event(self, text: str) -> None:
        self.timeline.append({"t": self.now(), "event": text})
        _log(self.opts, f"  [{self.now():7.1f} s] {text}")


@dataclass
class _Window:
    """The measured window: wall time, machine busy time, the harness's own CPU."""

    start: float = 0.0  # monotonic
    t: float = 0.0  # seconds after the harness began
    seconds: float = 0.0
    busy: list = field(default_factory=list)
    self_cpu: list = field(default_factory=list)

    def open(self, clock: _Clock, nodes: list[Node]) -> None:
        self.start, self.t = time.monotonic(), clock.now()
        self.busy.append(machine_busy())
        self.self_cpu.append(sum(os.times()[:2]))
        for node in nodes:
            node.cpu_base = node.read_cpu()

    def close(self, nodes: list[Node]) -> None:
        self.seconds = time.monotonic() - self.start
        self.busy.append(machine_busy())
        self.self_cpu.append(sum(os.times()[:2]))
        for node in nodes:
            node.cpu_end = node.read_cpu()


def _start_nodes(dep: Deployment, viewers: int, clock: _Clock) -> list[Node]:
    ready = dep.start_store()
    clock.event(f"store started (pid {dep.store.pid}), ready in {ready:.1f} s")
    for i in range(1, viewers + 1):
        ready = dep.start_viewer(i)
        v = dep.viewer_nodes[i]
        clock.event(f"viewer {v.name} (camera {v.camera}) logged in, ready in {ready:.1f} s")
    cams = []
    for cam in dep.camera_ids:
        cams.append(dep.start_camera(cam))
        time.sleep(0.2)
    for node in cams:
        dep.nodes.wait_ready(node, timeout=60)
    return cams


def _apply_fault(dep: Deployment, fault: Fault, mark: dict, clock: _Clock) -> None:
    """Kill and restart the store or the last viewer, or pause the store (resumed later)."""
    if fault.action == "kill_store":
        old = dep.store
        old.signal(signal.SIGKILL)
        old.wait(15)
        clock.event(f"FAULT store SIGKILLed (pid {old.pid}, exit {old.exit_code})")
        time.sleep(1.0)
        ready = dep.start_store()
        clock.event(f"store restarted (pid {dep.store.pid}), ready in {ready:.1f} s")
    elif fault.action == "kill_viewer":
        index = max(dep.viewer_nodes)
        old = dep.viewer_nodes[index]
        old.signal(signal.SIGKILL)
        old.wait(15)
        clock.event(f"FAULT viewer {old.name} SIGKILLed (pid {old.pid})")
        for attempt in range(1, 4):  # as an operator (or systemd) would
            time.sleep(1.0)
            try:
                ready = dep.start_viewer(index)
            except RuntimeError as exc:
                last = str(exc).strip().splitlines()[-1]
                clock.event(f"viewer restart attempt {attempt} failed: {last}")
                mark.setdefault("restart_failures", []).append(last)
                continue
            clock.event(
                f"viewer restarted as {dep.viewer_nodes[index].name}, logged in and "
                f"ready in {ready:.1f} s"
            )
            mark["restarted"] = True
            break
    elif fault.action == "pause_store":
        dep.store.signal(signal.SIGSTOP)
        clock.event(
            f"FAULT network path cut: store SIGSTOPped for {fault.duration_s:g} s "
            "(connections stay up, nothing is read or answered)"
        )
        return  # its end is marked at SIGCONT
    else:
        raise ValueError(f"unknown fault {fault.action!r}")
    mark["end_t"] = clock.now()


def _run_window(dep: Deployment, opts: LoadOptions, clock: _Clock, sampler: Sampler) -> list[dict]:
    """The load window with its faults; returns one mark per fault."""
    pending = sorted(((f.at * opts.seconds, f) for f in opts.faults), key=lambda p: p[0])
    marks: list[dict] = []
    paused: tuple[float, dict] | None = None  # (resume at, its mark)
    start, next_progress = time.monotonic(), opts.progress_s
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= opts.seconds and paused is None:
            return marks
        if paused is not None and elapsed >= paused[0]:
            dep.store.signal(signal.SIGCONT)
            clock.event(
                f"store SIGCONT: its sockets answer again (paused "
                f"{elapsed - paused[1]['at_s']:.1f} s)"
            )
            paused[1]["end_t"] = clock.now()
            paused = None
        if pending and elapsed >= pending[0][0]:
            _, fault = pending.pop(0)
            mark = {"action": fault.action, "at_s": elapsed, "t": clock.now()}
            marks.append(mark)
            _apply_fault(dep, fault, mark, clock)
            if fault.action == "pause_store":
                paused = (elapsed + fault.duration_s, mark)
        if elapsed >= next_progress and sampler.samples:
            next_progress += opts.progress_s
            s = sampler.samples[-1]
            lags = [v for v in s["lag_s"].values() if v is not None]
            store_rss = sum(v for k, v in s["rss_mb"].items() if k.startswith("store"))
            _log(
                opts,
                f"  [{s['t']:7.1f} s] archived {s['archived']}, archive lag max "
                f"{max(lags) if lags else float('nan'):.1f} s, store RSS {store_rss:.0f} MB, "
                f"load {s['loadavg1']:.1f}",
            )
        time.sleep(0.1)


def _stop_cleanly(dep: Deployment, cams: list[Node], clock: _Clock, wait_s: float) -> None:
    """Wait until the archive has caught up with every camera, then stop cameras (they
    drain), viewers and the store, in that order."""
    deadline = time.monotonic() + wait_s
    while True:
        lags = archive_lag(dep.archive, dep.camera_ids)
        if (
            all(v is not None and v < LAG_OK_S for v in lags.values())
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.5)
    clock.event(
        f"archive lag {max((v or 0) for v in lags.values()):.1f} s; stopping cameras (SIGTERM)"
    )
    for node in cams:
        node.signal(signal.SIGTERM)
    for node in cams:
        node.wait(60)
    clock.event("cameras stopped: exit codes " + ", ".join(f"{n.name}={n.exit_code}" for n in cams))
    for node in dep.nodes.alive("viewer"):
        node.signal(signal.SIGTERM)
        node.wait(30)
    dep.store.signal(signal.SIGTERM)
    dep.store.wait(60)
    clock.event(f"viewers and store stopped (store exit {dep.store.exit_code})")


def verify_archive(dep: Deployment) -> tuple[dict, int]:
    """``veilcam verify --json`` on the deployment: (report, exit code)."""
    verify = veilcam("verify", str(dep.home), "--json", check=False)
    if not verify.stdout.strip():
        return {
            "intact": False,
            "cameras": [],
            "notes": [],
            "problems": [{"detail": verify.stderr}],
        }, verify.returncode
    return json.loads(verify.stdout), verify.returncode


def count_cameras(dep: Deployment, report: dict, window: _Window | None = None) -> list[dict]:
    """Per camera: published (its --stats-out), archived (verify), indexed, declared dropped,
    lost = published - archived - declared, whether the archive holds #0..#published-1."""
    index = index_progress(dep.archive)
    by_cam = {c["camera"]: c for c in report["cameras"]}
    out = []
    for cam in dep.camera_ids:
        stats_path = dep.root / f"{cam}.json"
        st = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        node = next(n for n in dep.nodes.nodes if n.name == cam)
        ar = by_cam.get(cam, {})
        published, archived = st.get("published", 0), ar.get("frames", 0)
        declared = _declared(report["notes"], cam)
        log = node.log()
        span = (
            (ar["last_time_us"] - ar["first_time_us"]) / 1e6
            if ar.get("last_time_us") and ar.get("first_time_us")
            else 0
        )
        row = {
            "camera": cam,
            "exit_code": node.exit_code,
            "captured": st.get("captured"),
            "published": published,
            "acked": st.get("acked"),
            "rejected": st.get("rejected"),
            "archived": archived,
            "indexed": index.get(cam, {}).get("frames", 0),
            "envelopes": ar.get("envelopes", 0),
            "declared_dropped": declared,
            "lost": published - archived - declared,
            "in_order": (archived == 0 and published == 0)
            or (
                ar.get("first_seq") == 0
                and ar.get("last_seq") == published - 1
                and not any(p.get("camera") == cam for p in report["problems"])
            ),
            "dropped_spool_full": st.get("dropped_backpressure"),
            "fail_closed": sum(st.get("fail_closed", {}).values()),
            "fail_closed_by_reason": st.get("fail_closed", {}),
            "detector": st.get("detector"),
            "detector_ms": round(st.get("detector_ms", 0), 1),
            "fps_achieved": round(archived / span, 2) if span else 0.0,
            "reconnects": log.count("store connection lost; reconnecting"),
            "resend_rounds": log.count("unacknowledged message(s) again"),
            "spooled_to_disk": log.count("spooling to"),
        }
        if window is not None:
            row["cpu_pct"] = round((node.cpu_end - node.cpu_base) / window.seconds * 100, 1)
        out.append(row)
    return out


def _memory(dep: Deployment, in_window: list[dict], opts: LoadOptions, warmup: float) -> dict:
    """RSS min/median/max per node kind, and growth: last-quarter / first-quarter median."""

    def series(name: str) -> list[tuple[float, float]]:
        out = []
        for s in in_window:
            vals = [v for k, v in s["rss_mb"].items() if k == name or k.startswith(name + "-r")]
            if vals:
                out.append((s["t"], sum(vals)))
        return out

    memory: dict = {"warmup_s": warmup, "cameras": {}, "viewers": {}}
    store_rss = series("store")
    memory["samples"] = len(store_rss)
    if len(store_rss) >= 4:
        first_q, last_q = _quartile_medians(store_rss)
        memory.update(
            store=_stats([v for _, v in store_rss]),
            store_first_quarter_median=round(first_q, 1),
            store_last_quarter_median=round(last_q, 1),
            store_growth=round(last_q / first_q, 3),
            bound=opts.rss_bound,
        )
    for cam in dep.camera_ids:
        rss = series(cam)
        if len(rss) >= 4:
            first_q, last_q = _quartile_medians(rss)
            memory["cameras"][cam] = {
                **_stats([v for _, v in rss]),
                "growth": round(last_q / first_q, 3),
            }
    viewers: dict[str, list[float]] = {}
    for s in in_window:
        for k, v in s["rss_mb"].items():
            if k.startswith("viewer"):
                viewers.setdefault(k, []).append(v)
    memory["viewers"] = {k: _stats(v) for k, v in viewers.items()}
    return memory


def _cpu(dep: Deployment, window: _Window, cameras: int) -> dict:
    """CPU % (100 = one core) over the window, per node kind and process; the machine's."""
    roles: dict[str, float] = {}
    by_process: dict[str, float] = {}
    for node in dep.nodes.nodes:
        used = max(0.0, getattr(node, "cpu_end", node.cpu_last) - node.cpu_base)
        roles[node.role] = roles.get(node.role, 0.0) + used / window.seconds * 100
        by_process[node.name] = round(used / window.seconds * 100, 1)
    (busy0, total0), (busy1, total1) = window.busy
    ncpu = os.cpu_count() or 1
    machine_pct = (busy1 - busy0) / max(1, total1 - total0) * 100 * ncpu
    harness = (window.self_cpu[1] - window.self_cpu[0]) / window.seconds * 100
    return {
        "camera_total": round(roles.get("camera", 0), 1),
        "camera_mean": round(roles.get("camera", 0) / max(1, cameras), 1),
        "store": round(roles.get("store", 0), 1),
        "viewers_total": round(roles.get("viewer", 0), 1),
        "harness": round(harness, 1),
        "machine": round(machine_pct, 1),
        "machine_capacity": ncpu * 100,
        "other_processes": round(max(0.0, machine_pct - sum(roles.values()) - harness), 1),
        "by_process": by_process,
    }


def run_load(opts: LoadOptions) -> dict:
    """Run the scenario; returns the result document (its "failures" empty if all passed)."""
    workdir = Path(tempfile.mkdtemp(prefix="veilcam-load-", dir=opts.workdir))
    check_disk(workdir, opts)
    clock = _Clock(opts)
    clip = opts.clip
    if clip is None:
        _log(opts, f"making a {opts.size[0]}x{opts.size[1]} clip in {workdir} ...")
        clip = make_clip(opts.size, opts.fps, 60, workdir / "clip.mp4")
    cap = cv2.VideoCapture(str(clip))
    frame_size = [int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))]
    cap.release()
    dep = Deployment(workdir, opts.cameras, opts.fps, clip, opts.detect_width, opts.camera_nice)
    dep.create()
    result: dict = {
        "options": {**asdict(opts), "workdir": str(workdir), "clip": str(clip)},
        "frame_size": frame_size,
        "machine_before": machine(),
        "workdir": str(workdir),
    }
    sampler = Sampler(dep, opts.sample_s, clock.t0)
    window = _Window()
    try:
        cams = _start_nodes(dep, opts.viewers, clock)
        clock.event(f"{len(cams)} cameras publishing (setup took {clock.now():.0f} s)")
        sampler.start()
        window.open(clock, dep.nodes.nodes)
        fault_marks = _run_window(dep, opts, clock, sampler)
        window.close(dep.nodes.nodes)
        clock.event(
            f"load window over ({window.seconds:.1f} s); waiting for the archive to catch up"
        )
        _stop_cleanly(dep, cams, clock, max(60.0, opts.seconds / 2))
    finally:
        if sampler.is_alive():
            sampler.stop()
        dep.nodes.stop_all()

    report, verify_exit = verify_archive(dep)
    cameras = count_cameras(dep, report, window)
    samples = sampler.samples
    warmup = opts.warmup_s if opts.warmup_s is not None else max(10.0, 0.1 * opts.seconds)
    in_window = [s for s in samples if window.t + warmup <= s["t"] <= window.t + window.seconds]
    lags = [v for s in in_window for v in s["lag_s"].values() if v is not None]
    for mark in fault_marks:
        mark["archive_caught_up_after_s"] = _recovery_s(samples, mark["end_t"])
    store_logs = [n.log() for n in dep.nodes.nodes if n.role == "store"]
    result.update(
        {
            "window_s": round(window.seconds, 1),
            "cameras": cameras,
            "totals": {
                k: sum(c[k] or 0 for c in cameras)
                for k in (
                    "captured",
                    "published",
                    "archived",
                    "indexed",
                    "declared_dropped",
                    "lost",
                    "fail_closed",
                    "dropped_spool_full",
                    "envelopes",
                )
            },
            "verify": {
                "intact": report["intact"],
                "exit_code": verify_exit,
                "problems": report["problems"][:20],
                "notes": len(report["notes"]),
                "chain_starts": sum(c.get("chain_starts", 0) for c in report["cameras"]),
            },
            "viewers": [_viewer_summary(n) for n in dep.nodes.nodes if n.role == "viewer"],
            "memory_mb": _memory(dep, in_window, opts, warmup),
            "cpu_pct": _cpu(dep, window, opts.cameras),
            "archive_lag_s": {
                "median": round(statistics.median(lags), 2) if lags else None,
                "max": round(max(lags), 2) if lags else None,
            },
            "store_rejects": re.findall(r"rejected: (.*)", "".join(store_logs))[-1:],
            "store_storage_errors": "".join(store_logs).count("cannot write to the archive"),
            "store_recovery": [
                ln.split(": ", 1)[-1]
                for log in store_logs
                for ln in log.splitlines()
                if "written before the last stop" in ln or "torn tail" in ln
            ],
            "store_exit_codes": [n.exit_code for n in dep.nodes.nodes if n.role == "store"],
            "tracebacks": [n.name for n in dep.nodes.nodes if "Traceback" in n.log()],
            "timeline": clock.timeline,
            "faults": fault_marks,
            "machine_after": machine(),
            "samples": samples,
            "archive_bytes": sum(p.stat().st_size for p in dep.archive.rglob("*") if p.is_file()),
        }
    )
    result["failures"] = failures(result)
    if not opts.keep_archive:
        shutil.rmtree(dep.archive / "segments", ignore_errors=True)
        (workdir / "clip.mp4").unlink(missing_ok=True)
    return result


def failures(r: dict) -> list[str]:
    out = []
    for c in r["cameras"]:
        if c["lost"]:
            out.append(f"{c['camera']}: {c['lost']} frame(s) lost")
        if not c["in_order"]:
            out.append(f"{c['camera']}: archive not every frame once in order")
        if c["exit_code"] != 0:
            out.append(f"{c['camera']}: exit code {c['exit_code']}")
    if not r["verify"]["intact"]:
        out.append(f"archive does not verify: {r['verify']['problems'][:3]}")
    mem = r["memory_mb"]
    if "store_growth" in mem and mem["store_growth"] > mem["bound"]:
        out.append(f"store memory grew {mem['store_growth']}x (bound {mem['bound']}x)")
    if r["tracebacks"]:
        out.append(f"tracebacks in the logs of {r['tracebacks']}")
    for f in r["faults"]:
        if f["action"] == "kill_viewer" and not f.get("restarted"):
            out.append(f"the viewer could not be restarted: {f.get('restart_failures')}")
    for v in r["viewers"]:
        if v["failed_verification"]:
            out.append(f"{v['name']}: {v['failed_verification']} frame(s) failed verification")
    return out


def print_report(r: dict) -> None:
    o = r["options"]
    size = "x".join(map(str, r["frame_size"]))
    print(
        f"\n== load: {o['cameras']} cameras, {size} at {o['fps']:g} fps, "
        f"{r['window_s']} s window, faults: "
        f"{', '.join(f['action'] for f in o['faults']) or 'none'}; detect width "
        f"{o['detect_width'] or 640}, camera nice {o['camera_nice']} =="
    )
    cols = [
        "camera",
        "published",
        "archived",
        "indexed",
        "declared_dropped",
        "lost",
        "in_order",
        "fps_achieved",
        "fail_closed",
        "reconnects",
        "cpu_pct",
        "exit_code",
    ]
    heads = [
        "camera",
        "published",
        "archived",
        "indexed",
        "declared",
        "lost",
        "in order",
        "fps",
        "fail-closed",
        "reconnects",
        "CPU %",
        "exit",
    ]
    rows = [[str(c[k]) for k in cols] for c in r["cameras"]]
    t = r["totals"]
    rows.append(
        [
            "total",
            str(t["published"]),
            str(t["archived"]),
            str(t["indexed"]),
            str(t["declared_dropped"]),
            str(t["lost"]),
            "",
            "",
            str(t["fail_closed"]),
            "",
            str(r["cpu_pct"]["camera_total"]),
            "",
        ]
    )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
    print("  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    m, c = r["memory_mb"], r["cpu_pct"]
    print(
        f"archive verifies: {r['verify']['intact']} (chain restarts {r['verify']['chain_starts']}, "
        f"{r['archive_bytes'] / 1e6:.0f} MB)"
    )
    if "store" in m:
        print(
            f"store RSS MB min/median/max {m['store']['min']}/{m['store']['median']}/"
            f"{m['store']['max']}; first/last quarter median {m['store_first_quarter_median']}"
            f"/{m['store_last_quarter_median']} = {m['store_growth']}x (bound {m['bound']}x)"
        )
    print(
        f"CPU % (100 = one core): cameras {c['camera_total']} (mean {c['camera_mean']}), "
        f"store {c['store']}, viewers {c['viewers_total']}, harness {c['harness']}; machine "
        f"{c['machine']} of {c['machine_capacity']}, other processes {c['other_processes']}"
    )
    print(f"archive lag s median/max {r['archive_lag_s']['median']}/{r['archive_lag_s']['max']}")
    for v in r["viewers"]:
        print(
            f"viewer {v['name']} ({v['camera']}): {v['verified']} verified, {v['unlocked']} "
            f"unlocked, {v['failed_verification']} failed, missed live "
            f"{v.get('missed_live', '-')}, out of order {v['out_of_order']}"
        )
    for f in r["faults"]:
        print(
            f"fault {f['action']} at {f['t']} s: archive caught up "
            f"{f['archive_caught_up_after_s']} s after it ended"
        )
    print(
        f"load average before/after: {r['machine_before']['loadavg']} / "
        f"{r['machine_after']['loadavg']}"
    )
    print("FAILED: " + "; ".join(r["failures"]) if r["failures"] else "OK: nothing lost")


# --------------------------------------------------------------------------- disk fill


def _mount_tmpfs(path: Path, mb: int) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    path.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def run_disk_fill(
    opts: LoadOptions,
    method: str = "auto",
    limit_mb: int | None = None,
    hold_s: float = 15.0,
    after_s: float = 20.0,
) -> dict:
    """Fill the store's disk, hold it full, give space back, and count what was lost."""
    workdir = Path(tempfile.mkdtemp(prefix="veilcam-diskfill-", dir=opts.workdir))
    clip = opts.clip or make_clip(opts.size, opts.fps, 60, workdir / "clip.mp4")
    dep = Deployment(workdir, opts.cameras, opts.fps, clip, opts.detect_width, opts.camera_nice)
    fs = workdir / "archive-fs"
    if method == "auto":
        method = "tmpfs" if os.geteuid() == 0 else "rlimit"
    mounted = False
    if method == "tmpfs":
        limit_mb = limit_mb or 64
        mounted = _mount_tmpfs(fs, limit_mb)
        if not mounted:
            raise SystemExit("cannot mount a tmpfs (needs root); use --disk-method rlimit")
        dep.create(archive_path=fs / "archive")
    else:
        limit_mb = limit_mb or 8
        limit = limit_mb * 2**20

        def preexec() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

        dep.store_preexec = preexec
        dep.create()
    clock = _Clock(opts)
    counts: list[dict] = []

    def count() -> int:
        n = sum(p["frames"] for p in index_progress(dep.archive).values())
        counts.append({"t": clock.now(), "archived": n})
        return n

    what = (
        f"archive on a {limit_mb} MB tmpfs"
        if method == "tmpfs"
        else f"store under RLIMIT_FSIZE {limit_mb} MB (every file it writes)"
    )
    result: dict = {
        "method": method,
        "limit_mb": limit_mb,
        "workdir": str(workdir),
        "what": what,
        "machine": machine(),
    }
    try:
        clock.event(f"disk fill: {what}, {opts.cameras} cameras at {opts.fps:g} fps")
        cams = _start_nodes(dep, 0, clock)
        clock.event("cameras publishing")
        deadline = time.monotonic() + max(60.0, opts.seconds)
        while "cannot write to the archive" not in dep.store.log() and not dep.store.poll():
            if time.monotonic() > deadline:
                raise SystemExit("the archive did not fill up in time; lower --disk-limit-mb")
            count()
            time.sleep(0.5)
        full_at = count()
        line = next(
            (
                ln
                for ln in dep.store.log().splitlines()
                if "cannot write" in ln or "commit failed" in ln
            ),
            "",
        )
        clock.event(f"store log: {line.split(': ', 1)[-1][:200]}")
        result["store_error_line"] = line
        hold_end = time.monotonic() + hold_s
        while time.monotonic() < hold_end:
            count()
            time.sleep(1.0)
        held = count()
        store_alive = not dep.store.poll()
        result.update(
            archived_when_full=full_at,
            archived_after_hold=held,
            store_running_while_full=store_alive,
            camera_pending_while_full={
                n.name: re.findall(r"(\d+) pending", n.log())[-1:] for n in cams
            },
        )
        clock.event(
            f"held full for {hold_s:g} s: archive {full_at} -> {held} frames, store "
            f"{'still running' if store_alive else f'exited ({dep.store.exit_code})'}"
        )
        if method == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=4g", str(fs)], check=True)
        else:
            if store_alive:
                resource.prlimit(
                    dep.store.pid,
                    resource.RLIMIT_FSIZE,
                    (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
                )
            dep.store_preexec = None
        clock.event(
            "space given back ("
            + ("tmpfs remounted at 4 GB" if method == "tmpfs" else "RLIMIT_FSIZE lifted")
            + ")"
        )
        if not store_alive:
            ready = dep.start_store()
            clock.event(f"store restarted, ready in {ready:.1f} s")
        end = time.monotonic() + after_s
        while time.monotonic() < end:
            count()
            time.sleep(1.0)
        _stop_cleanly(dep, cams, clock, 90)
        report, _ = verify_archive(dep)
    finally:
        dep.nodes.stop_all()
        if mounted:
            if opts.keep_archive:
                shutil.copytree(fs / "archive", workdir / "archive-copy", dirs_exist_ok=True)
            subprocess.run(["umount", str(fs)], check=False)
    cameras = count_cameras(dep, report)
    store_log = "".join(n.log() for n in dep.nodes.nodes if n.role == "store")
    result.update(
        {
            "cameras": cameras,
            "timeline": clock.timeline,
            "archived_over_time": counts,
            "verify": {"intact": report["intact"], "problems": report["problems"][:20]},
            "storage_error_lines": store_log.count("cannot write to the archive")
            + store_log.count("commit failed"),
            "tracebacks": [n.name for n in dep.nodes.nodes if "Traceback" in n.log()],
            "store_exit_codes": [n.exit_code for n in dep.nodes.nodes if n.role == "store"],
        }
    )
    fails = [f"{c['camera']}: {c['lost']} lost" for c in cameras if c["lost"]]
    fails += [f"{c['camera']}: exit {c['exit_code']}" for c in cameras if c["exit_code"]]
    if not report["intact"]:
        fails.append(f"archive does not verify: {report['problems'][:3]}")
    if not result["storage_error_lines"]:
        fails.append("the store logged no storage error")
    if result["tracebacks"]:
        fails.append(f"tracebacks in {result['tracebacks']}")
    result["failures"] = fails
    return result


def print_disk_fill(r: dict) -> None:
    print(f"\n== disk fill: {r['what']} ==")
    for e in r["timeline"]:
        print(f"  [{e['t']:7.1f} s] {e['event']}")
    print(f"storage error lines in the store log: {r['storage_error_lines']}")
    for c in r["cameras"]:
        print(
            f"  {c['camera']}: published {c['published']}, acked {c['acked']}, archived "
            f"{c['archived']}, declared {c['declared_dropped']}, lost {c['lost']}, "
            f"rejected {c['rejected']}, exit {c['exit_code']}"
        )
    print(f"archive verifies: {r['verify']['intact']}")
    print("FAILED: " + "; ".join(r["failures"]) if r["failures"] else "OK: nothing lost")


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--seconds", type=float, help="length of the load window (default 120; 3600 with --soak)"
    )
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--fps", type=float, default=10.0, help="frame rate of every camera")
    ap.add_argument("--size", default="1280x720", help="frame size of the clip (WxH)")
    ap.add_argument("--clip", help="use this video file as it is (no scaling)")
    ap.add_argument("--viewers", type=int, default=2)
    ap.add_argument(
        "--faults",
        action="store_true",
        help="kill and restart the store (30 %%) "
        "and a viewer (50 %%), cut the store's network path for 10 s (60 %%)",
    )
    ap.add_argument(
        "--soak",
        action="store_true",
        help="long manual run: --seconds defaults "
        "to 3600, samples every 10 s, progress every minute",
    )
    ap.add_argument(
        "--detect-width", type=int, help="lighter face detection (faces.detect_width, default 640)"
    )
    ap.add_argument(
        "--camera-nice",
        type=int,
        default=0,
        help="run the cameras at this "
        "nice value (e.g. 10), so that on one machine they do not starve the "
        "store and viewers as separate camera devices would not",
    )
    ap.add_argument("--sample-s", type=float, help="sampling period (default 2; 10 with --soak)")
    ap.add_argument("--rss-bound", type=float, default=1.5)
    ap.add_argument("--workdir", help="where the temporary deployment goes (default: $TMPDIR)")
    ap.add_argument(
        "--disk-fill",
        action="store_true",
        help="run the disk-full scenario instead of the load run",
    )
    ap.add_argument("--disk-method", choices=["auto", "tmpfs", "rlimit"], default="auto")
    ap.add_argument(
        "--disk-limit-mb", type=int, help="tmpfs size (default 64) or per-file limit (default 8)"
    )
    ap.add_argument(
        "--keep-archive",
        action="store_true",
        help="keep the archive's segments "
        "(by default they are deleted once counted and verified; logs stay)",
    )
    ap.add_argument("--out", help="write the results (JSON) here (default bench/results/)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    seconds = args.seconds or (3600.0 if args.soak else 120.0)
    opts = LoadOptions(
        seconds=seconds,
        cameras=args.cameras,
        fps=args.fps,
        size=(w, h),
        clip=Path(args.clip).resolve() if args.clip else None,
        viewers=args.viewers,
        faults=list(DEFAULT_FAULTS) if args.faults else [],
        detect_width=args.detect_width,
        camera_nice=args.camera_nice,
        sample_s=args.sample_s or (10.0 if args.soak else 2.0),
        rss_bound=args.rss_bound,
        workdir=Path(args.workdir) if args.workdir else None,
        progress_s=60.0 if args.soak else 10.0,
        keep_archive=args.keep_archive,
    )
    if args.disk_fill:
        result = run_disk_fill(opts, args.disk_method, args.disk_limit_mb)
        print_disk_fill(result)
        name = f"load-diskfill-{result['method']}.json"
    else:
        result = run_load(opts)
        print_report(result)
        name = (
            "load-soak.json" if args.soak else ("load-faults.json" if args.faults else "load.json")
        )
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    result["command"] = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"results: {out}; deployment and logs: {result['workdir']}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
