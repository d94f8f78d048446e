"""End-to-end face-leak benchmark: how many faces can anybody read in the public stream?

    python bench/leaks.py [--clips NAME,...] [--seconds S] [--keep] [--out FILE]

For each clip (``bench/stressclips.py``: real media from ``../shared/media`` and the sample
clip, plus synthetic stress clips) it runs the real pipeline through the CLI, live:
``veilcam init`` a fresh deployment in a temporary folder, ``veilcam user add alice``, then
``veilcam store``, a live public headless viewer (``veilcam view --headless``) and ``veilcam
camera --stats-out`` on the clip at its own frame rate (pacing on, no loop; ``--max-frames``
when ``--seconds`` truncates). When the camera has exited, the whole archive is read back by
two headless viewers: the public one (what anybody sees) and one unlocked as alice (the
zones decrypted and pasted back: the *original*). Frames are paired by seq.

Metric (``bench/leakmetric.py``): the reference faces of a frame are YuNet's at the frame's
full native resolution (score >= 0.75) on the original; a reference face is *readable* when
its box in the public frame has PSNR >= 30 dB against the original *and* a Laplacian
correlation >= 0.5.

Per clip it reports frames published / frames of the clip, reference faces, readable faces
(count, %), frames with >= 1 readable face, the longest run of frames one face stays readable,
the mean share of the frame covered by zones (union of the zones; a whole-frame fail-closed
zone counts 1.0), the frames covered whole, the camera's fail-closed and dropped counters,
camera-to-viewer latency p50/p99 of the live viewer, and the camera's achieved fps (from the
capture times of the archived frames). Latency: the live viewer's frames.jsonl has each frame's
capture time; its arrival is the wall time at which its line appears in frames.jsonl (watched
with inotify). The live viewer verifies, decodes and composes every frame but writes no PNG
(``--no-images``): a PNG per 1080p frame costs more CPU than the camera and would slow the
pipeline it measures; the read-backs from the archive afterwards write them.

The "real alternative" is the reference itself: YuNet at native resolution on every frame
(0 readable by construction). Its fps is measured on this machine after the nodes have
stopped, on the clip's first 20 frames, in this process with OpenCV's default threads; each
frame is timed 3 times and its fastest run kept (the machine may be shared), then the median
frame counts. The table prints the camera's achieved fps over it.

``--detect-width W``: the camera detects on a copy of each clip downscaled to W pixels wide
(H.264, like an IP camera's sub-stream) given as ``camera.detect_source`` (read frame for frame
with the clip); the table adds the camera's CPU time per frame, to compare with a run without.

Results: a plain-text table, and JSON in ``bench/results/leaks.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import math
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.harness import (  # noqa: E402
    ROOT,
    YUNET,
    NodeSet,
    free_port_base,
    machine,
    veilcam,
    veilcam_cmd,
)
from bench.leakmetric import (  # noqa: E402
    ClipLeaks,
    is_readable,
    longest_readable_run,
    make_detector,
    reference_faces,
    time_reference,
    zone_share,
)
from bench.stressclips import CLIPS, DEFAULT_CACHE, ClipInfo, encode, ensure_clip  # noqa: E402

PASSWORD = "leak benchmark pass phrase 42"
DEFAULT_OUT = ROOT / "bench" / "results" / "leaks.json"
EXAMPLES_KEPT = 5
REF_TIMING_FRAMES = 20  # frames of each clip the reference's fps is measured on


# --------------------------------------------------------------------------- live arrivals


class ArrivalWatcher(threading.Thread):
    """Stamps, with the wall clock, each line appended to ``DIR/frames.jsonl`` and each
    ``DIR/<seq>.png`` created, as they happen (inotify; polling the jsonl when inotify is not
    available)."""

    IN_MODIFY, IN_CREATE = 0x002, 0x100
    EVENT = struct.Struct("iIII")

    def __init__(self, out_dir: Path) -> None:
        super().__init__(name="arrivals", daemon=True)
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.dir / "frames.jsonl"
        self.lines: list[tuple[float, dict]] = []  # (arrival wall time, record)
        self.created: dict[int, float] = {}  # seq -> wall time its PNG appeared
        self.method = "inotify"
        self._halt = threading.Event()
        self._offset = 0
        self._partial = b""
        self._fd = -1
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if (
                fd < 0
                or libc.inotify_add_watch(
                    fd, str(self.dir).encode(), self.IN_MODIFY | self.IN_CREATE
                )
                < 0
            ):
                raise OSError(ctypes.get_errno(), "inotify")
            self._fd = fd
        except (OSError, AttributeError):
            self.method = "polling frames.jsonl every 2 ms"

    def _read_lines(self, stamp: float) -> None:
        try:
            with open(self.jsonl, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        for line in complete:
            if line.strip():
                try:
                    self.lines.append((stamp, json.loads(line)))
                except json.JSONDecodeError:
                    pass

    def run(self) -> None:
        if self._fd < 0:
            while not self._halt.is_set():
                self._read_lines(time.time())
                time.sleep(0.002)
            return
        while not self._halt.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.2)
            if not ready:
                continue
            stamp = time.time()
            try:
                buf = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            modified, pos = False, 0
            while pos + self.EVENT.size <= len(buf):
                _, mask, _, length = self.EVENT.unpack_from(buf, pos)
                name = buf[pos + self.EVENT.size : pos + self.EVENT.size + length]
                name = name.rstrip(b"\0").decode(errors="replace")
                pos += self.EVENT.size + length
                if name == "frames.jsonl":
                    modified = True
                elif mask & self.IN_CREATE:
                    m = re.fullmatch(r"(\d+)\.png", name)
                    if m:
                        self.created.setdefault(int(m.group(1)), stamp)
            if modified:
                self._read_lines(stamp)

    def stop(self) -> None:
        """Stop watching (idempotent; fine before start)."""
        if self._halt.is_set():
            return
        self._halt.set()
        if self.ident is not None:
            self.join(timeout=5)
        self._read_lines(time.time())  # lines whose event we did not see: stamped late
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def latencies(self) -> dict:
        line_ms = [
            (t - r["capture_time_us"] / 1e6) * 1000 for t, r in self.lines if r.get("verified")
        ]
        created_ms = [
            (self.created[r["seq"]] - r["capture_time_us"] / 1e6) * 1000
            for _, r in self.lines
            if r.get("verified") and r["seq"] in self.created
        ]

        def stats(v: list[float]) -> dict:
            if not v:
                return {"n": 0}
            a = np.asarray(v)
            return {
                "n": len(v),
                "p50": round(float(np.percentile(a, 50)), 1),
                "p99": round(float(np.percentile(a, 99)), 1),
                "max": round(float(a.max()), 1),
            }

        # newer viewers stamp each live line with age_s (their own clock, when they write it)
        age_ms = [
            r["age_s"] * 1000
            for _, r in self.lines
            if r.get("verified") and isinstance(r.get("age_s"), int | float)
        ]
        out = {"method": self.method, "line": stats(line_ms), "png_created": stats(created_ms)}
        if age_ms:
            out["viewer_age_s"] = stats(age_ms)
        return out


# --------------------------------------------------------------------------- deployment


def configure_model(camera_toml: Path) -> str:
    """Make sure the camera uses YuNet: leave the config alone when it names a model or the
    camera finds one by itself (model cache, or a model shipped with the package); otherwise
    set ``faces.model`` to the shared model. Returns what was decided, for the report."""
    text = camera_toml.read_text()
    faces = tomllib.loads(text).get("faces", {})
    if faces.get("model"):
        return f"configured: {faces['model']}"
    try:
        from veilcam.camera_node.models import find_yunet_model

        found = find_yunet_model("")
    except Exception:  # noqa: BLE001 (camera_node being edited: fall back to the explicit path)
        found = None
    if found:
        return f"found by the camera: {found}"
    if not YUNET.exists():
        return "none (camera falls back to Haar)"
    line = f'model = "{YUNET}"'
    if re.search(r"^\[faces\]\s*$", text, flags=re.M):
        text = re.sub(r"^\[faces\]\s*$", "[faces]\n" + line, text, count=1, flags=re.M)
    else:
        text += f"\n[faces]\n{line}\n"
    camera_toml.write_text(text)
    tomllib.loads(text)  # still valid TOML
    return f"set faces.model = {YUNET}"


def disable_faces(camera_toml: Path) -> None:
    """Positive control: ``faces.enabled = false`` (every face should then be readable)."""
    text = camera_toml.read_text()
    m = re.search(r"^\[faces\]\s*$", text, flags=re.M)
    if m is None:
        text += "\n[faces]\nenabled = false\n"
    else:
        end = re.search(r"^\[", text[m.end() :], flags=re.M)
        stop = m.end() + (end.start() if end else len(text) - m.end())
        section = text[m.end() : stop]
        if re.search(r"^enabled\s*=", section, flags=re.M):
            section = re.sub(r"^enabled\s*=.*$", "enabled = false", section, count=1, flags=re.M)
        else:
            section = "\nenabled = false" + section
        text = text[: m.end()] + section + text[stop:]
    camera_toml.write_text(text)
    if tomllib.loads(text).get("faces", {}).get("enabled") is not False:
        raise RuntimeError(f"could not turn face detection off in {camera_toml}")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def _fail(node, what: str) -> RuntimeError:
    return RuntimeError(
        f"{node.name} {what} (exit {node.exit_code}); last log lines:\n"
        + "\n".join(node.log().splitlines()[-25:])
    )


STALL_S = 45.0  # no new live frame for this long while the camera runs: it is stuck


def _wait_camera(camera, store, live, watcher: ArrivalWatcher, timeout: float) -> int:
    """The camera's exit code; raises when it outlives ``timeout``, when the store or the
    live viewer dies under it, or when no frame reaches the live viewer for STALL_S."""
    t0 = time.monotonic()
    seen, last_new = 0, t0
    while not camera.poll():
        now = time.monotonic()
        if len(watcher.lines) != seen:
            seen, last_new = len(watcher.lines), now
        if now - t0 > timeout:
            raise _fail(camera, f"still running after {timeout:.0f} s")
        if store.poll():
            raise _fail(store, "exited while the camera was running")
        if live.poll() and live.exit_code != 0:
            raise _fail(live, "exited while the camera was running")
        if live.alive and now - last_new > STALL_S:
            raise _fail(
                camera,
                f"stalled: no frame reached the live viewer for {STALL_S:.0f} s ({seen} so far)",
            )
        time.sleep(0.2)
    return camera.exit_code


def detect_copy(info: ClipInfo, width: int, cache: Path) -> Path:
    """The clip downscaled to ``width`` (even height), as a camera's sub-stream: made once."""
    height = round(info.height * width / info.width / 2) * 2
    out = Path(cache) / f"{info.name}.detect{width}.mp4"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)

        def frames():
            cap = cv2.VideoCapture(str(info.path))
            try:
                for _ in range(info.frames):
                    ok, image = cap.read()
                    if not ok:
                        return
                    yield cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            finally:
                cap.release()

        encode(frames(), out, width, height, fps=max(1, round(info.fps)))
    return out


def set_detect_source(camera_toml: Path, path: Path) -> None:
    text = camera_toml.read_text()
    line = f"detect_source = {json.dumps(str(path))}"
    if not re.search(r"^\[camera\]\s*$", text, flags=re.M):
        raise RuntimeError(f"no [camera] section in {camera_toml}")
    text = re.sub(r"^\[camera\]\s*$", "[camera]\n" + line, text, count=1, flags=re.M)
    camera_toml.write_text(text)
    if tomllib.loads(text)["camera"].get("detect_source") != str(path):
        raise RuntimeError(f"could not set camera.detect_source in {camera_toml}")


def set_video(camera_toml: Path, video: str) -> None:
    """The camera's ``[encoding] video`` (jpeg: version-1 frames; h264: version 2, whose
    public stream the headless viewer decodes before the faces are looked for)."""
    text = camera_toml.read_text()
    if re.search(r"^\[encoding\]\s*$", text, flags=re.M):
        text = re.sub(
            r"^\[encoding\]\s*$", f'[encoding]\nvideo = "{video}"', text, count=1, flags=re.M
        )
    else:
        text += f'\n[encoding]\nvideo = "{video}"\n'
    camera_toml.write_text(text)
    if tomllib.loads(text).get("encoding", {}).get("video") != video:
        raise RuntimeError(f"could not set encoding.video in {camera_toml}")


def run_pipeline(
    info: ClipInfo,
    tmp: Path,
    max_frames: int | None,
    log,
    control: bool = False,
    detect_source: Path | None = None,
    video: str = "jpeg",
) -> dict:
    """Store + live viewer + camera on the clip, then the two archive read-backs. Returns
    paths and counters; raises RuntimeError (with the node's log) when a node fails."""
    home = tmp / "home"
    base = free_port_base(4)
    veilcam(
        "init",
        str(home),
        "--camera-id",
        "cam1",
        "--source",
        str(info.path),
        "--port-base",
        str(base),
        "--web-port",
        str(base + 3),
    )
    veilcam("user", "add", "alice", "--home", str(home), "--password-stdin", stdin=PASSWORD + "\n")
    model = configure_model(home / "config" / "camera.toml")
    if control:
        disable_faces(home / "config" / "camera.toml")
        model += "; CONTROL RUN: faces.enabled = false"
    if detect_source is not None:
        set_detect_source(home / "config" / "camera.toml", detect_source)
        model += f"; detect_source = {detect_source.name}"
    if video != "jpeg":
        set_video(home / "config" / "camera.toml", video)
        model += f"; video = {video}"
    expected = min(info.frames, max_frames) if max_frames else info.frames
    run: dict = {"model": model, "expected": expected, "notes": []}
    live_dir, pub_dir, orig_dir = tmp / "live", tmp / "public", tmp / "original"
    nodes = NodeSet(tmp / "logs")
    watcher = ArrivalWatcher(live_dir)
    camera_timeout = 90 + 1.0 * expected
    try:
        store = nodes.start_veilcam(
            "store",
            "store",
            *("store", "--home", str(home), "--stats-out", str(tmp / "store.json")),
            timeout=60,
        )
        watcher.start()
        live = nodes.start_veilcam(
            "live",
            "viewer",
            "view",
            "--home",
            str(home),
            "--headless",
            "--out",
            str(live_dir),
            "--no-images",
            "--frames",
            str(expected),
            "--timeout",
            str(int(camera_timeout + 60)),
            timeout=60,
        )
        time.sleep(0.5)  # let the subscription reach the store's relay
        cam_cmd = ["camera", "--home", str(home), "--stats-out", str(tmp / "camera.json")]
        if expected < info.source_frames:
            cam_cmd += ["--max-frames", str(expected)]
        t0 = time.monotonic()
        camera = nodes.start("camera", "camera", veilcam_cmd(*cam_cmd))
        code = _wait_camera(camera, store, live, watcher, camera_timeout)
        run["camera_wall_s"] = round(time.monotonic() - t0, 2)
        run["camera_cpu_s"] = round(camera.read_cpu(), 2)
        if code in (3, 4):
            run["notes"].append(
                f"camera exit {code} ("
                + ("store did not ack every frame" if code == 3 else "store rejected frames")
                + ")"
            )
        elif code != 0:
            raise _fail(camera, "failed")
        if not (tmp / "camera.json").exists():
            raise _fail(camera, "wrote no stats file")
        stats = json.loads((tmp / "camera.json").read_text())
        run["camera_stats"] = stats
        published = int(stats.get("published", 0))
        if published == 0:
            raise _fail(camera, "published no frame")
        # the live viewer ends by itself once it has every frame; give it a few seconds
        deadline = time.monotonic() + 10
        while not live.poll() and time.monotonic() < deadline:
            time.sleep(0.1)
        if live.alive:
            live.signal(signal.SIGTERM)
            live.wait(15)
        watcher.stop()
        run["latency"] = watcher.latencies()
        run["live_frames"] = len(watcher.lines)
        # read the whole archive back: public and unlocked
        view = [
            "view",
            "--home",
            str(home),
            "--headless",
            "--from",
            "start",
            "--camera",
            "cam1",
            "--frames",
            str(published),
        ]
        pub = nodes.start("public", "viewer", veilcam_cmd(*view, "--out", str(pub_dir)))
        orig = nodes.start(
            "original",
            "viewer",
            veilcam_cmd(*view, "--out", str(orig_dir), "--user", "alice", "--password-stdin"),
            stdin=PASSWORD + "\n",
        )
        for node in (pub, orig):
            try:
                code = node.wait(120 + 1.0 * published)
            except subprocess.TimeoutExpired:
                raise _fail(node, "did not finish reading the archive") from None
            if code == 1:
                run["notes"].append(
                    f"{node.name} viewer: fewer than {published} frames in the archive"
                )
            elif code != 0:
                raise _fail(node, "failed")
    finally:
        try:
            nodes.stop_all()
        finally:
            watcher.stop()
    store_stats = tmp / "store.json"
    run["store_stats"] = json.loads(store_stats.read_text()) if store_stats.exists() else {}
    run["dirs"] = {"live": live_dir, "public": pub_dir, "original": orig_dir}
    return run


# --------------------------------------------------------------------------- analysis


def analyse(info: ClipInfo, run: dict, detector: cv2.FaceDetectorYN) -> ClipLeaks:
    res = ClipLeaks(
        clip=info.name,
        size=f"{info.width}x{info.height}",
        clip_fps=round(info.fps, 2),
        frames_in_clip=run["expected"],
    )
    res.notes.extend(run["notes"])
    stats = run["camera_stats"]
    res.frames_published = int(stats.get("published", 0))
    res.fail_closed = dict(stats.get("fail_closed", {}))
    res.dropped = {
        "backpressure": stats.get("dropped_backpressure", 0),
        "overload": stats.get("dropped_overload", 0),
    }
    res.detector = str(stats.get("detector", "?"))
    res.camera_cpu_s = float(run.get("camera_cpu_s", 0.0))
    res.detect_source = dict(stats.get("detect_source") or {})
    if "yunet" not in res.detector.lower() and "CONTROL" not in run["model"]:
        res.notes.append(f"camera detector is {res.detector!r}, not YuNet")
    res.latency_ms = run["latency"]
    res.latency_ms["live_frames"] = run["live_frames"]
    if run["live_frames"] < res.frames_published:
        res.notes.append(f"live viewer saw {run['live_frames']} of {res.frames_published} frames")

    d = run["dirs"]
    pub = {r["seq"]: r for r in _read_jsonl(d["public"] / "frames.jsonl")}
    org = {r["seq"]: r for r in _read_jsonl(d["original"] / "frames.jsonl")}
    bad = sum(not r.get("verified") for r in (*pub.values(), *org.values()))
    if bad:
        res.notes.append(f"{bad} frame(s) failed verification in the read-backs")
    locked = sum(1 for r in org.values() if r.get("verified") and not r.get("unlocked"))
    if locked:
        res.notes.append(f"{locked} frame(s) of the unlocked read-back not fully unlocked")
    only = set(pub) ^ set(org)
    if only:
        res.notes.append(f"{len(only)} seq(s) in only one read-back")
    seqs = sorted(
        s for s in set(pub) & set(org) if pub[s].get("verified") and org[s].get("verified")
    )

    captures = [pub[s]["capture_time_us"] for s in seqs]
    if len(captures) >= 2 and captures[-1] > captures[0]:
        res.camera_fps = round((len(captures) - 1) / ((captures[-1] - captures[0]) / 1e6), 2)

    shares, readable_per_frame = [], []
    timing: list[np.ndarray] = []
    prev_seq = None
    for s in seqs:
        rec = pub[s]
        share, whole = zone_share(rec.get("zones", []), rec["width"], rec["height"])
        shares.append(share)
        res.frames_full_cover += whole
        original = cv2.imread(str(d["original"] / f"{s}.png"), cv2.IMREAD_COLOR)
        public = cv2.imread(str(d["public"] / f"{s}.png"), cv2.IMREAD_COLOR)
        if original is None or public is None or original.shape != public.shape:
            res.notes.append(f"frame {s}: PNG missing or sizes differ")
            continue
        res.frames_compared += 1
        if len(timing) < REF_TIMING_FRAMES:
            timing.append(original)
        faces = reference_faces(original, detector)
        res.reference_faces += len(faces)
        readable = []
        for box in faces:
            ok, p, c = is_readable(public, original, box)
            if ok:
                readable.append(box)
                if len(res.readable_examples) < EXAMPLES_KEPT:
                    res.readable_examples.append(
                        {
                            "seq": s,
                            "box": list(box),
                            "psnr": None if math.isinf(p) else round(p, 1),
                            "corr": round(c, 3),
                        }
                    )
        res.readable_faces += len(readable)
        res.frames_with_readable += bool(readable)
        if prev_seq is not None and s != prev_seq + 1:
            readable_per_frame.append([])  # a missing frame breaks a run
        readable_per_frame.append(readable)
        prev_seq = s
    res.zone_area_mean = round(float(np.mean(shares)), 4) if shares else 0.0
    res.longest_readable_run = longest_readable_run(readable_per_frame)
    res.reference_fps = round(time_reference(timing, detector), 2)
    return res


def run_clip(name: str, args, detector) -> ClipLeaks:
    info = ensure_clip(name, args.cache, log=lambda m: print("  " + m, flush=True))
    max_frames = int(round(args.seconds * info.fps)) if args.seconds else None
    tmp = Path(tempfile.mkdtemp(prefix=f"veilcam-leaks-{name}-"))
    t0 = time.monotonic()
    try:
        sub = detect_copy(info, args.detect_width, args.cache) if args.detect_width else None
        run = run_pipeline(
            info, tmp, max_frames, print, control=args.control, detect_source=sub, video=args.video
        )
        t1 = time.monotonic()
        res = analyse(info, run, detector)
        res.notes.insert(0, f"model: {run['model']}")
        if args.keep:
            res.notes.append(f"kept in {tmp}")
        print(f"  pipeline {t1 - t0:.0f} s, analysis {time.monotonic() - t1:.0f} s", flush=True)
        return res
    finally:
        if args.keep:
            print(f"  kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- report


def print_table(results: list[ClipLeaks], errors: dict[str, str]) -> None:
    head = (
        f"{'clip':<36} {'size':>9} {'pub/clip':>9} {'ref':>5} {'readable':>12} "
        f"{'fr>=1':>5} {'run':>4} {'zone%':>6} {'full':>5} {'failcl':>6} {'drop':>5} "
        f"{'lat p50/p99 ms':>15} {'fps':>11} {'ref fps':>7} {'ratio':>6} {'cpu ms/fr':>9}"
    )
    print("\n" + head)
    print("-" * len(head))
    for r in results:
        lat = r.latency_ms.get("line", {})
        latency = f"{lat.get('p50', '-')}/{lat.get('p99', '-')}" if lat.get("n") else "-"
        ratio = f"{r.camera_fps / r.reference_fps:.2f}x" if r.reference_fps else "-"
        print(
            f"{r.clip:<36} {r.size:>9} {r.frames_published:>4}/{r.frames_in_clip:<4} "
            f"{r.reference_faces:>5} {r.readable_faces:>5} {r.readable_percent:5.1f}% "
            f"{r.frames_with_readable:>5} {r.longest_readable_run:>4} "
            f"{100 * r.zone_area_mean:5.1f}% {r.frames_full_cover:>5} "
            f"{sum(r.fail_closed.values()):>6} {sum(r.dropped.values()):>5} "
            f"{latency:>15} {r.camera_fps:>5.1f}/{r.clip_fps:<5.1f} "
            f"{r.reference_fps:>7.2f} {ratio:>6} "
            f"{1000 * r.camera_cpu_s / max(1, r.frames_published):>9.1f}"
        )
    for name, err in errors.items():
        print(f"{name:<36} FAILED: {err.splitlines()[0]}")
    tot_ref = sum(r.reference_faces for r in results)
    tot_read = sum(r.readable_faces for r in results)
    if results:
        print(
            f"{'total':<36} {'':>9} {'':>9} {tot_ref:>5} {tot_read:>5} "
            f"{100 * tot_read / max(1, tot_ref):5.1f}%"
        )
    print(
        "\ncolumns: pub/clip = frames published / frames of the clip used; ref = reference "
        "faces (YuNet, native\nresolution, score >= 0.75, on the unlocked frames); readable "
        "= reference faces readable in the public\nframe (PSNR >= 30 dB and Laplacian corr "
        ">= 0.5); fr>=1 = frames with >= 1 readable face; run = longest\nrun of frames one "
        "face stays readable; zone% = mean union zone area / frame area; full = frames\n"
        "covered whole; failcl / drop = camera's fail_closed / dropped counters; lat = live "
        "camera->viewer\nlatency (frames.jsonl line appearance); fps = camera achieved / "
        "clip fps; ref fps = full-resolution\nYuNet alone on this machine; ratio = camera "
        "fps / ref fps; cpu ms/fr = camera process CPU time per published frame."
    )
    by_size: dict[str, list[float]] = {}
    for r in results:
        if r.reference_fps:
            by_size.setdefault(r.size, []).append(r.reference_fps)
    if by_size:
        print(
            "\nreal alternative (YuNet at native resolution on every frame, single process): "
            + ", ".join(f"{s} {np.median(v):.1f} fps" for s, v in by_size.items())
        )
    for r in results:
        extra = [n for n in r.notes if not n.startswith("model:")]
        if extra:
            print(f"notes {r.clip}: " + "; ".join(extra))


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--clips",
        default=",".join(CLIPS),
        help=f"comma-separated clip names (default: all: {', '.join(CLIPS)})",
    )
    ap.add_argument(
        "--seconds",
        type=float,
        default=0.0,
        help="use only the first S seconds of each clip (camera --max-frames)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary deployments")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    ap.add_argument(
        "--control",
        action="store_true",
        help="positive control: the camera's face detection off, so nearly every "
        "reference face must come out readable (checks the metric end to end)",
    )
    ap.add_argument(
        "--detect-width",
        type=int,
        default=0,
        help="detect on a copy of each clip downscaled to this width (camera.detect_source)",
    )
    ap.add_argument(
        "--video",
        choices=("jpeg", "h264"),
        default="jpeg",
        help="the camera's [encoding] video: the public frames as JPEG (default) or as the "
        "H.264 public stream, decoded by the headless viewer",
    )
    ap.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="where synthetic clips are generated"
    )
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.clips.split(",") if c.strip()]
    unknown = [n for n in names if n not in CLIPS]
    if unknown:
        ap.error(f"unknown clip(s) {', '.join(unknown)}; known: {', '.join(CLIPS)}")
    if not YUNET.exists():
        print(f"leaks: error: the reference needs the YuNet model at {YUNET}", file=sys.stderr)
        return 2
    # SIGTERM behaves like Ctrl-C: the finally blocks stop the nodes and remove the folders
    signal.signal(signal.SIGTERM, _interrupt)
    detector = make_detector(YUNET)
    results: list[ClipLeaks] = []
    errors: dict[str, str] = {}
    t0 = time.monotonic()
    for name in names:
        print(f"== {name}", flush=True)
        try:
            results.append(run_clip(name, args, detector))
        except (
            RuntimeError,
            FileNotFoundError,
            subprocess.CalledProcessError,
            subprocess.TimeoutExpired,
            OSError,
        ) as exc:
            if isinstance(exc, subprocess.CalledProcessError):
                msg = f"{' '.join(exc.cmd[3:5])} exit {exc.returncode}: {exc.stderr or ''}"
            else:
                msg = str(exc)
            print(f"  FAILED: {msg}", flush=True)
            errors[name] = msg
    wall = time.monotonic() - t0
    print_table(results, errors)
    print(f"\nrun time {wall:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": machine(),
                "seconds": args.seconds or None,
                "run_time_s": round(wall, 1),
                "thresholds": {"reference_score": 0.75, "psnr_db": 30.0, "laplacian_corr": 0.5},
                "latency_method": "frames.jsonl line appearance (inotify) of a live viewer that "
                "writes no PNG (--no-images)",
                "control": args.control,
                "detect_width": args.detect_width or None,
                "clips": [r.to_dict() for r in results],
                "errors": errors,
            },
            indent=2,
        )
    )
    print(f"results: {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
