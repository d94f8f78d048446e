"""Certificates and the encrypted transport: revoked or expired cameras are refused, viewers
refuse a store of another deployment, and peers without certified CURVE keys get nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from veilcam.common import deployment
from veilcam.common.errors import VerificationError
from veilcam.common.format import KemSuite, ZoneClass
from veilcam.common.home import Home
from veilcam.common.keywrap import Grant, Identity, Recipient
from veilcam.common.pki import create_ca, issue_node_cert
from veilcam.common.transport import curve_pair, make_client

from tests.conftest import SAMPLE_CLIP, make_home, run_cli
from tests.factory import Camera

pytestmark = pytest.mark.e2e


def _wait_log(procs, name: str, text: str, timeout: float = 20) -> None:
    procs.wait_for_log(name, text, timeout)


def test_frames_from_a_revoked_camera_certificate_are_rejected(tmp_path: Path, procs) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    procs.start_ready("store", "store", "--home", str(home))
    procs.start_ready("camera", "camera", "--home", str(home), "--loop")
    time.sleep(1.0)
    r = run_cli("cert", "revoke", "camera:cam1", "--home", str(home))
    assert r.returncode == 0, r.stderr
    _wait_log(procs, "camera", "store rejected frame")
    assert "is revoked" in procs.log("camera")
    assert "1 revoked certificate(s)" in procs.log("store")


def test_frames_after_the_camera_certificate_expired_are_rejected(tmp_path: Path, procs) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    # valid for 30 s: long enough to start up on a loaded machine, short enough to wait out
    r = run_cli("cert", "issue", "camera:cam1", "--home", str(home), "--days", str(30 / 86400))
    assert r.returncode == 0, r.stderr
    procs.start_ready("store", "store", "--home", str(home))
    procs.start_ready("camera", "camera", "--home", str(home), "--loop")
    _wait_log(procs, "camera", "store rejected frame", timeout=90)
    assert "expired" in procs.log("camera")
    assert "certificate_expired" in procs.log("store")


def test_viewer_refuses_a_store_of_another_deployment(tmp_path: Path, procs) -> None:
    ours = make_home(tmp_path / "ours", SAMPLE_CLIP)
    theirs = make_home(tmp_path / "theirs", SAMPLE_CLIP)
    procs.start_ready("store", "store", "--home", str(theirs))
    viewer_toml = ours / "config" / "viewer.toml"
    their_cfg = deployment.viewer_config(Home(theirs)).viewer
    text = viewer_toml.read_text()
    for key, value in (("relay", their_cfg.relay), ("query", their_cfg.query)):
        start = text.index(f"{key} = ")
        end = text.index("\n", start)
        text = text[:start] + f'{key} = "{value}"' + text[end:]
    viewer_toml.write_text(text)
    started = time.monotonic()
    r = run_cli(
        "view",
        "--home",
        str(ours),
        "--headless",
        "--out",
        str(tmp_path / "o"),
        "--frames",
        "1",
        "--timeout",
        "30",
        timeout=40,
    )
    assert r.returncode == 2 and "cannot authenticate the store" in r.stderr, r.stderr
    assert time.monotonic() - started < 25  # a clear error, not a hang


def test_peers_without_certified_keys_cannot_publish_or_subscribe(tmp_path: Path, procs) -> None:
    home = Home(make_home(tmp_path, SAMPLE_CLIP))
    procs.start_ready("store", "store", "--home", str(home.root))
    store_cfg = deployment.store_config(home).store
    store_key = deployment.store_identity(home).transport_key
    ctx = zmq.Context.instance()
    stranger = curve_pair(X25519PrivateKey.generate())
    socks = []
    try:
        # a stranger's CURVE key on the ingest socket: the frame never arrives
        pub = ctx.socket(zmq.DEALER)
        make_client(pub, stranger, store_key)
        plain = ctx.socket(zmq.DEALER)  # and without CURVE at all
        sub = ctx.socket(zmq.SUB)
        make_client(sub, stranger, store_key)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        socks += [pub, plain, sub]
        for s in socks:
            s.setsockopt(zmq.LINGER, 0)
        pub.connect(store_cfg.ingest_bind)
        plain.connect(store_cfg.ingest_bind)
        sub.connect(store_cfg.relay_bind)
        frame = Camera("cam1").frame().to_parts()
        for s in (pub, plain):
            try:
                s.send_multipart(frame, flags=zmq.NOBLOCK)
            except zmq.Again:
                pass  # no authenticated pipe to queue on: refused before anything is sent
        assert not pub.poll(1500) and not plain.poll(500)
        procs.start("camera", "camera", "--home", str(home.root), "--max-frames", "10")
        assert not sub.poll(4000), "a stranger received relayed frames"
        log = procs.log("store")
        assert "rejected" not in log.replace("rejected: none", "")  # never got in to be judged
    finally:
        for s in socks:
            s.close(linger=0)


def test_certificate_checks_name_the_failure(tmp_path: Path) -> None:
    from veilcam.common.pki import CertificateAuthority

    ca_key, ca_cert = create_ca()
    other_key, _ = create_ca("other")
    signing = Camera().key
    transport = X25519PrivateKey.generate().public_key()
    ca = CertificateAuthority(ca_cert)
    good = issue_node_cert(ca_key, ca_cert, "camera", "door", signing.public_key(), transport)
    assert ca.verify_node(good, "camera").name == "door"
    with pytest.raises(VerificationError, match="not a store certificate"):
        ca.verify_node(good, "store")
    forged = issue_node_cert(other_key, ca_cert, "camera", "door", signing.public_key(), transport)
    with pytest.raises(VerificationError, match="not issued by the deployment CA"):
        ca.verify_node(forged)
    expired = issue_node_cert(
        ca_key,
        ca_cert,
        "camera",
        "door",
        signing.public_key(),
        transport,
        days=1 / 86400,
        not_before=None,
    )
    time.sleep(1.2)
    with pytest.raises(VerificationError, match="expired"):
        ca.verify_node(expired)


def test_post_quantum_envelope_opens_only_with_the_hybrid_key() -> None:
    from cryptography.hazmat.primitives.asymmetric import mlkem

    cam = Camera()
    x, m = X25519PrivateKey.generate(), mlkem.MLKEM768PrivateKey.generate()
    user = Identity("pq-user", x, m)
    classic_only = Identity("old-user", X25519PrivateKey.generate())
    grants = [
        Grant(Recipient("pq-user", x.public_key(), m.public_key()), frozenset(ZoneClass)),
        Grant(Recipient("old-user", classic_only.private_key.public_key()), frozenset(ZoneClass)),
    ]
    env = cam.epoch.envelope(
        cam.key, "cam1", 0, grants, KemSuite.MLKEM768X25519_HKDF_SHA256_AES256GCM
    )
    assert env.body.suite == KemSuite.MLKEM768X25519_HKDF_SHA256_AES256GCM
    assert user.unwrap_envelope(env.body) == cam.epoch.class_keys
    assert {e.recipient_key_id for e in env.body.entries} == {user.key_id}
    assert all(len(e.sealed) > 1000 for e in env.body.entries)  # ML-KEM ciphertext inside
