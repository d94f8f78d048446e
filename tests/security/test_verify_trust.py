"""Attacks on the archive and on evidence bundles, each performed through ``veilcam verify``
/ ``veilcam cert`` (the CLI's main, in this process); each test passes only because the
attack fails. The attacks:

1. A forged evidence bundle (a home of the forger's own, frames signed with its camera key,
   laid out as a bundle) verified INTACT: ``--trust`` was ignored for any target with config/.
2. Another camera's genuine gap notice, copied into a camera's folder, hid deleted frames.
7. A re-issued camera certificate left the old key valid for ``verify`` until its expiry.
8. A swapped MP4 (manifest edited) verified INTACT, and the verdict came before the problem.
9. ``veilcam cert issue`` took any NAME.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from veilcam.camera_node.protect import EncodeSettings, Epoch, protect_frame, sign_gap_notice
from veilcam.camera_node.redact import make_redactor
from veilcam.common import deployment
from veilcam.common.format import KIND_ENVELOPE, KIND_FRAME, KIND_GAP, FrameMessage
from veilcam.common.home import Home
from veilcam.common.secretfiles import sha256_file
from veilcam.common.segments import encode_record, segment_header
from veilcam.common.signing import load_signing_key
from veilcam.store_node.archive import Archive

from tests.conftest import SAMPLE_CLIP, cli, make_home
from tests.factory import Camera, textured
from tests.security.make_corpus import H, W, small_zones


def _camera(home: Home, camera_id: str = "cam1") -> Camera:
    cam = Camera(camera_id)
    cam.key = load_signing_key(home.camera_key_path(camera_id))
    cam.epoch = Epoch.new()
    return cam


def _frame(cam: Camera, at_us: int | None = None) -> FrameMessage:
    msg = protect_frame(
        textured(W, H, seed=cam.seq % 5),
        small_zones(),
        camera_id=cam.camera_id,
        seq=cam.seq,
        capture_time_us=at_us or time.time_ns() // 1000,
        epoch=cam.epoch,
        prev_digest=cam.prev,
        redactor=make_redactor("pixelate"),
        settings=EncodeSettings(),
        signing_key=cam.key,
    )
    cam.seq += 1
    cam.prev = msg.digest
    return msg


def _fingerprint(home: Home) -> str:
    cert = x509.load_pem_x509_certificate(home.ca_cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


def _lay_out_bundle(home: Home, bundle: Path, frames: int = 5) -> Path:
    """What 'veilcam export' writes, made from ``home``'s camera key and certificates (the
    forger's own home, or the real one for the genuine control)."""
    cam = _camera(home)
    records = [encode_record(KIND_ENVELOPE, cam.envelope().body_parts())]
    records += [encode_record(KIND_FRAME, _frame(cam).body_parts()) for _ in range(frames)]
    segment = bundle / "archive" / "segments" / "cam1" / "00000001.vseg"
    segment.parent.mkdir(parents=True)
    segment.write_bytes(segment_header("cam1") + b"".join(records))
    (bundle / "identities").mkdir()
    shutil.copytree(
        home.ca_dir,
        bundle / "identities" / "ca",
        ignore=lambda d, names: [n for n in names if "key" in n],
    )
    shutil.copytree(home.certs_dir, bundle / "identities" / "certs")
    (bundle / "config").mkdir()
    (bundle / "config" / "store.toml").write_text('[archive]\npath = "archive"\n')
    video = bundle.with_name(bundle.name.removesuffix(".bundle"))
    video.write_bytes(b"an MP4 " * 100)
    manifest = {
        "format": "veilcam-evidence-bundle-v1",
        "camera": "cam1",
        "frames": frames,
        "unlocked_for": None,
        "video": {"file": video.name, "sha256": sha256_file(video)},
        "segment": {"file": str(segment.relative_to(bundle)), "sha256": sha256_file(segment)},
        "ca_sha256": _fingerprint(home),
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return video


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    """The deployment (victim) and a forger's own 'veilcam init' with the same camera id."""
    victim = Home(make_home(tmp_path_factory.mktemp("victim"), SAMPLE_CLIP, users=()))
    forger = tmp_path_factory.mktemp("forger") / "home"
    r = cli("init", str(forger), "--camera-id", "cam1", "--source", str(SAMPLE_CLIP))
    assert r.returncode == 0, r.stderr
    return victim, Home(forger)


def _verdicts(stdout: str) -> list[str]:
    return [
        line
        for line in stdout.splitlines()
        if line.startswith(("INTACT", "NOT INTACT", "SELF-CERTIFIED"))
    ]


def test_forged_bundle_fails_against_the_trusted_home_and_is_self_certified_alone(
    homes, tmp_path: Path
) -> None:
    victim, forger = homes
    forged = tmp_path / "forged.mp4.bundle"
    _lay_out_bundle(forger, forged)
    # with --trust: the trust anchors are the victim's only; the forger's frames fail
    r = cli("verify", str(forged), "--trust", str(victim.root))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "bad_signature" in r.stdout and _verdicts(r.stdout) == [r.stdout.splitlines()[-1]]
    assert r.stdout.splitlines()[-1].startswith("NOT INTACT")
    assert _fingerprint(victim) in r.stdout and _fingerprint(forger) not in r.stdout
    doc = json.loads(cli("verify", str(forged), "--trust", str(victim.root), "--json").stdout)
    assert doc["verdict"] == "NOT_INTACT" and not doc["intact"]
    assert doc["trust_anchor"]["ca_sha256"] == _fingerprint(victim)
    # without --trust: a distinct verdict and exit code, naming the CA it carries
    r = cli("verify", str(forged))
    assert r.returncode == 3, r.stdout + r.stderr
    last = r.stdout.splitlines()[-1]
    assert last.startswith("SELF-CERTIFIED") and _fingerprint(forger) in last
    assert "INTACT:" not in r.stdout
    doc = json.loads(cli("verify", str(forged), "--json").stdout)
    assert doc["verdict"] == "SELF_CERTIFIED" and doc["self_certified"]
    assert doc["trust_anchor"]["ca_sha256"] == _fingerprint(forger)
    # the control: a genuine bundle verifies against the home that trusts it
    genuine = tmp_path / "genuine.mp4.bundle"
    _lay_out_bundle(victim, genuine)
    r = cli("verify", str(genuine), "--trust", str(victim.root))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1].startswith("INTACT")
    help_text = cli("verify", "--help").stdout
    assert "3  self-certified" in help_text


def test_swapped_video_is_not_called_covered_and_the_verdict_comes_last(
    homes, tmp_path: Path
) -> None:
    victim, _ = homes
    bundle = tmp_path / "evidence.mp4.bundle"
    video = _lay_out_bundle(victim, bundle)
    # the swap: another MP4, and the unsigned manifest edited to its SHA-256
    video.write_bytes(b"some other film " * 100)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["video"]["sha256"] = sha256_file(video)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    r = cli("verify", str(bundle), "--trust", str(victim.root))
    assert r.returncode == 0, r.stdout
    assert "NOT covered by their signatures" in r.stdout
    assert "signed under the CA" not in r.stdout
    assert _verdicts(r.stdout) == [r.stdout.splitlines()[-1]]
    doc = json.loads(cli("verify", str(bundle), "--trust", str(victim.root), "--json").stdout)
    assert doc["video_covered_by_signatures"] is False
    # an MP4 that does not match the manifest: one verdict, NOT INTACT, printed last
    video.write_bytes(b"yet another film " * 100)
    r = cli("verify", str(bundle), "--trust", str(victim.root))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert _verdicts(r.stdout) == [lines[-1]] and lines[-1].startswith("NOT INTACT")
    assert any("does not match the manifest" in line for line in lines[:-1])


def test_another_cameras_gap_notice_does_not_hide_deleted_frames(homes, tmp_path: Path) -> None:
    """Camera A's frames #3..#5 deleted; B's genuine notice for #2..#6 copied into A's folder
    (and B's envelope, which could stand in for a missing one of A)."""
    victim, _ = homes
    home = Home(tmp_path / "home")
    shutil.copytree(victim.root, home.root)
    r = cli("cert", "issue", "camera:cam2", "--home", str(home.root))
    assert r.returncode == 0, r.stderr
    a, b = _camera(home, "cam1"), _camera(home, "cam2")
    archive = Archive(deployment.archive_dir(home))
    archive.append_envelope(a.envelope())
    for _ in range(10):
        msg = _frame(a)
        if not 3 <= msg.header.seq <= 5:
            archive.append_frame(msg)
    archive.append_envelope(b.envelope())
    archive.append_gap(sign_gap_notice(b.key, "cam2", 2, 6))
    archive.commit()
    archive.close()
    seg_a = next((deployment.archive_dir(home) / "segments" / "cam1").glob("*.vseg"))
    seg_b = next((deployment.archive_dir(home) / "segments" / "cam2").glob("*.vseg"))
    from veilcam.common.segments import scan_segment

    b_records = {
        rec.kind: seg_b.read_bytes()[rec.offset : rec.offset + rec.length]
        for rec in scan_segment(seg_b)
    }
    with open(seg_a, "ab") as fh:  # copied in, as an attacker with the disk would
        fh.write(b_records[KIND_GAP])
    (deployment.archive_dir(home) / "index.sqlite3").unlink()  # the index would tell on its own
    r = cli("verify", str(home.root), "--json")
    doc = json.loads(r.stdout)
    kinds = {(p["camera"], p["kind"]) for p in doc["problems"]}
    assert r.returncode == 1 and not doc["intact"], r.stdout
    assert ("cam1", "wrong_camera") in kinds and ("cam1", "gap") in kinds
    assert not any(n["kind"] == "declared_gap" for n in doc["notes"])
    # A's own notice that reaches past the gap (#3..#6 while #6 is archived) declares
    # nothing here either: the frame after a declared gap starts where the notice ends
    shutil.rmtree(deployment.archive_dir(home) / "segments" / "cam2")
    data = seg_a.read_bytes()
    seg_a.write_bytes(
        data[: len(data) - len(b_records[KIND_GAP])]
        + encode_record(KIND_GAP, sign_gap_notice(a.key, "cam1", 3, 6).body_parts())
    )
    r = cli("verify", str(home.root), "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1, r.stdout
    assert [p["kind"] for p in doc["problems"]] == ["gap"]
    assert "reaches past frame #6" in doc["problems"][0]["detail"]
    # and A's exact notice #3..#5 is a declared gap, as before
    seg_a.write_bytes(
        data[: len(data) - len(b_records[KIND_GAP])]
        + encode_record(KIND_GAP, sign_gap_notice(a.key, "cam1", 3, 5).body_parts())
    )
    r = cli("verify", str(home.root), "--json")
    assert r.returncode == 0, r.stdout
    assert [n["kind"] for n in json.loads(r.stdout)["notes"]] == ["declared_gap"]


def test_reissued_certificate_ends_the_old_keys_validity(homes, tmp_path: Path) -> None:
    victim, _ = homes
    home = Home(tmp_path / "home")
    shutil.copytree(victim.root, home.root)
    cam = _camera(home)
    old_key = cam.key
    archive = Archive(deployment.archive_dir(home))
    archive.append_envelope(cam.envelope())
    now = time.time_ns() // 1000
    for i in range(3):
        archive.append_frame(_frame(cam, now - 3_000_000 + i))
    archive.commit()
    r = cli("cert", "issue", "camera:cam1", "--home", str(home.root))
    assert r.returncode == 0, r.stderr
    assert "valid only for what it signed before now" in r.stdout
    later = time.time_ns() // 1000 + 10_000_000  # after the re-issue (and its 2 s grace)
    # whoever kept the old key signs a frame dated after the re-issue
    archive.append_frame(_frame(cam, later))
    archive.commit()
    archive.close()
    r = cli("verify", str(home.root), "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1, r.stdout
    # refused, and named for what it is: the old key, used after its certificate ended
    assert [(p["kind"], p["seq"]) for p in doc["problems"]] == [("certificate_expired", 3)]
    assert "signed with an earlier key of camera 'cam1'" in doc["problems"][0]["detail"]
    # the control: frames before the re-issue by the old key, after it by the new one
    shutil.rmtree(deployment.archive_dir(home))
    deployment.archive_dir(home).mkdir()
    cam = _camera(home)  # the new key: its envelope is made now, after the re-issue
    new_key = cam.key
    archive = Archive(deployment.archive_dir(home))
    archive.append_envelope(cam.envelope())
    cam.key = old_key
    for i in range(3):
        archive.append_frame(_frame(cam, now - 3_000_000 + i))
    cam.key = new_key
    archive.append_frame(_frame(cam, later))
    archive.commit()
    archive.close()
    r = cli("verify", str(home.root))
    assert r.returncode == 0, r.stdout
    # a later 'cert revoke' of another node keeps the re-issue date (not a full revocation)
    assert cli("cert", "issue", "viewer:second", "--home", str(home.root)).returncode == 0
    assert cli("cert", "revoke", "viewer:second", "--home", str(home.root)).returncode == 0
    r = cli("verify", str(home.root))
    assert r.returncode == 0, r.stdout


@pytest.mark.parametrize(
    "name",
    [
        "camera:../x",
        "camera:-door",
        "camera:a b",
        "viewer:" + "v" * 65,
        "camera:door\n",
        "store:st/ore",
        "camera:.hidden",
    ],
)
def test_cert_issue_refuses_a_bad_node_name(homes, name: str) -> None:
    victim, _ = homes
    r = cli("cert", "issue", name, "--home", str(victim.root))
    assert r.returncode == 2, r.stdout
    assert r.stderr.startswith("veilcam: error: invalid ") and "Traceback" not in r.stderr
    assert not (victim.root / "identities" / "x.crt").exists()
