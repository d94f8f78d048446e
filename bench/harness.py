"""Helpers shared by the benchmarks that run real nodes: clips, ports, the CLI, node processes
and their CPU and memory as /proc reports them.

The process part (``NodeSet``, ``Node``, ``veilcam``, ``free_port_base``) is also the tests'
harness (tests/conftest.py): start a veilcam command, wait for its ``--ready-file``, stop it
with SIGINT then SIGKILL, read its output."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLE_CLIP = ROOT / "sample_videos" / "people.mp4"
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "360p": (640, 360)}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (readable until it is reaped, zombies included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0  # a zombie has no VmRSS line


def rss_split_mb(pid: int) -> dict[str, float]:
    """RssAnon, RssFile and RssShmem of a process (what kind of memory grows)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
            key, value = line.split(":", 1)
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def machine() -> dict:
    """nproc, CPU model, RAM and load, as the reports quote them."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gb": round(mem_kb / 2**20, 1),
        "loadavg": list(os.getloadavg()),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "opencv": cv2.__version__,
    }


# --------------------------------------------------------------------------- media, ports, CLI


def make_clip(
    size: tuple[int, int],
    fps: float,
    seconds: float,
    out: Path,
    sources: list[Path] | None = None,
) -> Path:
    """``sources`` one after the other (default: the sample clip, and real media when
    present) scaled to ``size``, ``seconds`` long (looped when shorter)."""
    if sources is None:
        sources = [SAMPLE_CLIP]
        extra = SHARED / "media" / "intel" / "one-by-one-person-detection.mp4"
        if extra.exists():
            sources.append(extra)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    needed, written = int(seconds * fps), 0
    while written < needed:
        for src in sources:
            cap = cv2.VideoCapture(str(src))
            for _ in range(min(300, needed - written)):
                ok, image = cap.read()
                if not ok:
                    break
                writer.write(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
                written += 1
            cap.release()
            if written >= needed:
                break
    writer.release()
    return out


def free_port_base(count: int = 4) -> int:
    """A base port with ``count`` consecutive free ports on 127.0.0.1, below the ephemeral
    range (so outgoing connections of other processes do not take them meanwhile)."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(20000, 32000 - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


def veilcam_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "veilcam", *args]


def veilcam(
    *args: str, stdin: str | None = None, check: bool = True, timeout: float | None = 600
) -> subprocess.CompletedProcess:
    """Run one veilcam command to its end (at most ``timeout`` seconds) and collect its
    output."""
    return subprocess.run(
        veilcam_cmd(*args),
        input=stdin,
        text=True,
        capture_output=True,
        cwd=ROOT,
        check=check,
        timeout=timeout,
    )


def use_yunet(camera_toml: str) -> str:
    """Point a camera config at YuNet from ../shared when it is there (else: auto/Haar)."""
    if YUNET.exists():
        return camera_toml.replace('backend = "auto"', f'backend = "yunet"\nmodel = "{YUNET}"')
    return camera_toml


# --------------------------------------------------------------------------- node processes


class Node:
    """One node process: its log, its ready file, and its CPU time as last seen (kept after
    it exits)."""

    def __init__(
        self, name: str, role: str, proc: subprocess.Popen, log: Path, ready: Path | None = None
    ) -> None:
        self.name, self.role, self.proc, self.log_path = name, role, proc, log
        self.ready_path = ready
        self.ready_info: dict | None = None  # the ready file's JSON, once read
        self.started = time.monotonic()
        self.ended: float | None = None
        self.cpu_last = 0.0
        self.cpu_base = 0.0  # CPU time at the start of the measured window
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.ended is None

    def read_cpu(self) -> float:
        if self.alive:
            try:
                self.cpu_last = cpu_seconds(self.pid)
            except (OSError, IndexError, ValueError):
                pass
        return self.cpu_last

    def log(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def poll(self) -> bool:
        """True once the process has exited; reads the CPU time of the zombie before reaping
        it, so the last CPU figure is exact."""
        if not self.alive:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = True  # already reaped
        if info is None:
            return False
        self.read_cpu()
        self.exit_code = self.proc.wait()
        self.ended = time.monotonic()
        return True

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while not self.poll():
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.proc.args, timeout)
            time.sleep(0.05)
        assert self.exit_code is not None
        return self.exit_code

    def signal(self, sig: int) -> None:
        if self.alive:
            self.read_cpu()
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        """SIGINT (what Ctrl-C sends; the nodes stop cleanly on it), then SIGKILL if it has
        not exited within ``timeout`` seconds. Returns the exit code."""
        if self.alive:
            self.signal(signal.SIGCONT)  # a paused node cannot act on SIGINT
            self.signal(signal.SIGINT)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.wait(5)


class NodeSet:
    """Starts veilcam processes with their logs (and ready files) in one folder, waits for
    them to be ready, and stops them at the end: the one process harness of bench/ and
    tests/."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.nodes: list[Node] = []

    def start(
        self,
        name: str,
        role: str,
        cmd: list[str],
        stdin: str | None = None,
        preexec_fn: Callable[[], None] | None = None,
        ready: Path | None = None,
    ) -> Node:
        """Start ``cmd`` with stdout and stderr in LOG_DIR/NAME.log; does not wait."""
        log = self.log_dir / f"{name}.log"
        fh = open(log, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            text=True,
            preexec_fn=preexec_fn,
        )
        fh.close()
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        node = Node(name, role, proc, log, ready)
        self.nodes.append(node)
        return node

    def start_veilcam(
        self,
        name: str,
        role: str,
        *args: str,
        stdin: str | None = None,
        preexec_fn: Callable[[], None] | None = None,
        timeout: float | None = 30,
    ) -> Node:
        """``veilcam ARGS --ready-file LOG_DIR/NAME.ready.json`` (store, camera, view); waits
        up to ``timeout`` seconds for the ready file (None: does not wait, see wait_ready)."""
        ready = self.log_dir / f"{name}.ready.json"
        ready.unlink(missing_ok=True)
        cmd = veilcam_cmd(*args, "--ready-file", str(ready))
        node = self.start(name, role, cmd, stdin=stdin, preexec_fn=preexec_fn, ready=ready)
        if timeout is not None:
            self.wait_ready(node, timeout)
        return node

    def wait_ready(self, node: Node, timeout: float = 30) -> dict:
        """The node's ready file (its pid and endpoints) once written; raises if the process
        exits first or time runs out."""
        if node.ready_info is not None:
            return node.ready_info
        if node.ready_path is None:
            raise ValueError(f"{node.name} was not started with a ready file")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                info = json.loads(node.ready_path.read_text())
            except FileNotFoundError:
                info = None
            if info is not None and info.get("pid") == node.pid:
                node.ready_info = info
                return info
            if node.poll():
                raise RuntimeError(
                    f"{node.name} exited ({node.exit_code}) before it was ready:\n"
                    f"{node.log()[-3000:]}"
                )
            time.sleep(0.05)
        raise RuntimeError(
            f"{node.name} was not ready within {timeout:.0f} s:\n{node.log()[-3000:]}"
        )

    def alive(self, role: str | None = None) -> list[Node]:
        return [n for n in self.nodes if n.alive and (role is None or n.role == role)]

    def wait_for_log(self, node: Node, text: str, timeout: float = 30) -> float:
        """Seconds until ``node`` logged ``text`` (an event to observe, not readiness: use
        the ready file for that); raises if it exits or time runs out."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if text in node.log():
                return time.monotonic() - t0
            if node.poll():
                raise RuntimeError(
                    f"{node.name} exited ({node.exit_code}) before logging "
                    f"{text!r}:\n{node.log()[-3000:]}"
                )
            time.sleep(0.05)
        raise RuntimeError(
            f"{node.name} did not log {text!r} within {timeout:.0f} s:\n{node.log()[-3000:]}"
        )

    def stop_all(self, timeout: float = 15) -> None:
        """SIGINT to every live node, then SIGKILL to those still running after
        ``timeout`` seconds."""
        for node in self.nodes:
            if node.alive:
                node.signal(signal.SIGCONT)  # a paused node cannot act on SIGINT
                node.signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            try:
                node.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.signal(signal.SIGKILL)
                node.wait(5)


def plain_h264_bytes_per_frame(
    clip: Path,
    fps: float,
    frames: int,
    preset: str = "veryfast",
    crf: int = 23,
    max_kbps: int = 6000,
    keyframe_s: float = 2.0,
) -> float:
    """The real alternative for bytes: the same frames of ``clip`` encoded as plain H.264
    (libx264 through PyAV, the settings the camera's public stream uses: no B-frames,
    zerolatency, CRF with a VBV cap, a keyframe every ``keyframe_s``), no privacy at all.
    Mean bytes per frame over ``frames`` frames (the clip is looped as the camera loops it)."""
    from fractions import Fraction

    import av

    cap = cv2.VideoCapture(str(clip))
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = Fraction(1, round(fps))
    codec.framerate = Fraction(round(fps), 1)
    codec.options = {
        "preset": preset,
        "tune": "zerolatency",
        "crf": str(crf),
        "bf": "0",
        "g": str(max(1, round(keyframe_s * fps))),
        "maxrate": f"{max_kbps}k",
        "bufsize": f"{2 * max_kbps}k",
    }
    total = count = 0
    while count < frames:
        ok, image = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = cap.read()
            if not ok:
                break
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts = count
        total += sum(p.size for p in codec.encode(frame))
        count += 1
    total += sum(p.size for p in codec.encode(None))
    cap.release()
    return total / max(1, count)


def archived_headers(home: Path) -> list:
    """The headers of every frame in a home's archive (``FrameHeader``, versions 1 and 2),
    read once for the figures below."""
    from veilcam.common.format import KIND_FRAME, FrameMessage
    from veilcam.common.segments import Record, scan_segment

    return [
        FrameMessage.from_body_parts(rec.parts).header
        for path in sorted((Path(home) / "archive" / "segments").rglob("*.vseg"))
        for rec in scan_segment(path)
        if isinstance(rec, Record) and rec.kind == KIND_FRAME
    ]


def zone_area_share(headers: list) -> float:
    """Mean share of the frame area inside zone rectangles (their union), over the archived
    frames' ``headers``: what the zone streams or zone crops carry, so what the archive's
    size over plain H.264 depends on."""
    shares = []
    for header in headers:
        mask = np.zeros((header.height // 4 + 1, header.width // 4 + 1), bool)
        for z in header.zones or header.zone_rects:  # version 1 / version 2
            mask[z.y // 4 : -(-(z.y + z.h) // 4), z.x // 4 : -(-(z.x + z.w) // 4)] = True
        shares.append(mask[: header.height // 4, : header.width // 4].mean())
    return float(np.mean(shares)) if shares else 0.0


def public_stream_bytes_per_frame(headers: list) -> float:
    """Mean size of the public image (JPEG) or access unit (H.264) of the archived frames:
    what a live viewer of the redacted stream receives, without zones or envelopes."""
    return float(np.mean([h.image_len for h in headers])) if headers else 0.0


def archived_capture_fps(headers: list, skip_s: float = 2.0) -> float:
    """Frames per second by the capture times the archived frames carry, after the first
    ``skip_s`` seconds (model load, first epoch): the rate the camera sustained, whatever the
    benchmark's own clock says."""
    times = sorted(h.capture_time_us for h in headers)
    times = [t for t in times if t >= times[0] + skip_s * 1e6] if times else []
    span = (times[-1] - times[0]) / 1e6 if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else 0.0


def archive_bytes(home: Path) -> int:
    """Bytes of every segment file of a home's archive: public frames, zones, key envelopes,
    gap notices and signatures, as stored (the index is not counted)."""
    segments = Path(home) / "archive" / "segments"
    return sum(p.stat().st_size for p in segments.rglob("*") if p.is_file())
