"""The running store process (e2e): rejects forged, unknown and replayed frames, and keeps
running."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import zmq
from veilcam.camera_node.protect import Epoch
from veilcam.common import deployment
from veilcam.common.format import Ack, AckStatus, FrameMessage
from veilcam.common.home import Home
from veilcam.common.signing import TrustedCameras, load_signing_key
from veilcam.common.transport import curve_pair, make_client

from tests.conftest import SAMPLE_CLIP, make_home
from tests.factory import Camera

pytestmark = pytest.mark.e2e


@pytest.fixture
def store(tmp_path: Path, procs):
    home = make_home(tmp_path, SAMPLE_CLIP)
    procs.start_ready("store", "store", "--home", str(home))
    h = Home(home)
    ctx = zmq.Context.instance()
    store_key = deployment.store_identity(h).transport_key
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    make_client(dealer, curve_pair(deployment.transport_key(h, "camera", "cam1")), store_key)
    dealer.connect(deployment.store_config(h).store.ingest_bind)
    relay = ctx.socket(zmq.SUB)
    relay.setsockopt(zmq.LINGER, 0)
    relay.setsockopt(zmq.SUBSCRIBE, b"")
    make_client(relay, curve_pair(deployment.transport_key(h, "viewer", "viewer")), store_key)
    relay.connect(deployment.store_config(h).store.relay_bind)
    time.sleep(0.3)
    cam = Camera("cam1")
    cam.key = load_signing_key(h.camera_key_path("cam1"))
    cam.trust = TrustedCameras({"cam1": cam.key.public_key()})
    cam.epoch = Epoch.new()
    yield {"home": h, "dealer": dealer, "relay": relay, "cam": cam, "procs": procs}
    dealer.close()
    relay.close()


def _send(dealer: zmq.Socket, parts: list[bytes]) -> Ack:
    dealer.send_multipart(parts)
    assert dealer.poll(5000), "the store did not answer"
    return Ack.from_parts(dealer.recv_multipart())


def _relayed(relay: zmq.Socket) -> list[int]:
    seqs = []
    while relay.poll(300):
        parts = relay.recv_multipart()
        if parts[0].endswith(b"\x00F"):
            seqs.append(FrameMessage.from_parts(parts).header.seq)
    return seqs


def test_store_rejects_bad_frames_and_keeps_running(store) -> None:
    dealer, cam = store["dealer"], store["cam"]
    assert _send(dealer, store["cam"].envelope().to_parts()).status == AckStatus.STORED
    first = cam.frame()
    assert _send(dealer, first.to_parts()).status == AckStatus.STORED

    # forged: valid structure, signature by nobody
    forged = dataclasses.replace(cam.frame(), signature=bytes(64))
    ack = _send(dealer, forged.to_parts())
    assert ack.status == AckStatus.REJECTED and "signature" in ack.reason

    # a frame signed by a key the store does not know, under a trusted camera's id
    impostor = Camera("cam1")
    impostor.seq = 50
    ack = _send(dealer, impostor.frame().to_parts())
    assert ack.status == AckStatus.REJECTED and "signature" in ack.reason

    # a frame in the name of another camera than the one authenticated on this connection
    ack = _send(dealer, Camera("ghost").frame().to_parts())
    assert ack.status == AckStatus.REJECTED and "in the name of camera 'ghost'" in ack.reason

    # garbage: no answer possible, but the store must survive it
    dealer.send_multipart([b"cam1\x00F", b"garbage"])
    dealer.send_multipart([b"\xff" * 10])

    # a genuine next frame is still accepted...
    cam.seq, cam.prev = 1, first.digest
    second = cam.frame()
    assert _send(dealer, second.to_parts()).status == AckStatus.STORED
    relayed_before = _relayed(store["relay"])
    # ...and replaying the first one stores and relays nothing
    assert _send(dealer, first.to_parts()).status == AckStatus.DUPLICATE
    assert _relayed(store["relay"]) == []
    assert 0 in relayed_before or 1 in relayed_before

    # a validly signed frame with an old sequence number but other content: replay
    from tests.factory import textured

    cam.seq, cam.prev, cam.epoch = 0, bytes(32), Epoch.new()
    ack = _send(dealer, cam.frame(image=textured(seed=9)).to_parts())
    assert ack.status == AckStatus.REJECTED and "replayed or reordered" in ack.reason

    store["procs"].stop("store", timeout=10)
    log = store["procs"].log("store")
    assert "2 frame(s) and 1 key envelope(s) archived" in log
    assert "bad_signature=2" in log and "wrong_camera_identity=1" in log and "replay=1" in log
    assert "malformed=2" in log
    assert "Traceback" not in log


def test_full_disk_stops_accepting_with_a_clear_error_and_loses_nothing_acknowledged(
    tmp_path, procs
) -> None:
    """The store's files may not grow past 1.5 MB (RLIMIT_FSIZE, as on a full disk)."""
    import resource
    import signal as sig

    from tests.conftest import run_cli

    home = make_home(tmp_path, SAMPLE_CLIP)

    def limit() -> None:
        sig.signal(sig.SIGXFSZ, sig.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))

    store = procs.start_ready("store", "store", "--home", str(home), preexec_fn=limit)
    try:
        cfg = home / "config" / "camera.toml"
        cfg.write_text(cfg.read_text().replace("[store]\n", "[store]\ndrain_timeout_s = 4\n", 1))
        camera = run_cli(
            "camera", "--home", str(home), "--max-frames", "120", "--no-pace", timeout=120
        )
        assert camera.returncode == 3, camera.stderr  # not everything could be acknowledged
        assert store.poll() is None, "the store must keep running"
    finally:
        procs.stop("store")
    text = procs.log("store")
    assert "cannot write to the archive" in text and "Traceback" not in text
    acked = int(camera.stderr.rsplit(" acknowledged", 1)[0].rsplit(" ", 1)[1])
    verify = run_cli("verify", str(home), "--json")
    report = json.loads(verify.stdout)
    assert report["intact"], verify.stdout
    archived = report["cameras"][0]["frames"] + report["cameras"][0]["envelopes"]
    assert 0 < acked <= archived < 121


def test_a_frame_the_store_could_not_write_is_not_overtaken_by_a_smaller_later_one(
    tmp_path, procs
) -> None:
    """Disk full: frame #3 does not fit, the smaller #4 would. The store must not archive #4
    (then #3 could never be: a replay) but wait, unacknowledged, until #3 is written."""
    import resource
    import signal as sig

    from tests.conftest import run_cli
    from tests.factory import textured

    home = make_home(tmp_path, SAMPLE_CLIP)
    limit = 700_000  # three 200 kB frames fit in the segment file, a fourth does not

    def limited() -> None:
        sig.signal(sig.SIGXFSZ, sig.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    store = procs.start_ready("store", "store", "--home", str(home), preexec_fn=limited)
    h = Home(home)
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        make_client(
            dealer,
            curve_pair(deployment.transport_key(h, "camera", "cam1")),
            deployment.store_identity(h).transport_key,
        )
        dealer.connect(deployment.store_config(h).store.ingest_bind)
        cam = Camera("cam1")
        cam.key = load_signing_key(h.camera_key_path("cam1"))
        assert _send(dealer, cam.envelope().to_parts()).status == AckStatus.STORED
        big = [cam.frame(image=textured(640, 480, seed=i)) for i in range(4)]
        small = cam.frame(image=textured(64, 48), zones=[])
        for frame in big[:3]:
            assert _send(dealer, frame.to_parts()).status == AckStatus.STORED
        for frame in (big[3], small):  # #3 fails (file too large); #4 must wait for it
            dealer.send_multipart(frame.to_parts())
            assert not dealer.poll(1500), "a frame was acknowledged on a full disk"
        resource.prlimit(
            store.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )  # space is back
        assert _send(dealer, big[3].to_parts()).status == AckStatus.STORED  # resent in order
        assert _send(dealer, small.to_parts()).status == AckStatus.STORED
    finally:
        dealer.close()
        procs.stop("store")
    text = procs.log("store")
    assert "cannot write to the archive" in text and "Traceback" not in text
    import sqlite3

    db = sqlite3.connect(deployment.archive_dir(h) / "index.sqlite3")
    in_file_order = [
        seq
        for (seq,) in db.execute(
            "SELECT seq FROM frames WHERE camera='cam1' ORDER BY segment_id, offset"
        )
    ]
    db.close()
    assert in_file_order == [0, 1, 2, 3, 4]
    # verify finds no gap and nothing reordered (the factory's frames carry 2023 capture
    # times, before this certificate: that is all it may report)
    report = json.loads(run_cli("verify", str(home), "--json").stdout)
    assert {p["kind"] for p in report["problems"]} == {"certificate_expired"}
    assert sorted(p["seq"] for p in report["problems"]) == [0, 1, 2, 3, 4]
