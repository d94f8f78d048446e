"""The command line: clear one-line errors with exit code 2, never a traceback. The commands
run in this process (``cli``); the two that need a store to answer or a process to end run
as processes (e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PASSWORD, SAMPLE_CLIP, cli, make_home, run_cli


def test_wrong_password_for_offline_keystore_fails_clearly(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    out = tmp_path / "out"
    r = cli(
        "view",
        "--home",
        str(home),
        "--headless",
        "--out",
        str(out),
        "--frames",
        "1",
        "--keystore",
        str(home / "users" / "alice" / "keystore.json"),
        "--password-stdin",
        stdin="not the password\n",
    )
    assert r.returncode == 2
    assert "wrong password for user 'alice'" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.e2e  # a process that waits out the store's 10 s answer time
def test_unreachable_store_is_a_clear_error(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    r = run_cli(
        "view",
        "--home",
        str(home),
        "--headless",
        "--out",
        str(tmp_path / "o"),
        "--user",
        "alice",
        "--password-stdin",
        stdin=PASSWORD + "\n",
        timeout=30,
    )
    assert r.returncode == 2 and "did not answer" in r.stderr and "Traceback" not in r.stderr


def test_bad_config_names_file_key_and_reason(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    cfg = home / "config" / "camera.toml"
    cfg.write_text(cfg.read_text().replace('style = "solid"', 'style = "smear"'))
    r = cli("camera", "--home", str(home), "--max-frames", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{cfg}: key 'redaction.style'" in r.stderr


def test_missing_home_is_a_clear_error(tmp_path: Path) -> None:
    r = cli("store", "--home", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "is not a veilcam home" in r.stderr


def test_missing_video_file_is_a_clear_error(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    r = cli("camera", "--home", str(home), "--source", str(tmp_path / "nope.mp4"))
    assert r.returncode == 2 and "video file" in r.stderr and "not found" in r.stderr


def test_init_refuses_an_existing_home(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    r = cli("init", str(home))
    assert r.returncode == 2 and "already holds a veilcam deployment" in r.stderr


def test_password_is_never_an_argument(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    r = cli("user", "add", "carol", "--home", str(home))
    assert r.returncode == 2 and "--password-stdin" in r.stderr


def test_secret_files_are_owner_only(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    for path in [
        home / "identities" / "camera" / "cam1.key.pem",
        home / "identities" / "store" / "store.key.pem",
        home / "users" / "alice" / "keystore.json",
    ]:
        assert path.stat().st_mode & 0o077 == 0, path
    assert PASSWORD.encode() not in b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def test_verify_of_a_non_archive_is_a_clear_error(tmp_path: Path) -> None:
    r = cli("verify", str(tmp_path))
    assert r.returncode == 2 and "not a veilcam home" in r.stderr


@pytest.mark.e2e
def test_camera_ends_at_the_end_of_a_file_and_says_why(tmp_path: Path, procs) -> None:
    from tests.conftest import MEDIA, require_media

    clip = require_media(MEDIA / "intel" / "asl_gestures" / "yes.mkv")
    home = make_home(tmp_path, clip)
    procs.start_ready("store", "store", "--home", str(home))
    r = run_cli("camera", "--home", str(home), "--no-pace", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "camera cam1 stopped: end of source" in r.stderr


def test_bad_times_and_durations_are_clear_errors(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    for args in (
        [
            "view",
            "--home",
            str(home),
            "--headless",
            "--out",
            str(tmp_path / "o"),
            "--from",
            "1e400",
        ],
        [
            "view",
            "--home",
            str(home),
            "--headless",
            "--out",
            str(tmp_path / "o"),
            "--from",
            "yesterday-ish",
        ],
        ["cert", "issue", "camera:cam1", "--home", str(home), "--days", "-1"],
    ):
        r = cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("veilcam: error:")


def test_a_bundle_with_a_broken_manifest_is_reported_not_crashed(tmp_path: Path) -> None:
    from veilcam.viewer.export import check_bundle_files

    bundle = tmp_path / "x.mp4.bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{not json")
    assert "unreadable" in check_bundle_files(bundle)[0]
    (bundle / "manifest.json").write_text(
        '{"video": {"file": "x.mp4", "sha256": "0"}, '
        '"segment": {"file": "../../etc/passwd", "sha256": "0"}}'
    )
    problems = check_bundle_files(bundle)
    assert any("outside the bundle" in p for p in problems)


def test_output_cut_short_by_the_reader_is_not_a_traceback(monkeypatch) -> None:
    """``veilcam config-docs | head -1``: the reader goes away; exit 141, no traceback."""
    import os
    import sys

    from veilcam.cli import main

    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: every write fails with EPIPE
    stdout = open(write_end, "w", buffering=1)  # line-buffered: fails at once
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        assert main(["config-docs"]) == 141
        print("after the broken pipe, stdout goes nowhere quietly")
    finally:
        monkeypatch.undo()
        stdout.close()


def test_grant_for_a_camera_the_deployment_does_not_know_is_refused(tmp_path: Path) -> None:
    """'grant --camera doorr' (a typo) used to write a grant that opens nothing, silently."""
    home = make_home(tmp_path, SAMPLE_CLIP)
    r = cli("grant", "alice", "--camera", "doorr", "--home", str(home))
    assert r.returncode == 2
    assert "camera 'doorr' is not part of this deployment" in r.stderr
    assert "known cameras: cam1" in r.stderr and "Traceback" not in r.stderr
    assert not list((home / "grants").glob("alice@doorr*"))
    assert cli("grant", "alice", "--camera", "cam1", "--home", str(home)).returncode == 0
