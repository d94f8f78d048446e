"""The camera's grant fetch never blocks: a store connection that libzmq dropped (after a
refused handshake, e.g. a camera started with new keys a moment before the store loaded their
certificate) once hung the camera forever in a blocking send, deaf to SIGTERM."""

from __future__ import annotations

import threading
from pathlib import Path

import zmq
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from veilcam.camera_node.grantsync import GrantSync
from veilcam.common.grants import GrantBook
from veilcam.common.pki import CertificateAuthority, create_ca
from veilcam.common.transport import curve_pair

from tests.conftest import free_port_base


class _NoQueueContext:
    """Sockets with ZMQ_IMMEDIATE: a DEALER without a live connection has nowhere to queue,
    as after libzmq gave up on a refused handshake."""

    def socket(self, kind: int) -> zmq.Socket:
        sock = zmq.Context.instance().socket(kind)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        return sock


def test_fetching_grants_without_a_connection_returns_instead_of_blocking(tmp_path: Path) -> None:
    _, ca_cert = create_ca()
    store_key = X25519PrivateKey.generate().public_key().public_bytes_raw()
    sync = GrantSync(
        _NoQueueContext(),
        f"tcp://127.0.0.1:{free_port_base(1)}",
        curve_pair(X25519PrivateKey.generate()),
        store_key,
        GrantBook(CertificateAuthority(ca_cert), "cam1"),
        tmp_path / "grants.json",
        poll_s=0.1,
    )
    result: list[bool] = []
    worker = threading.Thread(
        target=lambda: result.append(sync.fetch_now(timeout_s=0.5)), daemon=True
    )
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "fetch_now blocked on a store it is not connected to"
    assert result == [False]
    sync.poll()  # asking again later does not block either
    sync.close()
