"""Pipeline benchmark: store, camera and one unlocked viewer as separate processes, live.

    python bench/pipeline.py [--seconds 20] [--sizes 720p,1080p] [--fps 30] [--video both]
    python bench/pipeline.py --clip ../shared/media/intel/one-by-one-person-detection.mp4 ...
    python bench/pipeline.py --no-viewer ...   (store and camera only)
    VEILCAM_BENCH_ENCODING='h264_preset = "superfast";zone_crf = 18' python bench/pipeline.py ...
        (extra lines for the camera's [encoding] section, ';'-separated)

For each frame size it builds a clip (the bundled sample, plus ../shared media when present,
scaled with INTER_LINEAR), starts a fresh deployment on loopback, runs the camera on the clip
at the clip's frame rate with face detection on (YuNet from ../shared/models when present,
else Haar), and an unlocked viewer that verifies, decrypts and composes every frame. It
prints one table per size: fps in and out, frames dropped by our code, per-stage times of
every node, camera-to-viewer latency p50/p99, CPU per node, bytes per frame and per hour, and
the privacy tax: the CPU the crypto path (zone encryption, hashing and signing, store and
viewer verification, zone decryption, key wrapping) costs, against the CPU of the whole
pipeline, measured on the frames of the same run. Results also go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.harness import (  # noqa: E402
    ROOT,
    SIZES,
    archive_bytes,
    archived_capture_fps,
    archived_headers,
    cpu_seconds,
    free_port_base,
    make_clip,
    plain_h264_bytes_per_frame,
    public_stream_bytes_per_frame,
    rss_mb,
    use_yunet,
    veilcam,
    zone_area_share,
)

PASSWORD = "benchmark pass phrase 42"
# what a run without a viewer (--no-viewer: the camera node's own figures) reports for it
NO_VIEWER = {
    "received": 0,
    "unlocked": 0,
    "captured_fps": 0.0,
    "latency_p50_ms": 0.0,
    "latency_p99_ms": 0.0,
    "stages": {},
}


# --------------------------------------------------------------------------- viewer process


def run_viewer(home_dir: str, out: str, seconds: float) -> None:
    """An unlocked viewer that times each step and the latency of every frame. Frames go
    through the viewer's Renderer (JPEG decode and zone decryption for version 1; the public
    and zone-stream H.264 decoders, in sequence, for version 2): one ``render`` stage."""
    from veilcam.common.home import Home
    from veilcam.common.stagetimer import StageTimes
    from veilcam.viewer.client import RelayClient
    from veilcam.viewer.login import login
    from veilcam.viewer.render import Renderer
    from veilcam.viewer.unlock import Unlocker

    home = Home(Path(home_dir))
    client = RelayClient(home)
    renderer = Renderer(Unlocker(login(home, "alice", PASSWORD), client.envelope))
    times = StageTimes()
    latencies, captures, received, unlocked, bad, gaps = [], [], 0, 0, 0, 0
    Path(out + ".ready").write_text("ready")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        got = client.receive(timeout_ms=200)
        if got is None:
            continue
        times.add("receive_verify", time.perf_counter() - t0)
        if not got.verified:
            bad += 1
            continue
        received += 1
        h = got.msg.header
        with times.measure("render"):
            shown = renderer.render(got.msg)
        gaps += shown.is_gap
        unlocked += not shown.is_gap and all(shown.zone_unlocked)  # every zone (if any)
        latencies.append(time.time() - h.capture_time_us / 1e6)
        captures.append(h.capture_time_us / 1e6)
    client.close()
    # the camera's own pace, from the capture times of what arrived (no start-up in it)
    span = captures[-1] - captures[0] if len(captures) > 1 else 0.0
    captured_fps = (len(captures) - 1) / span if span > 0 else 0.0
    lat = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    Path(out).write_text(
        json.dumps(
            {
                "received": received,
                "unlocked": unlocked,
                "gaps": gaps,  # frames without a picture (waiting for an H.264 keyframe)
                "failed_verification": bad,
                "captured_fps": captured_fps,
                "latency_p50_ms": float(np.percentile(lat, 50)),
                "latency_p99_ms": float(np.percentile(lat, 99)),
                "stages": times.summary(),
            }
        )
    )


# --------------------------------------------------------------------------- privacy tax


def crypto_cost_per_frame(home_dir: Path, frames: int = 200) -> dict[str, float]:
    """CPU ms per frame of the crypto path, on the frames this run archived."""
    from veilcam.common import deployment
    from veilcam.common.format import FrameMessage, KeyEnvelope
    from veilcam.common.home import Home
    from veilcam.common.keystore import open_keystore
    from veilcam.common.zonecrypt import decrypt_zone, encrypt_zone
    from veilcam.store_node.archive import Archive

    home = Home(home_dir)
    trust = deployment.trusted_cameras(home)
    alice = open_keystore(home.keystore_path("alice"), PASSWORD)
    archive = Archive(deployment.archive_dir(home))
    seqs = [
        s
        for (s,) in archive.db.execute(
            "SELECT seq FROM frames ORDER BY seq DESC LIMIT ?", (frames,)
        )
    ]
    msgs = [FrameMessage.from_body_parts(archive.frame_parts("cam1", s)) for s in seqs]
    epoch = msgs[0].header.epoch_id
    env = KeyEnvelope.from_body_parts(archive.envelope_parts("cam1", epoch))
    archive.close()
    keys = alice.unwrap_envelope(env.body)
    msgs = [m for m in msgs if m.header.epoch_id == epoch]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = Ed25519PrivateKey.generate()
    t = {"encrypt": 0.0, "hash_sign": 0.0, "verify_x2": 0.0, "decrypt": 0.0}
    for m in msgs:
        plain = [
            decrypt_zone(keys[z.zone_class], m.header.seq, i, ct)
            for i, (z, ct) in enumerate(zip(m.header.zones, m.zone_ciphertexts, strict=True))
        ]
        c0 = time.process_time()
        for i, (z, p) in enumerate(zip(m.header.zones, plain, strict=True)):
            encrypt_zone(keys[z.zone_class], m.header.seq, i, p)
        c1 = time.process_time()
        from veilcam.common.format import sha256

        sha256(m.public_image)
        for ct in m.zone_ciphertexts:
            sha256(ct)
        signer.sign(m.header_bytes)
        c2 = time.process_time()
        trust.verify_frame(m)
        trust.verify_frame(m)  # the store and the viewer each verify
        c3 = time.process_time()
        for i, (z, ct) in enumerate(zip(m.header.zones, m.zone_ciphertexts, strict=True)):
            decrypt_zone(keys[z.zone_class], m.header.seq, i, ct)
        c4 = time.process_time()
        for k, d in zip(t, (c1 - c0, c2 - c1, c3 - c2, c4 - c3), strict=True):
            t[k] += d
    n = max(1, len(msgs))
    out = {k: v * 1000 / n for k, v in t.items()}
    c0 = time.process_time()
    for _ in range(5):
        alice.unwrap_envelope(env.body)
    out["unwrap_per_epoch"] = (time.process_time() - c0) * 1000 / 5
    out["frames"] = n
    return out


# --------------------------------------------------------------------------- one scenario


def scenario(
    name: str,
    size: tuple[int, int],
    fps: float,
    seconds: float,
    jpeg_quality: int | None = None,
    video: str = "jpeg",
    clip_sources: list[Path] | None = None,
    with_viewer: bool = True,
) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"veilcam-bench-{name}-"))
    clip = make_clip(size, fps, min(seconds, 20), tmp / "clip.mp4", clip_sources)
    home = tmp / "home"
    base = free_port_base()
    veilcam(
        "init",
        str(home),
        "--source",
        str(clip),
        "--loop",
        "--port-base",
        str(base),
        "--web-port",
        str(base + 3),
    )
    veilcam("user", "add", "alice", "--home", str(home), "--password-stdin", stdin=PASSWORD + "\n")
    cfg = home / "config" / "camera.toml"
    text = use_yunet(cfg.read_text().replace("loop = true", f"loop = true\nfps = {fps}"))
    encoding = [f'video = "{video}"'] if video != "jpeg" else []  # jpeg: the default
    encoding += [line for line in os.environ.get("VEILCAM_BENCH_ENCODING", "").split(";") if line]
    if jpeg_quality is not None:
        encoding.append(f"jpeg_quality = {jpeg_quality}")
    if encoding:
        text += "\n[encoding]\n" + "\n".join(encoding) + "\n"
    cfg.write_text(text)
    py = [sys.executable, "-m", "veilcam"]
    logs = {n: open(tmp / f"{n}.log", "w") for n in ("store", "camera", "viewer")}
    store = subprocess.Popen(
        py + ["store", "--home", str(home), "--stats-out", str(tmp / "store.json")],
        cwd=ROOT,
        stdout=logs["store"],
        stderr=subprocess.STDOUT,
    )
    time.sleep(1.5)
    viewer = None
    if with_viewer:
        viewer = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--viewer",
                str(home),
                str(tmp / "viewer.json"),
                str(seconds + 4),
            ],
            cwd=ROOT,
            stdout=logs["viewer"],
            stderr=subprocess.STDOUT,
        )
        while not (tmp / "viewer.json.ready").exists() and viewer.poll() is None:
            time.sleep(0.1)
        time.sleep(0.5)
    camera = subprocess.Popen(
        py + ["camera", "--home", str(home), "--stats-out", str(tmp / "camera.json")],
        cwd=ROOT,
        stdout=logs["camera"],
        stderr=subprocess.STDOUT,
    )
    time.sleep(2.0)  # warm-up: model load, first epoch
    pids = {"camera": camera.pid, "store": store.pid}
    if viewer is not None:
        pids["viewer"] = viewer.pid
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    rss = {k: [] for k in pids}
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        for k, p in pids.items():
            rss[k].append(rss_mb(p))
    wall = time.monotonic() - t0
    cpu = {k: (cpu_seconds(p) - cpu0[k]) / wall * 100 for k, p in pids.items()}
    camera.send_signal(signal.SIGTERM)
    camera.wait(timeout=30)
    if viewer is not None:
        viewer.wait(timeout=30)
    store.send_signal(signal.SIGTERM)
    store.wait(timeout=30)
    cam = json.loads((tmp / "camera.json").read_text())
    sto = json.loads((tmp / "store.json").read_text())
    vie = json.loads((tmp / "viewer.json").read_text()) if viewer is not None else NO_VIEWER
    crypto = crypto_cost_per_frame(home)
    total_wall = wall + 2.0  # counters cover the warm-up too
    fps_in = cam["captured"] / total_wall
    pipeline_cpu_ms_per_frame = sum(cpu.values()) * 10 / max(fps_in, 1e-9)
    crypto_ms = crypto["encrypt"] + crypto["hash_sign"] + crypto["verify_x2"] + crypto["decrypt"]
    bytes_per_frame = cam["bytes_sent"] / max(1, cam["published"])
    stored = sto["accepted"].get("frame", 0)
    archived_per_frame = archive_bytes(home) / max(1, stored)
    plain = plain_h264_bytes_per_frame(clip, fps, min(stored, 600) or 1)
    headers = archived_headers(home)
    return {
        "scenario": name,
        "size": f"{size[0]}x{size[1]}",
        "target_fps": fps,
        "seconds": round(wall, 1),
        "detector": cam["detector"],
        "fps_in": round(fps_in, 1),
        "fps_out": round(cam["published"] / total_wall, 1),
        "fps_viewer": round(vie["received"] / total_wall, 1),
        "fps_captured_at_viewer": round(vie["captured_fps"], 1),
        "fps_captured_archived": round(archived_capture_fps(headers), 1),
        "public_stream_mbit_s": round(public_stream_bytes_per_frame(headers) * fps * 8 / 1e6, 2),
        "dropped_by_camera": cam["dropped_backpressure"],
        "whole_frame_redactions": sum(cam["fail_closed"].values()),
        "scan": cam.get("scan", {}),
        "detector_ms": round(cam["detector_ms"], 1),
        "detector_skipped": cam["detector_skipped"],
        "store_accepted": sto["accepted"].get("frame", 0),
        "published": cam["published"],
        "viewer_received": vie["received"],
        "viewer_unlocked": vie["unlocked"],
        "latency_p50_ms": round(vie["latency_p50_ms"], 1),
        "latency_p99_ms": round(vie["latency_p99_ms"], 1),
        "cpu_percent": {k: round(v, 1) for k, v in cpu.items()},
        "rss_mb_max": {k: round(max(v), 1) for k, v in rss.items() if v},
        "bytes_per_frame": round(bytes_per_frame),
        "gb_per_hour": round(bytes_per_frame * fps * 3600 / 1e9, 2),
        "video": video,
        "archive_bytes_per_frame": round(archived_per_frame),
        "archive_gb_per_hour": round(archived_per_frame * fps * 3600 / 1e9, 2),
        "plain_h264_bytes_per_frame": round(plain),
        "plain_h264_gb_per_hour": round(plain * fps * 3600 / 1e9, 2),
        "archive_to_plain_h264": round(archived_per_frame / max(plain, 1), 2),
        "zone_area_share": round(zone_area_share(headers), 3),
        "clip": [str(p) for p in clip_sources] if clip_sources else "default",
        "stages": {"camera": cam["stages"], "store": sto["stages"], "viewer": vie["stages"]},
        "crypto_ms_per_frame": {k: round(v, 3) for k, v in crypto.items()},
        "pipeline_cpu_ms_per_frame": round(pipeline_cpu_ms_per_frame, 2),
        "privacy_tax_percent": round(crypto_ms / pipeline_cpu_ms_per_frame * 100, 2),
        "tmp": str(tmp),
    }


def print_table(r: dict) -> None:
    print(
        f"\n== {r['scenario']} ({r['size']}, target {r['target_fps']:g} fps, "
        f"{r['seconds']} s, detector {r['detector']}) =="
    )
    rows = [
        ("fps in / out / at viewer", f"{r['fps_in']} / {r['fps_out']} / {r['fps_viewer']}"),
        ("fps by capture times of the frames viewed", f"{r['fps_captured_at_viewer']}"),
        ("fps by capture times of the frames archived", f"{r['fps_captured_archived']}"),
        ("dropped by camera (store backlog)", r["dropped_by_camera"]),
        (
            "published / stored / viewed / unlocked",
            f"{r['published']} / {r['store_accepted']} / {r['viewer_received']} / "
            f"{r['viewer_unlocked']}",
        ),
        ("whole-frame redactions (detector late)", r["whole_frame_redactions"]),
        (
            "frame share covered as not yet rescanned (mean)",
            f"{100 * r['scan'].get('uncertain_area_share', 0):.1f} %",
        ),
        ("detector ms per run, frames skipped", f"{r['detector_ms']}, {r['detector_skipped']}"),
        ("latency camera->viewer p50 / p99 ms", f"{r['latency_p50_ms']} / {r['latency_p99_ms']}"),
        (
            "CPU % camera / store / viewer",
            " / ".join(str(r["cpu_percent"].get(k, "-")) for k in ("camera", "store", "viewer")),
        ),
        (
            "max RSS MB camera / store / viewer",
            " / ".join(str(r["rss_mb_max"].get(k)) for k in ("camera", "store", "viewer")),
        ),
        ("bytes per frame sent, GB per hour", f"{r['bytes_per_frame']}, {r['gb_per_hour']}"),
        ("public stream alone (live, redacted), Mbit/s", f"{r['public_stream_mbit_s']}"),
        (
            f"archive ({r['video']}): bytes per frame, GB per hour",
            f"{r['archive_bytes_per_frame']}, {r['archive_gb_per_hour']}",
        ),
        (
            "plain H.264 of the same frames: bytes/frame, GB/h",
            f"{r['plain_h264_bytes_per_frame']}, {r['plain_h264_gb_per_hour']}",
        ),
        ("archive / plain H.264 (no privacy)", f"{r['archive_to_plain_h264']}x"),
        (
            "frame share inside zones (archived headers, mean)",
            f"{100 * r['zone_area_share']:.1f} %",
        ),
        ("pipeline CPU ms per frame", r["pipeline_cpu_ms_per_frame"]),
        (
            "crypto ms per frame (enc/hash+sign/2x verify/dec)",
            " / ".join(
                str(r["crypto_ms_per_frame"][k])
                for k in ("encrypt", "hash_sign", "verify_x2", "decrypt")
            ),
        ),
        ("privacy tax (crypto CPU / pipeline CPU)", f"{r['privacy_tax_percent']} %"),
    ]
    for k, v in rows:
        print(f"  {k:<52} {v}")
    print("  stage times, mean / p99 ms:")
    for node, stages in r["stages"].items():
        cells = ", ".join(f"{s} {v['mean_ms']:.2f}/{v['p99_ms']:.2f}" for s, v in stages.items())
        print(f"    {node:<7} {cells}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--viewer":
        run_viewer(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--sizes", default="720p,1080p")
    ap.add_argument("--fps", type=float, default=30)
    ap.add_argument(
        "--jpeg-quality",
        type=int,
        help="public-frame JPEG quality (default: the config default, 90)",
    )
    ap.add_argument(
        "--video",
        default="jpeg",
        help="the camera's [encoding] video: jpeg, h264, or both (h264 then reports its "
        "archive against the JPEG one of the same run)",
    )
    ap.add_argument(
        "--clip",
        action="append",
        type=Path,
        help="video file to run instead of the default clip (scaled to each size; repeat to "
        "play several one after the other)",
    )
    ap.add_argument(
        "--no-viewer",
        action="store_true",
        help="store and camera only: what the camera node alone sustains",
    )
    args = ap.parse_args()
    results = []
    modes = ["jpeg", "h264"] if args.video == "both" else [args.video]
    for name in args.sizes.split(","):
        by_mode = {}
        for video in modes:
            r = scenario(
                name,
                SIZES[name],
                args.fps,
                args.seconds,
                args.jpeg_quality,
                video,
                args.clip,
                not args.no_viewer,
            )
            r["jpeg_quality"] = args.jpeg_quality or 90
            by_mode[video] = r
            results.append(r)
        if len(by_mode) == 2:
            jpeg, h264 = by_mode["jpeg"], by_mode["h264"]
            h264["jpeg_archive_to_h264_archive"] = round(
                jpeg["archive_bytes_per_frame"] / max(1, h264["archive_bytes_per_frame"]), 2
            )
        for r in by_mode.values():
            print_table(r)
            if "jpeg_archive_to_h264_archive" in r:
                print(f"  {'JPEG archive / H.264 archive (same clip)':<52} "
                      f"{r['jpeg_archive_to_h264_archive']}x")  # fmt: skip
    suffix = f"-q{args.jpeg_quality}" if args.jpeg_quality else ""
    suffix += f"-{args.video}" if args.video != "jpeg" else ""
    out = ROOT / "bench" / "results" / f"pipeline{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
