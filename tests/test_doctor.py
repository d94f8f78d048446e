"""`veilcam doctor`: a good deployment passes; each kind of broken one names the failing check
and how to fix it, with exit code 1 and no traceback. Also the progress helper and -v.

The doctor runs in this process (``cli``); the tests that need a running store start it as a
process and are marked e2e."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import time
from pathlib import Path

import pytest
from veilcam.common import deployment
from veilcam.common.home import Home
from veilcam.common.progress import Progress

from tests.conftest import SAMPLE_CLIP, cli, make_home

LINE = re.compile(r"^(OK|WARN|FAIL) (\S+): (.+)$")


def doctor(home: Path, *extra: str) -> tuple[int, dict[str, tuple[str, str, str]], str]:
    """Run the doctor (text output); returns exit code, {check: (status, finding, fix)} and
    stderr. Checks that every line has the documented shape and every WARN/FAIL a fix."""
    r = cli("doctor", "--home", str(home), *extra)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stdout.splitlines()
    assert lines and lines[-1].startswith("doctor: "), r.stdout
    checks: dict[str, tuple[str, str, str]] = {}
    i = 0
    while i < len(lines) - 1:
        m = LINE.match(lines[i])
        assert m, f"not a check line: {lines[i]!r}\n{r.stdout}"
        status, check, finding = m.groups()
        fix = ""
        if status != "OK":
            assert lines[i + 1].startswith("  fix: ") and len(lines[i + 1]) > 10, r.stdout
            fix = lines[i + 1][len("  fix: ") :]
            i += 1
        checks[check] = (status, finding, fix)
        i += 1
    return r.returncode, checks, r.stderr


def failed(checks: dict[str, tuple[str, str, str]]) -> set[str]:
    return {name for name, (status, _, _) in checks.items() if status == "FAIL"}


def start_store(procs, home: Path) -> None:
    procs.start_ready("store", "store", "--home", str(home))


EVERY_CHECK = {
    "config/camera.toml",
    "config/store.toml",
    "config/viewer.toml",
    "layout",
    "permissions",
    "keys",
    "source",
    "model",
    "cert/ca",
    "crl",
    "cert/camera:cam1",
    "cert/store:store",
    "cert/viewer:viewer",
    "port/ingest",
    "port/relay",
    "port/query",
    "archive",
    "store/camera",
    "store/viewer",
    "trust",
    "clock",
}


@pytest.mark.e2e
def test_a_good_deployment_passes(tmp_path: Path, procs) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    start_store(procs, home)
    code, checks, _ = doctor(home)
    assert code == 0 and set(checks) == EVERY_CHECK, checks
    for name, (status, finding, fix) in checks.items():
        # the model is a WARN when ../shared has no YuNet (Haar fallback), or not the pinned one;
        # the one-home setup keeps the CA key beside the store: the accepted risk, said
        assert (
            status == "OK"
            or (name == "model" and status == "WARN")
            or (name == "keys" and status == "WARN" and "beside the store" in finding)
        ), (name, finding, fix)
    assert "extra" not in checks["keys"][1] and "no local node loads" not in checks["keys"][1]
    assert "running store" in checks["port/ingest"][1]
    assert "accepted by the store" in checks["store/viewer"][1]
    # machine-readable: the same verdicts
    r = cli("doctor", "--home", str(home), "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"] and doc["roles"] == ["camera", "store", "viewer"]
    assert {c["check"]: c["status"] for c in doc["checks"]} == {
        name: status for name, (status, _, _) in checks.items()
    }
    assert "store/viewer" in [c["check"] for c in doc["checks"]]


def _bad_config(home: Path, _tmp: Path) -> None:
    cfg = home / "config" / "camera.toml"
    cfg.write_text(cfg.read_text().replace('style = "solid"', 'style = "smear"'))


def _corrupt_cert(home: Path, _tmp: Path) -> None:
    (home / "identities" / "certs" / "camera-cam1.crt").write_text("-----BEGIN CERTIFICATE--\n")


def _missing_cert(home: Path, _tmp: Path) -> None:
    (home / "identities" / "certs" / "viewer-viewer.crt").unlink()


def _expired_cert(home: Path, _tmp: Path) -> None:
    r = cli("cert", "issue", "viewer:viewer", "--home", str(home), "--days", "0.00002")
    assert r.returncode == 0, r.stderr
    time.sleep(2)  # 0.00002 days = 1.7 s


def _world_readable(home: Path, _tmp: Path) -> None:
    (home / "identities" / "camera" / "cam1.key.pem").chmod(0o644)


BROKEN = [
    # (case, break it, store running?, the checks that must FAIL (exactly), words in finding)
    ("bad_config_value", _bad_config, True, {"config/camera.toml"}, "redaction.style"),
    (
        "corrupt_certificate",
        _corrupt_cert,
        True,
        {"cert/camera:cam1", "store/camera"},
        "not a readable PEM certificate",
    ),
    (
        "missing_certificate",
        _missing_cert,
        True,
        {"cert/viewer:viewer", "store/viewer"},
        "is missing",
    ),
    ("expired_certificate", _expired_cert, True, {"cert/viewer:viewer", "store/viewer"}, "expired"),
    ("world_readable_secret", _world_readable, True, {"permissions"}, "cam1.key.pem (0644)"),
    ("store_not_running", None, False, {"store/camera", "store/viewer"}, "connection refused"),
]


@pytest.mark.parametrize(
    "case,breaker,store_up,must_fail,words",
    [pytest.param(*b, id=b[0], marks=[pytest.mark.e2e] if b[2] else []) for b in BROKEN],
)
def test_a_broken_deployment_names_the_check_and_the_fix(
    tmp_path: Path, procs, case, breaker, store_up, must_fail, words
) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    if breaker:
        breaker(home, tmp_path)
    if store_up:
        start_store(procs, home)
    code, checks, _ = doctor(home)
    assert code == 1
    assert failed(checks) == must_fail, {k: v for k, v in checks.items() if v[0] != "OK"}
    first = sorted(must_fail)[0]
    assert words in checks[first][1], checks[first]
    if case == "world_readable_secret":
        assert checks["permissions"][2].startswith("chmod 600 ")
    if case == "bad_config_value":
        assert "docs/CONFIG.md" in checks["config/camera.toml"][2]
        assert "model" not in checks  # camera checks skipped, not crashed
    if case in ("expired_certificate", "missing_certificate", "corrupt_certificate"):
        assert "veilcam cert issue" in checks[first][2]
    if case == "expired_certificate":
        assert "refused this viewer's key" in checks["store/viewer"][1]
    if case == "store_not_running":
        assert "veilcam store --home" in checks["store/viewer"][2]
        assert checks["clock"][0] == "WARN"


def test_a_port_held_by_another_program_fails(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    endpoint = deployment.store_config(Home(home)).store.ingest_bind
    host, port = endpoint[len("tcp://") :].rsplit(":", 1)
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        code, checks, _ = doctor(home, "--timeout", "0.5")
    assert code == 1
    status, finding, fix = checks["port/ingest"]
    assert status == "FAIL" and "in use by another program" in finding
    assert f"sport = :{port}" in fix and "store.ingest_bind" in fix
    assert checks["port/relay"][0] == "OK"  # free
    assert "does not speak CurveZMQ" in checks["store/camera"][1]


def test_a_missing_or_foreign_home_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    code, checks, _ = doctor(tmp_path / "nowhere")
    assert code == 1 and checks["home"][0] == "FAIL" and "veilcam init" in checks["home"][2]
    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    (home / "identities" / "ca" / "ca.crt").write_bytes(b"\x00garbage")
    (home / "identities" / "ca" / "crl.pem").unlink()
    code, checks, _ = doctor(home)
    assert code == 1 and {"cert/ca", "store/camera", "store/viewer"} <= failed(checks)


def test_a_certificate_near_its_end_and_a_revoked_one(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    for args in (
        ["cert", "issue", "camera:cam1", "--days", "5"],
        ["cert", "issue", "viewer:laptop"],
        ["cert", "revoke", "viewer:laptop"],
    ):
        r = cli(*args, "--home", str(home))
        assert r.returncode == 0, r.stderr
    _, checks, _ = doctor(home, "--timeout", "0.5")
    status, finding, fix = checks["cert/camera:cam1"]
    assert status == "WARN" and "expires in" in finding and "--days 365" in fix
    assert checks["cert/viewer:laptop"][0] == "OK" and "revoked" in checks["cert/viewer:laptop"][1]


class _FakeLink:
    def __init__(self, offset_s: float | None) -> None:
        self.offset_s = offset_s

    def request(self, parts: list[bytes], timeout_s: float) -> list[bytes]:
        assert parts == [b"TIME"]
        if self.offset_s is None:
            return [b"ERR", b"unknown query"]  # a store older than the TIME query
        return [b"OK", str(int((time.time() + self.offset_s) * 1e6)).encode()]


@pytest.mark.parametrize(
    "offset,status",
    [
        (0.0, "OK"),
        (-1.0, "OK"),
        (5.0, "WARN"),
        (-12.0, "WARN"),
        (45.0, "FAIL"),
        (-3600.0, "FAIL"),
        (None, "WARN"),
    ],
)
def test_clock_skew_thresholds(tmp_path: Path, offset, status) -> None:
    from veilcam.doctor import Doctor

    d = Doctor(tmp_path)
    d.judge_clock(_FakeLink(offset), "viewer")
    (result,) = d.results
    assert result.check == "clock" and result.status == status, result
    if status != "OK":
        assert result.fix
    if offset is not None and abs(offset) > 2:
        assert ("behind" if offset > 0 else "ahead of") in result.finding
        assert "timedatectl" in result.fix


@pytest.mark.e2e
def test_store_answers_the_time_query(tmp_path: Path, procs) -> None:
    from veilcam.viewer.login import StoreLink

    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    start_store(procs, home)
    h = Home(home)
    link = StoreLink(h, deployment.viewer_config(h).viewer.query)
    try:
        before = time.time_ns() // 1000
        reply = link.request([b"TIME"], timeout_s=10)
        after = time.time_ns() // 1000
    finally:
        link.close()
    assert reply[0] == b"OK" and before - 1_000_000 <= int(reply[1]) <= after + 1_000_000


# --------------------------------------------------------------------------- progress, -v


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only(caplog) -> None:
    tty = _Terminal()
    with Progress("export", 10, "frames", stream=tty) as bar:
        for done in range(1, 11):
            bar.update(done)
    out = tty.getvalue()
    assert out.startswith("\rexport [") and "100.0% 10/10 frames" in out and out.endswith("\n")
    pipe = io.StringIO()
    caplog.set_level(logging.INFO, logger="veilcam.progress")
    with Progress("verify", 3 * 2**20, "bytes", stream=pipe, every_s=0) as bar:
        bar.update(2**20, note="12 records")
    assert pipe.getvalue() == ""  # no carriage returns into a pipe or a log file
    assert "verify:  33.3% 1.0 MiB/3.0 MiB, 12 records" in caplog.text
    quiet = _Terminal()
    Progress("x", 5, stream=quiet, enabled=False).update(3)
    assert quiet.getvalue() == ""


def _home_with_archive(tmp_path: Path) -> Path:
    """A home whose archive holds a few frames signed with its own camera key, now."""
    from veilcam.camera_node.protect import EncodeSettings, Epoch, protect_frame
    from veilcam.camera_node.redact import make_redactor
    from veilcam.camera_node.zones import Zone
    from veilcam.common.format import ZERO_DIGEST, ZoneClass
    from veilcam.common.signing import load_signing_key
    from veilcam.store_node.archive import Archive

    from tests.factory import textured

    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    h = Home(home)
    key = load_signing_key(h.camera_key_path("cam1"))
    epoch, prev = Epoch.new(), ZERO_DIGEST
    archive = Archive(deployment.archive_dir(h))
    archive.append_envelope(epoch.envelope(key, "cam1", 0, []))
    for seq in range(5):
        msg = protect_frame(
            textured(seed=seq),
            [Zone(10, 10, 40, 40, ZoneClass.FACE)],
            camera_id="cam1",
            seq=seq,
            capture_time_us=time.time_ns() // 1000,
            epoch=epoch,
            prev_digest=prev,
            redactor=make_redactor("pixelate"),
            settings=EncodeSettings(),
            signing_key=key,
        )
        archive.append_frame(msg)
        prev = msg.digest
    archive.commit()
    archive.close()
    return home


def test_verbose_before_or_after_the_command(tmp_path: Path) -> None:
    home = _home_with_archive(tmp_path)
    quiet = cli("verify", str(home))
    assert quiet.returncode == 0 and "INTACT" in quiet.stdout, quiet.stdout + quiet.stderr
    assert "DEBUG" not in quiet.stderr
    for args in (
        ["-v", "verify", str(home)],
        ["verify", str(home), "--verbose"],
        ["--verbose", "verify", "-v", str(home)],
    ):
        r = cli(*args)
        assert r.returncode == 0 and "INTACT" in r.stdout, r.stderr
        assert "DEBUG" in r.stderr and "checking cam1/" in r.stderr, (args, r.stderr)
    r = cli("doctor", "--home", str(home), "-v", "--timeout", "0.5")
    assert "DEBUG" in r.stderr and "Traceback" not in r.stderr
    r = cli("verify", str(home), "--json")  # progress never goes to stdout
    assert json.loads(r.stdout)["intact"]


# --------------------------------------------------------------------------- against the store


def test_keys_a_machine_does_not_need_are_named(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    # a viewer machine unpacked from the whole admin home: CA key, camera and store keys too
    (home / "config" / "camera.toml").unlink()
    (home / "config" / "store.toml").unlink()
    _, checks, _ = doctor(home, "--timeout", "0.5")
    status, finding, fix = checks["keys"]
    assert status == "WARN", checks["keys"]
    assert "ca.key.pem" in finding and "runs only viewer" in finding
    assert "identities/camera/cam1.key.pem" in finding
    assert "identities/store/store.key.pem" in finding
    assert "identities/viewer/viewer" not in finding  # its own keys are needed
    assert "admin machine" in fix and "rm " in fix


def test_the_ca_key_beside_a_store_is_a_warning(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    (home / "config" / "camera.toml").unlink()
    (home / "config" / "viewer.toml").unlink()
    _, checks, _ = doctor(home, "--timeout", "0.5")
    status, finding, fix = checks["keys"]
    assert status == "WARN" and "beside the store" in finding, checks["keys"]
    assert "identities/camera/cam1.key.pem" in finding


@pytest.mark.e2e
def test_a_revoked_viewer_is_told_to_get_new_keys_not_to_copy_its_certificate(
    tmp_path: Path, procs
) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    r = cli("cert", "revoke", "viewer:viewer", "--home", str(home))
    assert r.returncode == 0, r.stderr
    start_store(procs, home)
    code, checks, _ = doctor(home)
    assert code == 1
    status, finding, fix = checks["store/viewer"]
    assert status == "FAIL" and "revoked" in finding, checks["store/viewer"]
    assert "veilcam cert issue viewer:viewer" in fix
    assert "does not help" in fix and not fix.startswith("copy identities/certs/viewer")


# --------------------------------------------------------------------------- trust (TRUST query)


def _renew_camera_certificate(home: Path) -> None:
    """``veilcam cert issue camera:cam1`` on ``home`` (the admin home), in this process, a
    second later than the certificate it replaces (certificate times have whole seconds)."""
    from veilcam.admin import reissue_identity

    time.sleep(1.1)
    reissue_identity(Home(home), "camera", "cam1")  # what 'veilcam cert issue' does


def _viewer_machine(home: Path, tmp_path: Path) -> Path:
    """A viewer machine unpacked from ``home`` before a change there: its certificates and
    CRL, no CA key, only viewer.toml."""
    import shutil

    viewer = tmp_path / "viewer-machine"
    shutil.copytree(home, viewer, ignore=shutil.ignore_patterns("accounts", "archive"))
    (viewer / "identities" / "ca" / "ca.key.pem").unlink()
    for name in ("camera.toml", "store.toml"):
        (viewer / "config" / name).unlink()
    return viewer


def _trust_of(home: Path, peer: str):
    """The store's TRUST answer for ``home``, from its handler in this process."""
    from veilcam.common.query import TrustRequest
    from veilcam.store_node.accounts import AccountStore
    from veilcam.store_node.archive import Archive
    from veilcam.store_node.queries import Caller, StoreQueries

    h = Home(home)
    scratch = home.parent / f"store-of-{home.name}"  # the handler reads only certificates
    archive = Archive(scratch / "archive", 2**20)
    accounts = AccountStore(scratch / "accounts.sqlite3", bytes(32))
    try:
        return StoreQueries(h, archive, accounts).trust(TrustRequest(), Caller(peer))
    finally:
        accounts.close()
        archive.close()


def test_a_certificate_or_crl_that_differs_from_the_stores_is_named_with_the_fix(
    tmp_path: Path,
) -> None:
    """A viewer holding an out-of-date camera certificate: doctor names it (not "all OK")."""
    from veilcam.doctor import Doctor

    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    viewer = _viewer_machine(home, tmp_path)
    _renew_camera_certificate(home)
    # the viewer machine against the store (which has the renewal): out of date here
    d = Doctor(viewer)
    d.cfg, d.ca = (
        {"viewer": deployment.viewer_config(Home(viewer))},
        deployment.load_ca(Home(viewer)),
    )
    found = {r.check: r for r in d.compare_trust(_trust_of(home, "viewer:viewer"), "viewer")}
    assert set(found) == {"trust/camera:cam1", "trust/crl"}, found
    cam = found["trust/camera:cam1"]
    assert cam.status == "FAIL" and "differs from the store's, which was issued later" in (
        cam.finding
    )
    assert "copy identities/certs/camera-cam1.crt" in cam.fix and "from the admin home" in cam.fix
    assert (
        found["trust/crl"].status == "WARN"
        and "older than the store's" in found["trust/crl"].finding
    )
    # the other way round: a store that missed the renewal and the new CRL
    d = Doctor(home)
    d.cfg, d.ca = {"viewer": deployment.viewer_config(Home(home))}, deployment.load_ca(Home(home))
    found = {r.check: r for r in d.compare_trust(_trust_of(viewer, "viewer:viewer"), "viewer")}
    assert found["trust/camera:cam1"].status == "FAIL"
    assert "to the store's home" in found["trust/camera:cam1"].fix
    crl = found["trust/crl"]
    assert crl.status == "FAIL" and "still accepts certificates revoked here" in crl.finding
    # the same files: nothing to say
    d = Doctor(viewer)
    d.cfg, d.ca = (
        {"viewer": deployment.viewer_config(Home(viewer))},
        deployment.load_ca(Home(viewer)),
    )
    assert d.compare_trust(_trust_of(viewer, "viewer:viewer"), "viewer") == []


@pytest.mark.e2e
def test_doctor_on_a_viewer_machine_compares_its_certificates_with_the_running_store(
    tmp_path: Path, procs
) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    viewer = _viewer_machine(home, tmp_path)
    _renew_camera_certificate(home)
    start_store(procs, home)
    code, checks, _ = doctor(viewer)
    assert code == 1 and checks["store/viewer"][0] == "OK", checks
    status, finding, fix = checks["trust/camera:cam1"]
    assert status == "FAIL" and "camera cam1's certificate here" in finding
    assert "identities/certs/camera-cam1.crt" in fix
    assert checks["trust/crl"][0] == "WARN"
    # copied as the fix says: all OK
    for rel in ("identities/certs/camera-cam1.crt", "identities/ca/crl.pem"):
        (viewer / rel).write_bytes((home / rel).read_bytes())
    code, checks, _ = doctor(viewer)
    assert checks["trust"][0] == "OK" and not [c for c in checks if c.startswith("trust/")]
