"""The store process under hostile input : a message above its ZeroMQ MAXMSGSIZE, a
long stream of bad messages, and malformed queries. It must drop what it cannot take, answer
what it can, stay up, keep accepting good frames, and not grow without bound (VmRSS from
/proc/PID/status, with generous limits: the point is "not proportional to what was sent")."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import zmq
from veilcam.camera_node.protect import sign_gap_notice
from veilcam.common import deployment
from veilcam.common.format import Ack, AckStatus, FrameMessage
from veilcam.common.home import Home
from veilcam.common.transport import curve_pair, make_client
from zmq.utils.monitor import recv_monitor_message

from tests.conftest import SAMPLE_CLIP, Procs, make_home
from tests.factory import Camera
from tests.security.tamperlib import frame_now
from tests.security.test_tampering import _camera_of

pytestmark = pytest.mark.e2e

INGEST_MAXMSGSIZE = 256 * 2**20  # store_node/node.py
QUERY_MAXMSGSIZE = 64 * 2**10  # per part; whole queries: 8 parts, 256 KiB


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class Store:
    def __init__(self, tmp: Path) -> None:
        self.home = Home(make_home(tmp, SAMPLE_CLIP, users=()))
        self.procs = Procs(tmp)
        self.proc = self.procs.start_ready("store", "store", "--home", str(self.home.root))
        self.cam = _camera_of(self.home)
        # a context of its own: an oversized message or a dropped connection here must not
        # hold up the shared context that later in-process tests use
        self.ctx = zmq.Context()
        self.dealer = self.socket(
            "camera", "cam1", deployment.store_config(self.home).store.ingest_bind
        )
        self.query = self.socket(
            "viewer", "viewer", deployment.viewer_config(self.home).viewer.query
        )
        assert self.send(self.cam.envelope().to_parts()).status == AckStatus.STORED

    def socket(self, role: str, name: str, endpoint: str | None, **options) -> zmq.Socket:
        """A CURVE client socket as ``role:name``, connected to ``endpoint`` if given."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        for option, value in options.items():
            sock.setsockopt(getattr(zmq, option), value)
        make_client(
            sock,
            curve_pair(deployment.transport_key(self.home, role, name)),
            deployment.store_identity(self.home).transport_key,
        )
        if endpoint:
            sock.connect(endpoint)
        return sock

    def send(self, parts: list[bytes]) -> Ack:
        self.dealer.send_multipart(parts)
        assert self.dealer.poll(30000), "the store did not answer"
        return Ack.from_parts(self.dealer.recv_multipart())

    def good_frame_is_stored(self) -> None:
        """A genuine next frame is archived: drains earlier answers until its own."""
        msg = frame_now(self.cam)
        self.dealer.send_multipart(msg.to_parts())
        deadline = time.monotonic() + 60
        while True:
            assert self.dealer.poll(max(1, int((deadline - time.monotonic()) * 1000))), (
                "the store stopped answering"
            )
            ack = Ack.from_parts(self.dealer.recv_multipart())
            if ack.kind == b"F" and ack.seq == msg.header.seq:
                assert ack.status == AckStatus.STORED, ack
                return

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.dealer.close()
        self.query.close()
        self.ctx.destroy(linger=0)
        self.procs.stop_all()


@contextmanager
def running_store(tmp_path_factory, name: str):
    """A store process with a genuine frame already stored; closed (and its log checked for
    tracebacks) at the end. Module fixtures of the security tests share it."""
    s = Store(tmp_path_factory.mktemp(name))
    try:
        s.good_frame_is_stored()
        yield s
    finally:
        s.close()
        assert "Traceback" not in s.procs.log("store"), s.procs.log("store")[-3000:]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with running_store(tmp_path_factory, "robust") as s:
        yield s


def test_oversized_message_drops_the_connection_and_the_store_stays_up(store: Store) -> None:
    before = rss_bytes(store.proc.pid)
    # one connection (no reconnection), so its end is observable; monitored before it connects
    big = store.socket("camera", "cam1", None, RECONNECT_IVL=-1)
    monitor = big.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    big.connect(deployment.store_config(store.home).store.ingest_bind)
    try:
        events: list[int] = []

        def wait_for(event: int, timeout: float = 120) -> None:
            deadline = time.monotonic() + timeout
            while event not in events:
                assert time.monotonic() < deadline, f"no monitor event {event}: {events}"
                if monitor.poll(200):
                    events.append(recv_monitor_message(monitor)["event"])

        wait_for(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        payload = bytes(INGEST_MAXMSGSIZE + 1)
        big.send_multipart([b"cam1\x00F", payload], copy=False)
        del payload
        wait_for(zmq.EVENT_DISCONNECTED)  # the store hung up on the oversized message
    finally:
        monitor.close()
        big.close()
    assert store.alive()
    store.good_frame_is_stored()
    grown = rss_bytes(store.proc.pid) - before
    assert grown < 64 * 2**20, f"the store grew by {grown / 2**20:.0f} MiB"


def _bad_messages(cam: Camera, good: FrameMessage) -> list[list[bytes]]:
    """One of each way to be refused, most of them large."""
    p = good.to_parts()
    big_image = bytes(os.urandom(256 * 1024))
    forged = [p[0], p[1], bytes(64), *p[3:]]
    stranger = Camera("cam1")
    env = cam.envelope().to_parts()
    return [
        forged,  # bad_signature
        [p[0], p[1], p[2], big_image, *p[4:]],  # malformed: image length
        [p[0], b"VCFH" + os.urandom(200), p[2], big_image],  # malformed
        [b"\xff" * 16, os.urandom(512 * 1024)],  # malformed: no topic
        [p[0], p[1], p[2], p[3], p[4]],  # malformed: zone missing
        stranger.frame().to_parts(),  # bad_signature (320x240)
        Camera("ghost").frame().to_parts(),  # wrong_camera_identity
        [env[0], env[1], bytes(64)],  # bad_signature envelope
        [env[0], env[1][:-3], env[2]],  # malformed envelope
        sign_gap_notice(stranger.key, "cam1", 1, 3).to_parts(),  # bad_signature gap
        [b"cam1\x00F"] + [b""] * 2000,  # malformed: 2000 parts
        p,  # replay of an old frame
    ]


def test_a_stream_of_bad_messages_does_not_grow_the_store(store: Store) -> None:
    cam = store.cam
    old = frame_now(cam)
    store.dealer.send_multipart(old.to_parts())
    store.good_frame_is_stored()

    def round_of(n: int) -> None:
        bad = _bad_messages(cam, old)
        for i in range(n):
            store.dealer.send_multipart(bad[i % len(bad)])
            if i % 100 == 99:
                store.good_frame_is_stored()  # in step with the store, and proof it still works
        store.good_frame_is_stored()

    round_of(240)  # warm-up: first allocations, log buffers, SQLite caches
    settled = rss_bytes(store.proc.pid)
    for _ in range(3):
        round_of(600)
    grown = rss_bytes(store.proc.pid) - settled
    # 1800 bad messages carried about 150 MB; a store keeping any of them would show it
    assert grown < 40 * 2**20, f"the store grew by {grown / 2**20:.0f} MiB"
    assert store.alive()


QUERIES = {
    "range-from-10^31": [b"RANGE", b"cam1", b"1" + b"0" * 31, b"-1", b"5"],
    "range-after-10^23": [b"RANGE", b"cam1", b"0", b"1" + b"0" * 23, b"5"],
    "range-limit-10^30": [b"RANGE", b"cam1", b"0", b"-1", b"9" * 30],
    "range-nan": [b"RANGE", b"cam1", b"nan", b"-1", b"5"],
    "range-negative": [b"RANGE", b"cam1", b"-5", b"-7", b"-1"],
    "range-not-ascii-camera": [b"RANGE", b"\xff\xfe", b"0", b"-1", b"5"],
    "range-too-few-parts": [b"RANGE", b"cam1"],
    "coverage-huge": [b"COVERAGE", b"cam1", b"0", b"1" + b"0" * 30, b"10"],
    "coverage-too-many-buckets": [b"COVERAGE", b"cam1", b"0", b"10", b"100000000"],
    "coverage-negative-buckets": [b"COVERAGE", b"cam1", b"10", b"0", b"-1"],
    "span-not-ascii": [b"SPAN", b"\xff"],
    "envelope-missing-epoch": [b"ENVELOPE", b"cam1"],
    "envelope-huge-epoch": [b"ENVELOPE", b"cam1", b"x" * 60_000],
    "salt-not-utf8": [b"SALT", b"\xff\xfe"],
    "register-not-json": [b"REGISTER", b"bob", b"x" * 32, b"{not json"],
    "register-not-utf8": [b"REGISTER", b"bob", b"x" * 32, b"\xff"],
    "register-bad-name": [b"REGISTER", b"../etc", b"x" * 32, b"{}"],
    "login-empty-secret": [b"LOGIN", b"alice", b""],
    "grants-of-another-camera": [b"GRANTS", b"cam1"],
    "grants-glob": [b"GRANTS", b"*"],
    "unknown-command": [b"EXPORT"],
    "empty-command": [b""],
}


@pytest.mark.parametrize("query", [pytest.param(q, id=k) for k, q in QUERIES.items()])
def test_malformed_query_is_answered_and_the_store_stays_up(store: Store, query) -> None:
    store.query.send_multipart(query)
    assert store.query.poll(30000), "no answer: the store died or hung"
    reply = store.query.recv_multipart()
    assert reply[0] in (b"OK", b"ERR"), reply[:2]
    assert store.alive()


def test_query_above_its_size_limit_is_dropped_and_queries_still_work(store: Store) -> None:
    big = store.socket("viewer", "viewer", deployment.viewer_config(store.home).viewer.query)
    try:
        big.send_multipart([b"SALT", bytes(QUERY_MAXMSGSIZE + 1)])
        assert not big.poll(1500)  # dropped, not answered
        # above the whole-query caps: dropped unanswered too, never read whole
        store.query.send_multipart([b"RANGE"] * 1000)
        assert not store.query.poll(1500)
    finally:
        big.close()
    store.query.send_multipart([b"SPAN", b"cam1"])
    assert store.query.poll(30000)
    reply = store.query.recv_multipart()
    assert reply[0] == b"OK" and int(reply[3]) >= 1
    assert store.alive()
