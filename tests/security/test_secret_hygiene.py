"""Secret hygiene, beyond what is already proven elsewhere:

- already: key files and keystores are 0600 and the password is in no file after
  ``user add`` (tests/test_cli.py::test_secret_files_are_owner_only,
  tests/test_keystore.py); the password cannot be given as an argument
  (tests/test_cli.py::test_password_is_never_an_argument); the store's account files open
  nothing without the password (tests/test_accounts.py); no content key in the archive,
  accounts or grants (tests/test_access.py::test_no_content_key_on_the_store_disk); no
  plaintext zone pixels in the archive (tests/test_e2e.py).
- here, over a whole run with DEBUG logging (store, camera, ``user add``, ``register``,
  ``view --headless --user``, ``view --keystore``, ``export --user``): no password, login
  secret, sealing key, user private key or content key in any log, any CLI output, any file
  under the home (camera state and spool, grant cache, archive, accounts), the viewer's
  output or the evidence bundle; no password in the argv or environment of any of those
  processes (or their children) while they run; every file holding a secret is owner-only.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from veilcam.common import deployment
from veilcam.common.format import EnvelopeBody
from veilcam.common.home import Home
from veilcam.common.keystore import derive_secrets, keystore_kdf, open_keystore, parse_keystore
from veilcam.store_node.archive import Archive

from tests.conftest import SAMPLE_CLIP, Procs, make_home, run_cli

pytestmark = pytest.mark.e2e


def descendants(root: int) -> set[int]:
    """Every process below ``root`` (children, grandchildren...), from /proc/PID/task/*/children;
    only this test's own processes are looked at, nothing else on the machine."""
    found: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


class ProcScanner(threading.Thread):
    """Reads /proc/PID/cmdline and /proc/PID/environ of every process this test starts (and
    their children), over and over while it runs; remembers each one that showed a needle."""

    def __init__(self, needles: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.needles = needles
        self.hits: dict[int, bytes] = {}
        self.scans = 0
        self.pids_seen: set[int] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        root = os.getpid()
        while not self._halt.is_set():
            for pid in descendants(root):
                for name in ("cmdline", "environ"):
                    try:
                        data = Path(f"/proc/{pid}/{name}").read_bytes()
                    except OSError:
                        continue
                    self.pids_seen.add(pid)
                    if any(n in data for n in self.needles):
                        self.hits[pid] = data
            self.scans += 1
            self._halt.wait(0.01)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def encodings(secret: bytes) -> list[bytes]:
    """The forms a leaked secret would take in a file or a log line."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hygiene")
    # passwords of this run only, so no other process on the machine can hold them
    pw_dana, pw_erin = (f"hygiene {secrets.token_hex(8)} check" for _ in range(2))
    scanner = ProcScanner([pw_dana.encode(), pw_erin.encode()])
    scanner.start()
    home = Home(make_home(tmp, SAMPLE_CLIP, users=()))
    outputs: dict[str, str] = {}
    procs = Procs(tmp)
    try:
        r = run_cli(
            "-v",
            "user",
            "add",
            "dana",
            "--home",
            str(home.root),
            "--password-stdin",
            stdin=pw_dana + "\n",
        )
        assert r.returncode == 0, r.stderr
        outputs["user add"] = r.stdout + r.stderr
        procs.start_ready("store", "-v", "store", "--home", str(home.root))
        r = run_cli(
            "-v",
            "register",
            "erin",
            "--home",
            str(home.root),
            "--password-stdin",
            stdin=pw_erin + "\n",
        )
        assert r.returncode == 0, r.stderr
        outputs["register"] = r.stdout + r.stderr
        viewer = procs.start_ready(
            "viewer",
            "-v",
            "view",
            "--home",
            str(home.root),
            "--headless",
            "--out",
            str(tmp / "out-dana"),
            "--frames",
            "8",
            "--timeout",
            "60",
            "--user",
            "dana",
            "--password-stdin",
            stdin=pw_dana + "\n",
        )
        camera = procs.start("camera", "-v", "camera", "--home", str(home.root), "--loop")
        assert viewer.wait(timeout=90) == 0, procs.log("viewer")[-2000:]
        camera.terminate()
        camera.wait(timeout=20)
        r = run_cli(
            "-v",
            "view",
            "--home",
            str(home.root),
            "--headless",
            "--out",
            str(tmp / "out-erin"),
            "--frames",
            "2",
            "--from",
            "start",
            "--camera",
            "cam1",
            "--keystore",
            str(home.keystore_path("erin")),
            "--password-stdin",
            stdin=pw_erin + "\n",
        )
        assert r.returncode == 0, r.stderr
        outputs["view --keystore"] = r.stdout + r.stderr
        r = run_cli(
            "-v",
            "export",
            "--home",
            str(home.root),
            "--camera",
            "cam1",
            "--from",
            "start",
            "--to",
            "2100-01-01",
            "--out",
            str(tmp / "evidence.mp4"),
            "--user",
            "dana",
            "--password-stdin",
            stdin=pw_dana + "\n",
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        outputs["export"] = r.stdout + r.stderr
    finally:
        procs.stop_all()
        scanner.stop()
    yield {
        "home": home,
        "tmp": tmp,
        "passwords": {"dana": pw_dana, "erin": pw_erin},
        "outputs": outputs,
        "logs": {p.name: p.read_text() for p in tmp.glob("*.log")},
        "scanner": scanner,
    }


def _secrets_of(run) -> dict[str, bytes]:
    """Everything that must never be written down: passwords, what derives from them, the
    users' private keys, and the content keys of every archived epoch they can open."""
    home: Home = run["home"]
    found: dict[str, bytes] = {}
    identities = []
    for user, password in run["passwords"].items():
        found[f"{user} password"] = password.encode()
        doc = parse_keystore(home.keystore_path(user).read_text())
        derived = derive_secrets(password, keystore_kdf(doc))
        found[f"{user} login secret"] = derived.login_secret
        found[f"{user} sealing key"] = derived.sealing_key
        identity = open_keystore(home.keystore_path(user), password)
        identities.append(identity)
        found[f"{user} X25519 private key"] = identity.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        found[f"{user} ML-KEM seed"] = identity.pq_private_key.private_bytes_raw()
    archive = Archive(deployment.archive_dir(home))
    try:
        epochs = [e for (e,) in archive.db.execute("SELECT DISTINCT epoch FROM envelopes")]
        for epoch in epochs:
            body = EnvelopeBody.from_bytes(archive.envelope_parts("cam1", epoch)[0])
            for zone_class, key in identities[0].unwrap_envelope(body).items():
                found[f"content key {epoch.hex()[:8]}/{zone_class.label}"] = key
    finally:
        archive.close()
    assert sum(k.startswith("content key") for k in found) >= 5
    return found


def _everything_written(run) -> dict[str, bytes]:
    texts = {f"log {k}": v.encode() for k, v in run["logs"].items()}
    texts.update({f"output of {k}": v.encode() for k, v in run["outputs"].items()})
    for root in (
        run["home"].root,
        run["tmp"] / "out-dana",
        run["tmp"] / "out-erin",
        run["tmp"] / "evidence.mp4.bundle",
    ):
        for path in root.rglob("*"):
            if path.is_file():
                texts[str(path)] = path.read_bytes()
    texts["evidence.mp4"] = (run["tmp"] / "evidence.mp4").read_bytes()
    return texts


def test_no_secret_in_any_log_output_or_file(run) -> None:
    written = _everything_written(run)
    # the run did write what is scanned: state, spool, cache, archive, accounts, outputs
    names = "\n".join(written)
    for expected in (
        "state/camera-cam1.json",
        "state/grants-cam1.json",
        "archive/index.sqlite3",
        "accounts/accounts.sqlite3",
        "out-dana/frames.jsonl",
        "manifest.json",
    ):
        assert expected in names, expected
    assert "DEBUG" in run["logs"]["store.log"]  # the nodes ran at their most talkative
    for what, secret in _secrets_of(run).items():
        for form in encodings(secret):
            for where, data in written.items():
                assert form not in data, f"{what} found in {where}"


def test_no_password_in_any_process_argv_or_environment(run) -> None:
    scanner: ProcScanner = run["scanner"]
    assert scanner.scans > 20 and len(scanner.pids_seen) > 5
    assert scanner.hits == {}, {pid: data[:300] for pid, data in scanner.hits.items()}


def test_every_file_holding_a_secret_is_owner_only(run) -> None:
    home = run["home"].root
    secret_files = [
        *home.glob("identities/*/*.key.pem"),
        home / "identities/store/account-secret",
        *home.glob("users/*/keystore.json"),
        *home.glob("accounts/accounts.sqlite3*"),
        *home.glob("identities/ca/ca.key.pem"),
    ]
    assert len(secret_files) >= 9, secret_files
    for path in secret_files:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"
    # and the bundle exported for dana holds no key file at all
    bundle = run["tmp"] / "evidence.mp4.bundle"
    assert not [p for p in bundle.rglob("*") if "key" in p.name.lower()]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["unlocked_for"] == "dana"
