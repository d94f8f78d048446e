"""Helpers shared by the benchmarks that run real nodes: clips, ports, the CLI, node processes
and their CPU and memory as /proc reports them."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2

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


def make_clip(size: tuple[int, int], fps: float, seconds: float, out: Path) -> Path:
    """The sample clip (and real media when present) scaled to ``size``, ``seconds`` long."""
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
    *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    return subprocess.run(
        veilcam_cmd(*args), input=stdin, text=True, capture_output=True, cwd=ROOT, check=check
    )


def use_yunet(camera_toml: str) -> str:
    """Point a camera config at YuNet from ../shared when it is there (else: auto/Haar)."""
    if YUNET.exists():
        return camera_toml.replace('backend = "auto"', f'backend = "yunet"\nmodel = "{YUNET}"')
    return camera_toml


# --------------------------------------------------------------------------- node processes


class Node:
    """One node process: its log, and its CPU time as last seen (kept after it exits)."""

    def __init__(self, name: str, role: str, proc: subprocess.Popen, log: Path) -> None:
        self.name, self.role, self.proc, self.log_path = name, role, proc, log
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
        return self.exit_code

    def signal(self, sig: int) -> None:
        if self.alive:
            self.read_cpu()
            self.proc.send_signal(sig)


class NodeSet:
    """Starts node processes with their logs in one folder and stops them at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.nodes: list[Node] = []

    def start(
        self, name: str, role: str, cmd: list[str], stdin: str | None = None, preexec_fn=None
    ) -> Node:
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
            proc.stdin.write(stdin)
            proc.stdin.close()
        node = Node(name, role, proc, log)
        self.nodes.append(node)
        return node

    def alive(self, role: str | None = None) -> list[Node]:
        return [n for n in self.nodes if n.alive and (role is None or n.role == role)]

    def wait_for_log(self, node: Node, text: str, timeout: float = 30) -> float:
        """Seconds until ``node`` logged ``text``; raises if it exits or time runs out."""
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
        import signal

        for node in self.nodes:
            if node.alive:
                node.signal(signal.SIGCONT)  # a paused node cannot act on SIGTERM
                node.signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.wait(timeout)
            except subprocess.TimeoutExpired:
                node.signal(signal.SIGKILL)
                node.wait(5)
