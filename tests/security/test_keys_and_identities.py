"""Wrong keys and identities, filling the gaps left by the existing tests:

- already proven elsewhere: wrong password for an offline keystore
  (tests/test_cli.py::test_wrong_password_for_offline_keystore_fails_clearly); wrong password
  and unknown user get one answer (tests/test_accounts.py, in-process log-in); a camera
  certificate revoked or expired *while connected* gets its frames rejected
  (tests/test_identities.py); the viewer refuses a store of another deployment and strangers'
  CURVE keys get nothing (tests/test_identities.py); a camera key sending frames of an
  unknown camera id (tests/test_store_node.py, the "ghost" frame).
- here: wrong password through the CLI at a running store; every kind of wrong keystore file;
  revoked and expired certificates refused at the handshake (camera, viewer) and a revoked
  or expired *store* certificate refused by its clients; a second, trusted camera speaking
  for the first; a camera and ``register`` pointed at another deployment's store.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zmq
from veilcam.camera_node.protect import Epoch, sign_gap_notice
from veilcam.common import deployment as loaded
from veilcam.common.format import Ack, AckStatus
from veilcam.common.home import Home
from veilcam.common.keystore import create_keystore
from veilcam.common.signing import TrustedCameras, load_signing_key
from veilcam.common.transport import curve_pair, make_client

from tests.conftest import PASSWORD, SAMPLE_CLIP, Procs, make_home, run_cli
from tests.factory import Camera
from tests.security.tamperlib import frame_now

pytestmark = pytest.mark.e2e

REFUSED_BY_STORE = "refused this node's key"
NOT_THE_STORE = "cannot authenticate the store"


def one_error(r: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """The run failed with ``code``, no traceback, one error line holding every needle."""
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [x for x in r.stderr.splitlines() if "error:" in x]
    assert len(lines) == 1, r.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def parallel(jobs: dict[str, tuple]) -> dict[str, subprocess.CompletedProcess]:
    """Run CLI invocations side by side: {name: (args, stdin)}."""
    with ThreadPoolExecutor(3) as pool:
        futures = {
            k: pool.submit(run_cli, *args, stdin=stdin, timeout=90)
            for k, (args, stdin) in jobs.items()
        }
        return {k: f.result() for k, f in futures.items()}


def point_at(home: Path, other: Home, camera: bool = True, viewer: bool = True) -> None:
    """Make ``home``'s camera and viewer talk to the endpoints of ``other``'s store."""
    store = loaded.store_config(other).store
    targets = []
    if camera:
        targets += [("camera", "ingest", store.ingest_bind), ("camera", "query", store.query_bind)]
    if viewer:
        targets += [("viewer", "relay", store.relay_bind), ("viewer", "query", store.query_bind)]
    for name, key, value in targets:
        path = home / "config" / f"{name}.toml"
        lines = path.read_text().splitlines()
        lines = [f'{key} = "{value}"' if line.startswith(f"{key} = ") else line for line in lines]
        path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- one deployment


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """Home with user alice and a second trusted camera, cam2; its store running."""
    tmp = tmp_path_factory.mktemp("identities")
    home = Home(make_home(tmp, SAMPLE_CLIP))
    r = run_cli("cert", "issue", "camera:cam2", "--home", str(home.root))
    assert r.returncode == 0, r.stderr
    procs = Procs(tmp)
    stats = tmp / "store-stats.json"
    try:
        procs.start_ready("store", "store", "--home", str(home.root), "--stats-out", str(stats))
        yield {"home": home, "tmp": tmp, "procs": procs, "stats": stats}
    finally:
        procs.stop_all()


def test_wrong_password_at_a_running_store_is_one_clear_error(deployment) -> None:
    home, tmp = str(deployment["home"].root), deployment["tmp"]
    view = (
        "view",
        "--home",
        home,
        "--headless",
        "--out",
        str(tmp / "out"),
        "--frames",
        "1",
        "--timeout",
        "20",
        "--password-stdin",
    )
    results = parallel(
        {
            "view-wrong-password": ((*view, "--user", "alice"), "not the password at all\n"),
            "view-unknown-user": ((*view, "--user", "nobody"), PASSWORD + "\n"),
            "export-wrong-password": (
                (
                    "export",
                    "--home",
                    home,
                    "--camera",
                    "cam1",
                    "--from",
                    "start",
                    "--to",
                    "2100-01-01",
                    "--out",
                    str(tmp / "x.mp4"),
                    "--user",
                    "alice",
                    "--password-stdin",
                ),
                "not the password at all\n",
            ),
        }
    )
    for name, r in results.items():
        one_error(r, "wrong user name or password")
        assert PASSWORD not in r.stderr + r.stdout, name
    assert not (tmp / "out").exists() and not (tmp / "x.mp4").exists()


def test_a_stranger_key_is_refused_on_the_query_socket(deployment) -> None:
    """tests/test_identities.py covers ingest and relay; the query socket (log-in, envelopes,
    grants, archive) refuses a CURVE key without a certificate at the handshake, too."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from zmq.utils.monitor import recv_monitor_message

    home: Home = deployment["home"]
    ctx = zmq.Context()  # its own: a failed handshake here must not touch the shared one
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    make_client(
        sock, curve_pair(X25519PrivateKey.generate()), loaded.store_identity(home).transport_key
    )
    monitor = sock.get_monitor_socket(
        zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )
    try:
        sock.connect(loaded.store_config(home).store.query_bind)
        sock.send_multipart([b"SALT", b"alice"])
        assert monitor.poll(30000), "no handshake outcome"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert not sock.poll(500)
    finally:
        monitor.close()
        sock.close()
        ctx.destroy(linger=0)


def test_a_trusted_camera_cannot_speak_for_another(deployment) -> None:
    """cam2 holds a valid certificate, and here even cam1's signing key: the store still
    refuses whatever it sends in cam1's name, because its CURVE identity is camera:cam2."""
    home: Home = deployment["home"]
    ctx = zmq.Context()  # its own, destroyed at the end
    store_key = loaded.store_identity(home).transport_key
    socks = {}
    for name, endpoint in (
        ("ingest", loaded.store_config(home).store.ingest_bind),
        ("query", loaded.store_config(home).store.query_bind),
    ):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        make_client(sock, curve_pair(loaded.transport_key(home, "camera", "cam2")), store_key)
        sock.connect(endpoint)
        socks[name] = sock

    def ask(sock: zmq.Socket, parts: list[bytes]) -> list[bytes]:
        sock.send_multipart(parts)
        assert sock.poll(30000), "the store did not answer"
        return sock.recv_multipart()

    try:
        cam1 = Camera("cam1")
        cam1.key = load_signing_key(home.camera_key_path("cam1"))  # stolen, say
        cam1.trust = TrustedCameras({"cam1": cam1.key.public_key()})
        cam1.epoch = Epoch.new()
        for parts in (
            cam1.envelope().to_parts(),
            frame_now(cam1).to_parts(),
            sign_gap_notice(cam1.key, "cam1", 1, 2).to_parts(),
        ):
            ack = Ack.from_parts(ask(socks["ingest"], parts))
            assert ack.status == AckStatus.REJECTED, ack
            assert "camera:cam2 sent a message in the name of camera 'cam1'" in ack.reason
        cam2 = Camera("cam2")
        cam2.key = load_signing_key(home.camera_key_path("cam2"))
        cam2.epoch = Epoch.new()
        assert (
            Ack.from_parts(ask(socks["ingest"], cam2.envelope().to_parts())).status
            == AckStatus.STORED
        )
        assert (
            Ack.from_parts(ask(socks["ingest"], frame_now(cam2).to_parts())).status
            == AckStatus.STORED
        )
        # grants (who may unlock what) are served to their own camera only
        assert ask(socks["query"], [b"GRANTS", b"cam1"]) == [
            b"ERR",
            b"grants are served to their camera only",
        ]
        assert ask(socks["query"], [b"GRANTS", b"cam2"])[0] == b"OK"
    finally:
        for sock in socks.values():
            sock.close(linger=0)
        ctx.destroy(linger=0)
    deployment["procs"].stop_all()
    stats = json.loads(deployment["stats"].read_text())
    assert stats["rejects"].get("wrong_camera_identity") == 3, stats
    assert stats["accepted"]["frame"] == 1


def test_camera_and_register_refuse_a_store_of_another_deployment(tmp_path: Path, procs) -> None:
    """Their store is up; ours is pointed at it. Nothing of ours reaches it: the handshake
    fails on the store key pinned from our own store certificate."""
    theirs = Home(make_home(tmp_path / "theirs", SAMPLE_CLIP, users=()))
    ours = make_home(tmp_path / "ours", SAMPLE_CLIP)
    procs.start_ready("theirs", "store", "--home", str(theirs.root))
    point_at(ours, theirs)
    results = parallel(
        {
            "camera": (("camera", "--home", str(ours), "--max-frames", "2", "--no-pace"), None),
            "register": (
                ("register", "zoe", "--home", str(ours), "--password-stdin"),
                PASSWORD + "\n",
            ),
            "login": (
                (
                    "view",
                    "--home",
                    str(ours),
                    "--headless",
                    "--out",
                    str(tmp_path / "o"),
                    "--user",
                    "alice",
                    "--password-stdin",
                    "--timeout",
                    "20",
                ),
                PASSWORD + "\n",
            ),
        }
    )
    for r in results.values():
        one_error(r, NOT_THE_STORE)
    log = procs.log("theirs")
    # nothing of ours was even judged there: no registration, log-in or rejected message
    assert "registered" not in log and "log-in" not in log and "rejected " not in log, log
    assert "Traceback" not in log


# ----------------------------------------------------------------------------- keystore files


def _keystore_rows(tmp: Path, home: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    good = home / "users" / "alice" / "keystore.json"
    doc = json.loads(good.read_text())
    rows: dict[str, tuple[Path, tuple[str, ...]]] = {}

    def file(name: str, data: bytes | str | None, *expect: str) -> None:
        path = tmp / f"{name}.json"
        if data is not None:
            path.write_bytes(data.encode() if isinstance(data, str) else data)
        rows[name] = (path, expect)

    def edited(**changes) -> str:
        return json.dumps({**doc, **changes})

    file("missing", None, "not found")
    (tmp / "a-folder.json").mkdir()
    rows["a-folder"] = (tmp / "a-folder.json", ("unreadable",))
    file("empty", b"", "is missing or has a bad field")
    file("binary-garbage", bytes(range(256)) * 4, "unreadable")
    file(
        "a-grant-document",
        (home / "grants" / "alice@cam1.grant.json").read_bytes(),
        "not a version-1 veilcam keystore",
    )
    file(
        "a-pem-private-key",
        (home / "identities" / "camera" / "cam1.key.pem").read_bytes(),
        "is missing or has a bad field",
    )
    file("truncated", good.read_bytes()[:200], "is missing or has a bad field")
    file("user-renamed", edited(user="mallory"), "wrong password for user 'mallory'")
    file(
        "ciphertext-flipped", edited(ciphertext=doc["ciphertext"][:-6] + "AAAAA="), "wrong password"
    )
    file("public-key-swapped", edited(public_key=doc["pq_public_key"][:44]), "wrong password")
    file("kdf-cost-2^30", edited(kdf={**doc["kdf"], "n": 2**30}), "out-of-range scrypt")
    file("kdf-unknown", edited(kdf={**doc["kdf"], "name": "md5"}), "unsupported KDF")
    file("cipher-unknown", edited(cipher="ROT13"), "unsupported cipher")
    other = create_keystore(tmp / "bob.json", "bob", "an entirely different pass phrase")
    assert other
    rows["another-users-keystore"] = (tmp / "bob.json", ("wrong password for user 'bob'",))
    return rows


@pytest.fixture(scope="module")
def keystore_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keystores")
    home = make_home(tmp, SAMPLE_CLIP)
    rows = _keystore_rows(tmp, home)
    jobs = {
        name: (
            (
                "view",
                "--home",
                str(home),
                "--headless",
                "--out",
                str(tmp / f"out-{name}"),
                "--frames",
                "1",
                "--timeout",
                "5",
                "--keystore",
                str(path),
                "--password-stdin",
            ),
            PASSWORD + "\n",
        )
        for name, (path, _) in rows.items()
    }
    results = parallel(jobs)
    return {name: (results[name], rows[name][1], tmp / f"out-{name}") for name in rows}


KEYSTORE_ROWS = [
    "missing",
    "a-folder",
    "empty",
    "binary-garbage",
    "a-grant-document",
    "a-pem-private-key",
    "truncated",
    "user-renamed",
    "ciphertext-flipped",
    "public-key-swapped",
    "kdf-cost-2^30",
    "kdf-unknown",
    "cipher-unknown",
    "another-users-keystore",
]


@pytest.mark.parametrize("name", KEYSTORE_ROWS)
def test_wrong_keystore_file_is_one_clear_error(keystore_results, name: str) -> None:
    r, expect, out = keystore_results[name]
    one_error(r, *expect)
    assert not out.exists()  # nothing was written before the keys opened


# ----------------------------------------------------------------------------- certificates


def test_revoked_certificates_are_refused_at_the_handshake(tmp_path: Path, procs) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    view = (
        "view",
        "--home",
        str(home),
        "--headless",
        "--out",
        str(tmp_path / "o"),
        "--frames",
        "1",
        "--timeout",
        "20",
    )
    camera = ("camera", "--home", str(home), "--max-frames", "2", "--no-pace")
    for node in ("camera:cam1", "viewer:viewer"):
        assert run_cli("cert", "revoke", node, "--home", str(home)).returncode == 0
    procs.start_ready("store", "store", "--home", str(home))
    assert "2 revoked certificate(s)" in procs.log("store")
    results = parallel({"camera": (camera, None), "viewer": (view, None)})
    one_error(results["camera"], REFUSED_BY_STORE)
    one_error(results["viewer"], REFUSED_BY_STORE)
    # a revoked *store* certificate: its clients refuse it before sending anything
    assert run_cli("cert", "revoke", "store:store", "--home", str(home)).returncode == 0
    results = parallel({"camera": (camera, None), "viewer": (view, None)})
    for r in results.values():
        one_error(r, "refusing the store certificate", "revoked")


def test_expired_certificates_are_refused_at_the_handshake(tmp_path: Path, procs) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    view = (
        "view",
        "--home",
        str(home),
        "--headless",
        "--out",
        str(tmp_path / "o"),
        "--frames",
        "1",
        "--timeout",
        "20",
    )
    camera = ("camera", "--home", str(home), "--max-frames", "2", "--no-pace")
    short = str(2 / 86400)  # two seconds
    issued = parallel(
        {
            node: (("cert", "issue", node, "--home", str(home), "--days", short), None)
            for node in ("camera:cam1", "viewer:viewer")
        }
    )
    assert all(r.returncode == 0 for r in issued.values()), issued
    time.sleep(2.5)
    procs.start_ready("store", "store", "--home", str(home))
    assert "0 camera(s), 0 viewer(s)" in procs.log("store")  # both expired: not admitted
    results = parallel({"camera": (camera, None), "viewer": (view, None)})
    one_error(results["camera"], REFUSED_BY_STORE)
    one_error(results["viewer"], REFUSED_BY_STORE)
    # an expired *store* certificate (keys renewed for the clients, not for the store)
    for node in ("camera:cam1", "viewer:viewer"):
        assert run_cli("cert", "issue", node, "--home", str(home)).returncode == 0
    assert (
        run_cli("cert", "issue", "store:store", "--home", str(home), "--days", short).returncode
        == 0
    )
    time.sleep(2.5)
    results = parallel({"camera": (camera, None), "viewer": (view, None)})
    for r in results.values():
        one_error(r, "refusing the store certificate", "expired")
