"""Several stores on one bucket and one index (issue 16): 2 stores x N cameras.

    python bench/multistore.py [--seconds 60] [--cameras 8] [--fps 5] [--size 640x360] [--out FILE]

A fresh deployment in a temporary folder (``veilcam init``, ``cert issue``), copied into a
second home whose store listens on other ports; store A owns cam1..camN, store B
camN+1..cam2N (``[store] cameras``); both keep closed segments in one SeaweedFS bucket and
write one PostgreSQL index (both servers real, on loopback, started here: tests/seaweed.py,
tests/postgres.py). Every camera loops a clip scaled to ``--size`` at ``--fps`` for
``--seconds``, then is stopped (SIGTERM: it drains what is pending).

Reported: frames published (each camera's --stats-out), archived (rows of the shared index)
and lost (published - archived: must be 0); each store's CPU over the run (% of one core) and
per camera; segments uploaded; playback start latency from the object store: what a store
does for a RANGE request whose segment is in the bucket (the index lookup of the keyframe and
the frame rows, then one ranged GET of the first 50 frames), timed in-process against the
same index and bucket, from random uploaded moments of every camera.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    NodeSet,
    free_port_base,
    machine,
    make_clip,
    use_yunet,
    veilcam,
)
from tests import postgres  # noqa: E402
from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3  # noqa: E402

BUCKET = "site"


def _store_toml(home: Path, pg, s3: SeaweedS3, owned: list[str], segment_bytes: int) -> None:
    cfg = home / "config" / "store.toml"
    text = cfg.read_text().replace(
        "[archive]\n",
        f'[archive]\nbackend = "s3"\nindex = "postgres"\nsegment_max_bytes = {segment_bytes}\n',
    )
    text = text.replace("[store]\n", f"[store]\ncameras = {json.dumps(owned)}\n")
    creds = home / "config" / "s3.credentials"
    creds.write_text(f"access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n")
    creds.chmod(0o600)
    pw = home / "config" / "pg.password"
    pw.write_text(postgres.PASSWORD + "\n")
    pw.chmod(0o600)
    cfg.write_text(
        text
        + f"""
[archive.s3]
endpoint_url = "{s3.endpoint}"
bucket = "{BUCKET}"
credentials_file = "config/s3.credentials"

[archive.postgres]
dsn = "{pg.dsn}"
password_file = "config/pg.password"
"""
    )


def _move_ports(home: Path) -> None:
    """The second store's home: its store (and viewer, cameras) on other ports."""
    base = free_port_base(3)
    store = (home / "config" / "store.toml").read_text()
    moves = {}
    for i, role in enumerate(("ingest", "relay", "query")):
        old = store.split(f'{role}_bind = "tcp://127.0.0.1:', 1)[1].split('"', 1)[0]
        moves[f'127.0.0.1:{old}"'] = f'127.0.0.1:{base + i}"'
    for name in ("store.toml", "viewer.toml", "camera.toml"):
        path = home / "config" / name
        text = path.read_text()
        for old, new in moves.items():
            text = text.replace(old, new)
        path.write_text(text)


def deploy(work: Path, pg, s3: SeaweedS3, per_store: int, fps: float, clip: Path, seg: int):
    """Two homes of one deployment; returns {store name: (home, its cameras)}."""
    home_a = work / "home-a"
    cams = [f"cam{i}" for i in range(1, 2 * per_store + 1)]
    base = free_port_base(4)
    veilcam(
        "init", str(home_a), "--camera-id", "cam1", "--source", str(clip), "--loop",
        "--port-base", str(base), "--web-port", str(base + 3),
    )  # fmt: skip
    for cam in cams[1:]:
        veilcam("cert", "issue", f"camera:{cam}", "--home", str(home_a))
    home_b = work / "home-b"
    shutil.copytree(home_a, home_b)
    _move_ports(home_b)
    layout = {"a": (home_a, cams[:per_store]), "b": (home_b, cams[per_store:])}
    for home, owned in layout.values():
        _store_toml(home, pg, s3, owned, seg)
        template = use_yunet((home / "config" / "camera.toml").read_text())
        template = template.replace("loop = true", f"loop = true\nfps = {fps:g}", 1)
        for cam in owned:
            (home / "config" / f"{cam}.toml").write_text(
                template.replace('id = "cam1"', f'id = "{cam}"', 1)
            )
    return layout


def index_counts(pg) -> dict[str, dict[str, int]]:
    with pg.connect() as conn:
        frames = dict(conn.execute("SELECT camera, COUNT(*) FROM frames GROUP BY camera"))
        segs = conn.execute(
            "SELECT camera, COUNT(*) FILTER (WHERE location = 's3'), COUNT(*) FROM segments "
            "GROUP BY camera"
        ).fetchall()
    return {
        cam: {"archived": int(frames.get(cam, 0)), "uploaded": int(up), "segments": int(n)}
        for cam, up, n in segs
    }


def playback_latency(home: Path, cameras: list[str], samples: int) -> dict:
    """Seconds a store takes to answer the first RANGE of a playback from an uploaded moment
    (keyframe lookup, frame rows, ranged GET of 50 frames), in-process on the shared index
    and bucket."""
    from veilcam.common import deployment
    from veilcam.common.home import Home
    from veilcam.store_node.archive import Archive
    from veilcam.store_node.index import open_index
    from veilcam.store_node.objectstore import objects_for_home

    h = Home(home)
    cfg = deployment.store_config(h)
    scratch = Path(tempfile.mkdtemp(prefix="veilcam-bench-reader-"))
    archive = Archive(
        scratch, objects=objects_for_home(h), index=open_index(cfg, scratch, h.root), cameras=[]
    )
    rng = random.Random(1)
    moments = []
    for cam in cameras:
        rows = archive.index.execute(
            "SELECT f.capture_us FROM frames f JOIN segments s ON s.id = f.segment_id "
            "WHERE f.camera = ? AND s.location = 's3'",
            (cam,),
        ).fetchall()
        moments += [(cam, int(r[0])) for r in rng.sample(rows, min(len(rows), samples))]
    times, frames = [], []
    for cam, when in moments:
        t0 = time.perf_counter()
        got = archive.frames_from(cam, when, None, 50)
        times.append(time.perf_counter() - t0)
        frames.append(len(got))
    archive.close()
    shutil.rmtree(scratch, ignore_errors=True)
    times.sort()
    return {
        "samples": len(times),
        "p50_ms": round(statistics.median(times) * 1000, 1) if times else None,
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1000, 1)
        if times
        else None,
        "frames_per_answer_mean": round(statistics.mean(frames), 1) if frames else 0,
    }


def run(opts: argparse.Namespace, work: Path) -> dict:
    width, height = (int(v) for v in opts.size.split("x"))
    clip = make_clip((width, height), opts.fps, 20, work / "clip.mp4")
    pg = postgres.PostgresServer().start()
    s3 = SeaweedS3(work / "seaweed")
    nodes = NodeSet(work / "logs")
    try:
        s3.start()
        s3.make_bucket(BUCKET)
        layout = deploy(work, pg, s3, opts.cameras, opts.fps, clip, opts.segment_kb * 1024)
        stores = {
            name: nodes.start_veilcam(f"store-{name}", "store", "store", "--home", str(home))
            for name, (home, _) in layout.items()
        }
        cams = {}
        for home, owned in layout.values():
            for cam in owned:
                cams[cam] = nodes.start_veilcam(
                    cam, "camera", "camera", "--home", str(home), "--config",
                    str(home / "config" / f"{cam}.toml"), "--stats-out", str(work / f"{cam}.json"),
                    timeout=None,
                )  # fmt: skip
        for node in cams.values():
            nodes.wait_ready(node, timeout=120)
        cpu0 = {n: s.read_cpu() for n, s in stores.items()}
        t0 = time.monotonic()
        time.sleep(opts.seconds)
        window = time.monotonic() - t0
        cpu = {n: (s.read_cpu() - cpu0[n]) / window * 100 for n, s in stores.items()}
        for node in cams.values():
            node.signal(signal.SIGTERM)
        for node in cams.values():
            node.wait(60)
        time.sleep(2)  # the last commits
        counts = index_counts(pg)
        per_camera = []
        for cam in cams:
            stats = json.loads((work / f"{cam}.json").read_text())
            archived = counts.get(cam, {}).get("archived", 0)
            per_camera.append(
                {
                    "camera": cam,
                    "store": "a" if cam in layout["a"][1] else "b",
                    "published": stats.get("published", 0),
                    "acked": stats.get("acked", 0),
                    "archived": archived,
                    "lost": stats.get("published", 0) - archived,
                    "segments": counts.get(cam, {}).get("segments", 0),
                    "uploaded": counts.get(cam, {}).get("uploaded", 0),
                }
            )
        latency = playback_latency(layout["a"][0], list(cams), opts.latency_samples)
        logs = {n: s.log() for n, s in stores.items()}
        return {
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
            "machine": machine(),
            "window_s": round(window, 1),
            "cameras": per_camera,
            "totals": {
                k: sum(c[k] for c in per_camera)
                for k in ("published", "archived", "lost", "segments", "uploaded")
            },
            "store_cpu_pct": {n: round(v, 1) for n, v in cpu.items()},
            "store_cpu_pct_per_camera": {n: round(v / opts.cameras, 2) for n, v in cpu.items()},
            "playback_start_from_bucket": latency,
            "store_errors": {
                n: log.count(" ERROR ") + log.count("Traceback") for n, log in logs.items()
            },
            "refused_not_owned": {n: log.count("camera_not_owned") for n, log in logs.items()},
        }
    finally:
        nodes.stop_all(timeout=15)
        s3.stop()
        pg.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--cameras", type=int, default=8, help="cameras per store (2 stores)")
    ap.add_argument("--fps", type=float, default=5)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--segment-kb", type=int, default=1024, help="archive.segment_max_bytes")
    ap.add_argument("--latency-samples", type=int, default=8, help="per camera")
    ap.add_argument("--out", type=Path)
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="veilcam-multistore-"))
    report = run(opts, work)
    text = json.dumps(report, indent=2)
    if opts.out:
        opts.out.write_text(text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if report["totals"]["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
