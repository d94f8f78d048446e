"""Who may see what, end to end: grants per zone class, revocation with key rotation, forged
grants ignored, and no content key anywhere on the store's disk."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
from veilcam.common import deployment
from veilcam.common.errors import NotARecipientError
from veilcam.common.format import EnvelopeBody, FrameMessage, ZoneClass
from veilcam.common.grants import sign_grant, write_grant
from veilcam.common.home import Home
from veilcam.common.imagecodec import decode_image
from veilcam.common.keystore import create_keystore
from veilcam.common.pki import create_ca
from veilcam.common.zonecrypt import decrypt_zone
from veilcam.store_node.archive import Archive
from veilcam.viewer.login import login

from tests.conftest import PASSWORD, SAMPLE_CLIP, Procs, make_home, run_cli

PLATE_ZONE = '[[zones]]\nname = "car park"\nrect = [0.0, 0.55, 0.3, 0.3]\nunits = "fraction"\nclass = "plate"\n'
pytestmark = pytest.mark.e2e


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    home_dir = make_home(tmp, SAMPLE_CLIP, extra_camera_toml=PLATE_ZONE)
    cfg = home_dir / "config" / "camera.toml"
    cfg.write_text(cfg.read_text().replace("[store]\n", "[store]\ngrants_poll_s = 0.3\n", 1))
    home = Home(home_dir)
    procs = Procs(tmp)
    try:
        procs.start_ready("store", "store", "--home", str(home_dir))
        assert (
            run_cli(
                "register",
                "carol",
                "--home",
                str(home_dir),
                "--password-stdin",
                stdin=PASSWORD + "\n",
            ).returncode
            == 0
        )
        r = run_cli(
            "grant", "carol", "--camera", "cam1", "--zones", "faces", "--home", str(home_dir)
        )
        assert r.returncode == 0, r.stderr
        # mallory's grant is signed by some other CA: a compromised store inserting a recipient
        rogue_key, _ = create_ca("rogue")
        mallory = create_keystore(tmp / "mallory.json", "mallory", PASSWORD)
        write_grant(
            home.grants_dir,
            "mallory",
            "cam1",
            sign_grant(rogue_key, "mallory", "cam1", ZoneClass.grantable(), mallory.public_raw),
        )
        carol_view = procs.start_ready(
            "carol",
            "view",
            "--home",
            str(home_dir),
            "--headless",
            "--out",
            str(tmp / "carol"),
            "--frames",
            "120",
            "--timeout",
            "60",
            "--user",
            "carol",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        camera = procs.start("camera", "camera", "--home", str(home_dir), "--loop")
        assert carol_view.wait(timeout=60) == 0, procs.log("carol")
        r = run_cli("revoke", "alice", "--camera", "cam1", "--home", str(home_dir))
        assert r.returncode == 0, r.stderr
        _wait(lambda: "grants changed" in procs.log("camera"), 15, "the camera to rotate")
        time.sleep(3.0)  # frames of the new epoch
        camera.terminate()
        assert camera.wait(timeout=15) == 0, procs.log("camera")
        yield {"home": home, "tmp": tmp, "camera_log": procs.log("camera"), "mallory": mallory}
    finally:
        procs.stop_all()  # the store stays up for the tests' log-ins


def _epochs(home: Home) -> list[tuple[EnvelopeBody, list[FrameMessage]]]:
    archive = Archive(deployment.archive_dir(home))
    try:
        rows = archive.db.execute(
            "SELECT epoch FROM envelopes WHERE camera='cam1' ORDER BY first_seq, created_us"
        ).fetchall()
        out = []
        for (epoch,) in rows:
            body = EnvelopeBody.from_bytes(archive.envelope_parts("cam1", epoch)[0])
            seqs = [
                s
                for (s,) in archive.db.execute(
                    "SELECT seq FROM frames WHERE camera='cam1' AND epoch=? ORDER BY seq", (epoch,)
                )
            ]
            frames = [FrameMessage.from_body_parts(archive.frame_parts("cam1", s)) for s in seqs]
            out.append((body, frames))
        return out
    finally:
        archive.close()


def test_revoked_user_opens_earlier_epochs_but_not_the_next(run) -> None:
    epochs = [(body, frames) for body, frames in _epochs(run["home"]) if frames]
    assert len(epochs) >= 2
    alice = login(run["home"], "alice", PASSWORD)
    before, after = epochs[0], epochs[-1]
    keys = alice.unwrap_envelope(before[0])
    assert set(keys) == set(ZoneClass)
    with pytest.raises(NotARecipientError):
        alice.unwrap_envelope(after[0])
    # and what alice could open before decrypts to real pixels
    msg = next(m for m in before[1] if m.header.zones)
    zone = msg.header.zones[0]
    payload = decrypt_zone(keys[zone.zone_class], msg.header.seq, 0, msg.zone_ciphertexts[0])
    assert decode_image(payload, zone.codec, zone.w, zone.h).shape == (zone.h, zone.w, 3)


def test_faces_only_user_gets_only_face_keys_and_sees_plates_redacted(run) -> None:
    carol = login(run["home"], "carol", PASSWORD)
    for body, _ in _epochs(run["home"]):
        if any(e.recipient_key_id == carol.key_id for e in body.entries):
            assert set(carol.unwrap_envelope(body)) == {ZoneClass.FACE}
    lines = [
        json.loads(x) for x in (run["tmp"] / "carol" / "frames.jsonl").read_text().splitlines()
    ]
    plates = [z for d in lines for z in d["zones"] if z["class"] == "plate"]
    faces = [z for d in lines for z in d["zones"] if z["class"] == "face"]
    assert plates and not any(z["unlocked"] for z in plates)
    assert faces and all(z["unlocked"] for z in faces)
    # the plate area carol sees is the redacted one
    d = next(d for d in lines if any(z["class"] == "plate" for z in d["zones"]))
    z = next(z for z in d["zones"] if z["class"] == "plate")
    image = cv2.imread(str(run["tmp"] / "carol" / f"{d['seq']}.png"))
    block = image[z["y"] : z["y"] + z["h"], z["x"] : z["x"] + z["w"]]
    assert np.abs(np.diff(block.astype(int), axis=1)).mean() < 3  # flat pixelation blocks


def test_forged_grant_is_ignored_by_the_camera(run) -> None:
    assert "ignoring grant" in run["camera_log"]
    assert "not signed by the deployment CA" in run["camera_log"]
    from veilcam.common.keywrap import key_id_of

    mallory_id = key_id_of(run["mallory"].public_raw)
    for body, _ in _epochs(run["home"]):
        assert all(e.recipient_key_id != mallory_id for e in body.entries)


def test_no_content_key_on_the_store_disk(run) -> None:
    carol = login(run["home"], "carol", PASSWORD)
    alice = login(run["home"], "alice", PASSWORD)
    keys = []
    for body, _ in _epochs(run["home"]):
        for who in (alice, carol):
            try:
                keys += who.unwrap_envelope(body).values()
            except NotARecipientError:
                pass
    assert len(keys) >= 5
    home = run["home"].root
    store_files = [
        p for d in ("archive", "accounts", "grants") for p in (home / d).rglob("*") if p.is_file()
    ]
    disk = b"".join(p.read_bytes() for p in store_files)
    assert len(disk) > 100_000
    for key in keys:
        assert key not in disk and key.hex().encode() not in disk


def test_export_for_a_revoked_user_says_redacted_not_unlocked(run) -> None:
    """A user exporting footage of a period they hold no grant for gets a redacted video, and
    the command says so, not "unlocked for alice"."""
    epochs = [(body, frames) for body, frames in _epochs(run["home"]) if frames]
    first_frames, last_frames = epochs[0][1], epochs[-1][1]
    home, tmp = str(run["home"].root), run["tmp"]

    def export(name: str, frames: list[FrameMessage]) -> str:
        from_s = frames[0].header.capture_time_us / 1e6
        to_s = frames[-1].header.capture_time_us / 1e6
        r = run_cli(
            *("export", "--home", home, "--camera", "cam1", "--user", "alice"),
            *("--from", f"{from_s:.6f}", "--to", f"{to_s:.6f}", "--out", str(tmp / name)),
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    after = export("after-revocation.mp4", last_frames)
    assert "REDACTED: alice holds no grant for camera cam1 in that period" in after, after
    assert "unlocked for" not in after
    manifest = json.loads((tmp / "after-revocation.mp4.bundle" / "manifest.json").read_text())
    assert manifest["zones"] > 0 and manifest["zones_unlocked"] == 0
    before = export("before-revocation.mp4", [f for f in first_frames if f.header.zones])
    assert "unlocked for alice: all " in before, before
