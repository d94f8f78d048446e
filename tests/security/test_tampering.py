"""Tampering matrix: every field of the frame header, every byte region, key envelopes,
gap notices, truncated and padded multipart messages, replays, reordering and forks are
rejected, each with the expected reason,

(a) by the store, running as a real process: the reason is read from the store's own reject
    counters (its metrics endpoint), one rejection per row, and the final ``--stats-out``
    counts must equal the sum of the rows; nothing rejected is archived or relayed;
(b) by the viewer: the real ``RelayClient`` (what ``veilcam view`` verifies frames with before
    showing or decrypting them) subscribed to a malicious store, which sends the same rows
    over CurveZMQ with the store's key; the ENVELOPE and RANGE answers of a malicious store
    are checked too (live unlock and archive playback).

The rows live in ``tamperlib.py``; each is its own test id.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import zmq
from veilcam.camera_node.protect import Epoch
from veilcam.common import deployment
from veilcam.common.format import Ack, AckStatus, FrameMessage, pack_parts
from veilcam.common.home import Home
from veilcam.common.signing import TrustedCameras, load_signing_key
from veilcam.common.transport import curve_pair, make_client
from veilcam.viewer.client import RelayClient
from veilcam.viewer.playback import ArchiveReader

from tests.conftest import SAMPLE_CLIP, Procs, free_port_base, make_home, run_cli
from tests.factory import Camera
from tests.security.tamperlib import (
    DROPPED,
    Side,
    case_params,
    frame_now,
    scrape_rejects,
    wait_rejects_change,
)

pytestmark = pytest.mark.e2e


def _camera_of(home: Home) -> Camera:
    cam = Camera("cam1")
    cam.key = load_signing_key(home.camera_key_path("cam1"))
    cam.trust = TrustedCameras({"cam1": cam.key.public_key()})
    cam.epoch = Epoch.new()
    return cam


def _side(cam: Camera) -> Side:
    envelope = cam.envelope()
    cam.prev = bytes(range(32))  # the base frame links to a (lost) predecessor: no chain start
    return Side(cam, frame_now(cam), envelope)


# ============================================================================ (a) the store


class StoreRun:
    def __init__(self, tmp: Path) -> None:
        self.home = Home(make_home(tmp, SAMPLE_CLIP, users=()))
        self.metrics_port = free_port_base(1)
        self.stats = tmp / "store-stats.json"
        self.procs = Procs(tmp)
        self.procs.start_ready(
            "store",
            "store",
            "--home",
            str(self.home.root),
            "--metrics-port",
            str(self.metrics_port),
            "--stats-out",
            str(self.stats),
        )
        metrics = self.procs.ready("store")["metrics"]
        assert metrics == f"http://127.0.0.1:{self.metrics_port}/metrics", metrics
        ctx = self.ctx = zmq.Context()  # its own: nothing here may hold up the shared one
        store_key = deployment.store_identity(self.home).transport_key
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        make_client(
            self.dealer,
            curve_pair(deployment.transport_key(self.home, "camera", "cam1")),
            store_key,
        )
        self.dealer.connect(deployment.store_config(self.home).store.ingest_bind)
        self.relay = ctx.socket(zmq.SUB)
        self.relay.setsockopt(zmq.LINGER, 0)
        self.relay.setsockopt(zmq.SUBSCRIBE, b"")
        make_client(
            self.relay,
            curve_pair(deployment.transport_key(self.home, "viewer", "viewer")),
            store_key,
        )
        self.relay.connect(deployment.store_config(self.home).store.relay_bind)
        self.side = _side(_camera_of(self.home))
        self.expected: Counter = Counter()  # rejections the rows caused, by reason
        self.accepted: list[int] = []  # frame seqs the store stored
        self.relayed: list[int] = []

    def send(self, parts: list[bytes]) -> Ack:
        self.dealer.send_multipart(parts)
        assert self.dealer.poll(30000), "the store did not answer"
        return Ack.from_parts(self.dealer.recv_multipart())

    def store_frame(self, msg: FrameMessage) -> None:
        assert self.send(msg.to_parts()).status == AckStatus.STORED
        self.accepted.append(msg.header.seq)

    def drain_relay(self) -> None:
        while self.relay.poll(200):
            parts = self.relay.recv_multipart()
            if parts[0].endswith(b"\x00F"):
                self.relayed.append(FrameMessage.from_parts(parts).header.seq)

    def reject(self, parts: list[bytes], reason: str) -> Ack | None:
        """Send; the store must count exactly one rejection, for ``reason``."""
        before = scrape_rejects(self.metrics_port)
        self.dealer.send_multipart(parts)
        ack = None
        if reason != "malformed":  # a message too malformed to name gets no answer
            assert self.dealer.poll(30000), "the store did not answer"
            ack = Ack.from_parts(self.dealer.recv_multipart())
            assert ack.status == AckStatus.REJECTED and ack.reason, ack
        assert wait_rejects_change(self.metrics_port, before) == Counter({reason: 1})
        self.expected[reason] += 1
        return ack

    def close(self) -> None:
        self.dealer.close()
        self.relay.close()
        self.ctx.destroy(linger=0)
        self.procs.stop_all()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    run = StoreRun(tmp_path_factory.mktemp("tamper-store"))
    try:
        time.sleep(0.3)  # the relay subscription reaches the store
        assert run.send(run.side.envelope.to_parts()).status == AckStatus.STORED
        run.store_frame(run.side.frame())
        yield run
    finally:
        run.close()


@pytest.mark.parametrize("case", case_params("store"))
def test_store_rejects_tampered_message(store: StoreRun, case) -> None:
    store.reject(case.make(store.side), case.store)


def test_store_rejects_replayed_reordered_and_forked_frames(store: StoreRun) -> None:
    side = store.side
    a = side.frame()
    store.store_frame(a)
    # an exact resend is a duplicate: answered, neither stored again nor relayed nor rejected
    before = scrape_rejects(store.metrics_port)
    assert store.send(a.to_parts()).status == AckStatus.DUPLICATE
    assert scrape_rejects(store.metrics_port) == before
    # the same sequence number with other content, validly signed: a replay
    side.cam.seq, side.cam.prev = a.header.seq, a.header.prev_digest
    store.reject(frame_now(side.cam, seed=11).to_parts(), "replay")
    # reordered: #n+2 arrives (a gap, accepted), then #n+1
    side.cam.prev = a.digest
    b, c = side.frame(), side.frame()
    store.store_frame(c)
    store.reject(b.to_parts(), "replay")
    # a fork: #last+1 that does not link to #last
    side.cam.prev = bytes(range(32))
    store.reject(side.frame().to_parts(), "chain_break")
    # and an older frame of the chain, resent after newer ones: still only a duplicate
    assert store.send(a.to_parts()).status == AckStatus.DUPLICATE


# ============================================================================ (b) the viewer


class MaliciousStore:
    """Binds the home's relay and query endpoints with the store's own CURVE key (what a
    compromised store holds) and sends whatever a test asks, to the real viewer code."""

    def __init__(self, home: Home) -> None:
        self.ctx = zmq.Context()  # no ZAP handler here: any viewer may connect
        keys = curve_pair(deployment.transport_key(home, "store", "store"))
        cfg = deployment.viewer_config(home).viewer
        self.pub = self.ctx.socket(zmq.PUB)
        self.query = self.ctx.socket(zmq.ROUTER)
        for sock in (self.pub, self.query):
            sock.setsockopt(zmq.LINGER, 0)
            sock.curve_server = True
            sock.curve_publickey, sock.curve_secretkey = keys
        self.pub.bind(cfg.relay)
        self.query.bind(cfg.query)

    def answer(self, reply: list[bytes], timeout_ms: int = 30000) -> list[bytes]:
        """Wait for one query and answer it with ``reply``; returns the query."""
        assert self.query.poll(timeout_ms), "the viewer asked nothing"
        identity, *request = self.query.recv_multipart()
        self.query.send_multipart([identity, *reply])
        return request

    def close(self) -> None:
        self.pub.close()
        self.query.close()
        self.ctx.term()


class ViewerRun:
    def __init__(self, tmp: Path) -> None:
        self.home = Home(make_home(tmp, SAMPLE_CLIP, users=()))
        self.store = MaliciousStore(self.home)
        self.client = RelayClient(self.home)
        self.side = _side(_camera_of(self.home))
        env = self.side.envelope
        deadline = time.monotonic() + 20
        while (env.camera_id, env.body.epoch_id) not in self.client.envelopes:
            assert time.monotonic() < deadline, "the viewer never subscribed"
            self.store.pub.send_multipart(env.to_parts())
            self.client.receive(timeout_ms=100)

    def deliver(self, parts: list[bytes]) -> tuple[list, int]:
        """Publish ``parts`` then a good next frame; what the viewer made of both."""
        sentinel = self.side.frame()
        rejected = self.client.rejected
        self.store.pub.send_multipart(parts)
        self.store.pub.send_multipart(sentinel.to_parts())
        got = self.until(sentinel)
        assert got[-1].verified, got[-1].problem
        return got[:-1], self.client.rejected - rejected

    def until(self, last: FrameMessage, timeout: float = 60) -> list:
        """Every frame the viewer hands out, up to and including ``last``. (``receive`` also
        returns None when it dropped a message and nothing else was there yet.)"""
        got: list = []
        deadline = time.monotonic() + timeout
        while not got or got[-1].msg.header_bytes != last.header_bytes:
            assert time.monotonic() < deadline, f"the viewer never showed #{last.header.seq}"
            frame = self.client.receive(timeout_ms=200)
            if frame is not None:
                got.append(frame)
        return got

    def close(self) -> None:
        self.client.close()
        self.store.close()


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    run = ViewerRun(tmp_path_factory.mktemp("tamper-viewer"))
    try:
        yield run
    finally:
        run.close()


@pytest.mark.parametrize("case", case_params("viewer"))
def test_viewer_rejects_tampered_message(viewer: ViewerRun, case) -> None:
    envelopes = dict(viewer.client.envelopes)
    shown, rejected = viewer.deliver(case.make(viewer.side))
    assert rejected == 1
    if case.viewer == DROPPED:
        assert shown == []
    else:
        assert len(shown) == 1 and not shown[0].verified
        assert shown[0].problem.startswith(case.viewer + ":"), shown[0].problem
    assert viewer.client.envelopes == envelopes  # no tampered envelope was taken


def test_viewer_rejects_replayed_reordered_and_forked_frames(viewer: ViewerRun) -> None:
    side = viewer.side
    a = side.frame()
    shown, rejected = viewer.deliver(a.to_parts())
    assert [f.verified for f in shown] == [True] and rejected == 0
    # the same frame again (a viewer has no "duplicate": the store never relays one twice)
    shown, rejected = viewer.deliver(a.to_parts())
    assert rejected == 1 and len(shown) == 1 and shown[0].problem.startswith("replay:"), shown
    # reordered: #n+2 (a gap: shown), then #n+1
    b, c = side.frame(), side.frame()
    shown, _ = viewer.deliver(c.to_parts())
    assert [f.verified for f in shown] == [True]
    shown, rejected = viewer.deliver(b.to_parts())
    assert rejected == 1 and shown[0].problem.startswith("replay:"), shown
    # a fork: #last+1 that does not link to #last
    side.cam.prev = bytes(range(32))
    shown, rejected = viewer.deliver(side.frame().to_parts())
    assert rejected == 1 and shown[0].problem.startswith("chain_break:"), shown


def _flip_last(data: bytes) -> bytes:
    """``data`` with its last byte changed (XOR 1: never the byte it already was)."""
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            lambda env, other: [b"OK", _flip_last(env.body_bytes), env.signature],
            id="tampered-body",
        ),
        pytest.param(lambda env, other: [b"OK", env.body_bytes, bytes(64)], id="zeroed-signature"),
        pytest.param(
            lambda env, other: [b"OK", *other.body_parts()], id="another-epochs-valid-envelope"
        ),
        pytest.param(lambda env, other: [b"OK"], id="no-body"),
        pytest.param(lambda env, other: [b"OK", b"\xff" * 200, b"x" * 64], id="garbage"),
        pytest.param(lambda env, other: [b"ERR", b"no key envelope for that epoch"], id="refusal"),
    ],
)
def test_viewer_refuses_envelopes_a_malicious_store_answers(viewer: ViewerRun, reply) -> None:
    """Unlocking needs the epoch's envelope; when the viewer asks the store for it (ENVELOPE),
    a forged, swapped or broken answer gives no keys, and nothing is cached."""
    cam = viewer.side.cam
    env, other = (Epoch.new().envelope(cam.key, "cam1", 0, cam.grants()) for _ in range(2))
    result: list = []
    thread = threading.Thread(
        target=lambda: result.append(viewer.client.envelope("cam1", env.body.epoch_id))
    )
    thread.start()
    request = viewer.store.answer(reply(env, other))
    thread.join(timeout=60)
    assert request == [b"ENVELOPE", b"cam1", env.body.epoch_id]
    assert result == [None]
    assert ("cam1", env.body.epoch_id) not in viewer.client.envelopes


def _play(viewer: ViewerRun, answers: list[list[bytes]]) -> tuple[list, list]:
    """Archive playback (``ArchiveReader.frames``) against the malicious store's answers."""
    from veilcam.common.errors import VeilcamError

    reader = ArchiveReader(viewer.home, "cam1", 0)
    out: list = []
    errors: list = []

    def play() -> None:
        try:
            out.extend(reader.frames())
        except VeilcamError as exc:
            errors.append(exc)

    thread = threading.Thread(target=play)
    thread.start()
    try:
        for answer in answers:
            assert viewer.store.answer(answer)[0] == b"RANGE"
    finally:
        thread.join(timeout=60)
        reader.close()
    assert not thread.is_alive()
    return out, errors


def test_playback_refuses_frames_a_malicious_store_serves(viewer: ViewerRun) -> None:
    """Archive playback (RANGE answers, verified at capture time): tampered frames come out
    unverified with their reason, a frame dated beyond year 9999 is refused (it crashed
    playback before), the same batch served again ends playback instead of looping for ever,
    and a malformed frame ends it with a clean error."""
    cam = viewer.side.cam
    first = viewer.side.frame().to_parts()
    bad_sig = viewer.side.frame().to_parts()
    bad_sig[2] = bytes(64)
    far = viewer.side.frame()
    hdr = bytearray(far.header_bytes)
    hdr[15 + 4 : 23 + 4] = (2**62).to_bytes(8, "big")  # capture_time_us (docs/FORMAT.md)
    far_parts = [far.to_parts()[0], bytes(hdr), cam.key.sign(bytes(hdr)), *far.body_parts()[2:]]
    last = viewer.side.frame().to_parts()
    batch = [b"OK", *(pack_parts(b"F", p[1:]) for p in (first, bad_sig, far_parts, last))]
    out, errors = _play(viewer, [batch, batch])
    assert [f.verified for f in out] == [True, False, False, True]
    assert out[1].problem.startswith("bad_signature:")
    assert out[2].problem.startswith("bad_timestamp:")
    assert len(errors) == 1 and "when asked for frames after" in str(errors[0])
    out, errors = _play(viewer, [[b"OK", pack_parts(b"F", [b"not a header", b"x" * 64, b""])]])
    assert out == [] and len(errors) == 1 and "malformed archived frame" in str(errors[0])


def _every_byte_flipped(side: Side) -> list[list[bytes]]:
    """The base frame with one byte changed, for every byte of the header and the signature
    and the first and last byte of the image and of each zone ciphertext."""
    p = side.base.to_parts()
    out = []
    for index in range(1, len(p)):
        positions = range(len(p[index])) if index in (1, 2) else {0, len(p[index]) - 1}
        for pos in positions:
            flipped = list(p)
            flipped[index] = p[index][:pos] + bytes([p[index][pos] ^ 0x20]) + p[index][pos + 1 :]
            out.append(flipped)
    return out


FLIP_REASONS = {
    "malformed",
    "bad_signature",
    "image_hash_mismatch",
    "zone_hash_mismatch",
    "wrong_camera_identity",
    "unknown_camera",
}


def test_store_rejects_every_single_byte_flip(store: StoreRun) -> None:
    flips = _every_byte_flipped(store.side)
    before = scrape_rejects(store.metrics_port)
    for parts in flips:
        store.dealer.send_multipart(parts)
    good = store.side.frame()
    store.dealer.send_multipart(good.to_parts())
    while True:  # answers come in order: REJECTED for each nameable flip, then STORED
        assert store.dealer.poll(30000), "the store did not answer"
        ack = Ack.from_parts(store.dealer.recv_multipart())
        if ack.status != AckStatus.REJECTED:
            assert ack.status == AckStatus.STORED and ack.seq == good.header.seq
            break
    store.accepted.append(good.header.seq)
    counted = scrape_rejects(store.metrics_port) - before
    assert sum(counted.values()) == len(flips) and set(counted) <= FLIP_REASONS, counted
    store.expected.update(counted)


def test_viewer_rejects_every_single_byte_flip(viewer: ViewerRun) -> None:
    flips = _every_byte_flipped(viewer.side)
    for i in range(0, len(flips), 50):  # in batches: the viewer's receive queue holds 200
        batch = flips[i : i + 50]
        sentinel = viewer.side.frame()
        rejected = viewer.client.rejected
        for parts in batch:
            viewer.store.pub.send_multipart(parts)
        viewer.store.pub.send_multipart(sentinel.to_parts())
        shown = viewer.until(sentinel)
        assert [f.verified for f in shown] == [False] * (len(shown) - 1) + [True]
        assert viewer.client.rejected - rejected == len(batch)


def test_store_counted_every_rejection_archived_and_relayed_nothing_bad(store: StoreRun) -> None:
    """Runs last in this module: stops the store and checks its end-of-run counters, its log,
    its archive (``veilcam verify``) and what it relayed."""
    store.drain_relay()
    store.procs.stop_all()
    stats = json.loads(store.stats.read_text())
    assert Counter(stats["rejects"]) == store.expected
    assert stats["accepted"]["frame"] == len(store.accepted)
    log = store.procs.log("store")
    assert "Traceback" not in log
    # nothing rejected was relayed (the first frame may predate the relay subscription)
    assert set(store.relayed) <= set(store.accepted)
    assert set(store.accepted[1:]) <= set(store.relayed)
    r = run_cli("verify", str(store.home.root), "--json")
    report = json.loads(r.stdout)
    assert report["cameras"][0]["frames"] == len(store.accepted), r.stdout
    # every frame verifies; the only findings are the sequence numbers the rows burnt
    assert {p["kind"] for p in report["problems"]} <= {"gap"}, r.stdout
