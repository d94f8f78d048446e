"""Bad configuration matrix: the real command line (``python -m veilcam``) with broken
config files and bad command-line values. Every row must exit non-zero with exactly one error
line that names the problem, and no Python traceback.

The rows run as separate processes (so the module is e2e), a few at a time (a module
fixture), each on its own copy of one deployment home; each row is then its own test.
Unit-level config validation (file, key and reason in the message) is in tests/test_config.py;
a few CLI errors are in tests/test_cli.py (missing home, missing video file, wrong redaction
style, bad times), run in-process in the fast tier.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, SAMPLE_CLIP, make_home, run_cli

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Row:
    id: str
    args: tuple[str, ...]  # "{home}" and "{tmp}" are filled in
    expect: tuple[str, ...]  # all must appear in the one error line
    setup: Callable[[Path], None] | None = None
    stdin: str | None = None


def edit(name: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(home: Path) -> None:
        path = home / "config" / f"{name}.toml"
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1))

    return apply


def append(name: str, text: str) -> Callable[[Path], None]:
    def apply(home: Path) -> None:
        path = home / "config" / f"{name}.toml"
        path.write_text(path.read_text() + "\n" + text)

    return apply


def replace_file(name: str, how: str) -> Callable[[Path], None]:
    def apply(home: Path) -> None:
        path = home / "config" / f"{name}.toml"
        path.unlink()
        if how == "folder":
            path.mkdir()
        elif how == "not-utf8":
            path.write_bytes(b"\xff\xfe[camera]\n")

    return apply


def missing_face_model(home: Path) -> None:
    path = home / "config" / "camera.toml"
    text = re.sub(
        r'backend = "\w+"(\nmodel = ".*")?',
        'backend = "yunet"\nmodel = "/nonexistent/yunet.onnx"',
        path.read_text(),
        count=1,
    )
    path.write_text(text)


def archive_is_a_file(home: Path) -> None:
    (home / "archive-file").write_text("not a folder")
    edit("store", 'path = "archive"', 'path = "archive-file"')(home)


CAMERA = ("camera", "--home", "{home}", "--max-frames", "2", "--no-pace")
STORE = ("store", "--home", "{home}")
VIEW = ("view", "--home", "{home}", "--headless", "--out", "{tmp}/out", "--timeout", "5")
ZONE = '[[zones]]\nname = "window"\n'

ROWS = [
    # ---- camera.toml
    Row(
        "camera-toml-syntax-error",
        CAMERA,
        ("camera.toml", "not valid TOML"),
        append("camera", "[camera\n"),
    ),
    Row(
        "camera-unknown-key",
        CAMERA,
        ("key 'camera.colour'", "unknown key"),
        edit("camera", "[camera]\n", '[camera]\ncolour = "red"\n'),
    ),
    Row(
        "camera-wrong-type",
        CAMERA,
        ("key 'camera.loop'", "boolean"),
        edit("camera", "loop = false", 'loop = "often"'),
    ),
    Row(
        "camera-out-of-range",
        CAMERA,
        ("key 'keys.rotate_seconds'", "greater than or equal"),
        append("camera", "[keys]\nrotate_seconds = 0\n"),
    ),
    Row(
        "camera-missing-file",
        CAMERA,
        ("camera.toml", "config file not found"),
        replace_file("camera", "missing"),
    ),
    Row(
        "camera-unreadable-file",
        CAMERA,
        ("camera.toml", "cannot read config file"),
        replace_file("camera", "folder"),
    ),
    Row(
        "camera-not-utf8",
        CAMERA,
        ("camera.toml", "cannot read config file", "utf-8"),
        replace_file("camera", "not-utf8"),
    ),
    Row(
        "camera-source-url-refused",
        CAMERA,
        ("cannot open stream", "127.0.0.1:9"),
        edit("camera", 'source = "', 'source = "http://127.0.0.1:9/none.mjpg" # "'),
    ),
    Row(
        "camera-source-no-such-device",
        CAMERA,
        ("cannot open camera device 97",),
        edit("camera", 'source = "', 'source = "97" # "'),
    ),
    Row(
        "camera-source-no-such-file",
        CAMERA,
        ("video file", "nope.mp4", "not found"),
        edit("camera", 'source = "', 'source = "nope.mp4" # "'),
    ),
    Row(
        "camera-zone-outside-the-frame",
        CAMERA,
        ("zones[0]", "window", "outside the"),
        append("camera", ZONE + "rect = [5000, 5000, 10, 10]\n"),
    ),
    Row(
        "camera-zone-rect-three-numbers",
        CAMERA,
        ("key 'zones[0].rect",),
        append("camera", ZONE + "rect = [0, 0, 10]\n"),
    ),
    Row(
        "camera-zone-rect-infinite",
        CAMERA,
        ("key 'zones[0]'", "finite"),
        append("camera", ZONE + "rect = [0, 0, 1e400, 10]\n"),
    ),
    Row(
        "camera-zone-rect-nan",
        CAMERA,
        ("key 'zones[0]'", "finite"),
        append("camera", ZONE + "rect = [0, 0, nan, 10]\n"),
    ),
    Row(
        "camera-zone-unknown-class",
        CAMERA,
        ("key 'zones[0].class'", "unknown zone class"),
        append("camera", ZONE + 'rect = [0, 0, 10, 10]\nclass = "cats"\n'),
    ),
    Row(
        "camera-endpoint-without-port",
        CAMERA,
        ("key 'store.ingest'", "tcp://HOST:PORT"),
        edit("camera", 'ingest = "tcp://127.0.0.1:', 'ingest = "localhost" # "'),
    ),
    Row(
        "camera-endpoint-port-99999",
        CAMERA,
        ("key 'store.ingest'", "PORT 1-65535"),
        edit("camera", 'ingest = "tcp://127.0.0.1:', 'ingest = "tcp://127.0.0.1:99999" # "'),
    ),
    Row(
        "camera-id-without-certificate",
        CAMERA,
        ("cam9.key.pem", "not found"),
        edit("camera", 'id = "cam1"', 'id = "cam9"'),
    ),
    Row(
        "camera-face-model-missing",
        CAMERA,
        ("YuNet model", "/nonexistent/yunet.onnx"),
        missing_face_model,
    ),
    # ---- store.toml
    Row(
        "store-toml-syntax-error",
        STORE,
        ("store.toml", "not valid TOML"),
        append("store", "x = = 1\n"),
    ),
    Row(
        "store-unknown-key",
        STORE,
        ("key 'archive.colour'", "unknown key"),
        edit("store", "[archive]\n", "[archive]\ncolour = 1\n"),
    ),
    Row(
        "store-wrong-type",
        STORE,
        ("key 'archive.segment_max_bytes'", "integer"),
        edit("store", "[archive]\n", '[archive]\nsegment_max_bytes = "big"\n'),
    ),
    Row(
        "store-out-of-range",
        STORE,
        ("key 'archive.fsync_max_records'",),
        edit("store", "[archive]\n", "[archive]\nfsync_max_records = 0\n"),
    ),
    Row(
        "store-missing-file",
        STORE,
        ("store.toml", "config file not found"),
        replace_file("store", "missing"),
    ),
    Row("store-archive-path-is-a-file", STORE, ("archive-file", "archive.path"), archive_is_a_file),
    Row(
        "store-bind-address-invalid",
        STORE,
        ("cannot bind", "256.1.1.1"),
        edit(
            "store", 'ingest_bind = "tcp://127.0.0.1:', 'ingest_bind = "tcp://256.1.1.1:7700" # "'
        ),
    ),
    Row(
        "store-bind-port-99999",
        STORE,
        ("key 'store.ingest_bind'", "PORT 1-65535"),
        edit(
            "store", 'ingest_bind = "tcp://127.0.0.1:', 'ingest_bind = "tcp://127.0.0.1:99999" # "'
        ),
    ),
    # ---- viewer.toml
    Row(
        "viewer-toml-syntax-error",
        VIEW,
        ("viewer.toml", "not valid TOML"),
        append("viewer", "[viewer]\n"),
    ),
    Row(
        "viewer-identity-without-certificate",
        VIEW,
        ("nobody.transport.key.pem", "not found"),
        edit("viewer", "[viewer]\n", '[viewer]\nidentity = "nobody"\n'),
    ),
    Row(
        "viewer-web-port-out-of-range",
        VIEW,
        ("key 'viewer.web_port'",),
        edit("viewer", "web_port = ", "web_port = 70000 # "),
    ),
    Row(
        "viewer-relay-not-an-endpoint",
        VIEW,
        ("key 'viewer.relay'", "tcp://HOST:PORT"),
        edit("viewer", 'relay = "', 'relay = "127.0.0.1" # "'),
    ),
    # ---- command-line values
    Row(
        "max-frames-negative",
        ("camera", "--home", "{home}", "--max-frames", "-1"),
        ("--max-frames", "at least 1"),
    ),
    Row(
        "max-frames-not-a-number",
        ("camera", "--home", "{home}", "--max-frames", "ten"),
        ("--max-frames", "'ten'"),
    ),
    Row("frames-negative", (*VIEW, "--frames", "-5"), ("--frames", "at least 1")),
    Row("timeout-nan", (*VIEW, "--timeout", "nan"), ("--timeout", "nan")),
    Row(
        "web-port-out-of-range",
        ("view", "--home", "{home}", "--port", "70000"),
        ("--port", "70000"),
    ),
    Row(
        "metrics-port-out-of-range",
        (*STORE, "--metrics-port", "70000"),
        ("--metrics-port", "70000"),
    ),
    Row(
        "stats-out-in-an-impossible-folder",
        (*STORE, "--stats-out", "/proc/veilcam/x.json"),
        ("--stats-out", "/proc/veilcam"),
    ),
    Row(
        "from-before-1970",
        (*VIEW, "--from", "0001-01-01T00:00:00+14:00"),
        ("0001-01-01", "out of range"),
    ),
    Row(
        "from-not-a-time",
        (
            "export",
            "--home",
            "{home}",
            "--camera",
            "cam1",
            "--from",
            "soon",
            "--to",
            "start",
            "--out",
            "{tmp}/x.mp4",
        ),
        ("'soon'",),
    ),
    Row("camera-id-invalid", (*VIEW, "--camera", "bad id!"), ("invalid camera id", "bad id!")),
    Row(
        "home-missing-view",
        (*VIEW[:1], "--home", "{tmp}/nowhere", *VIEW[3:]),
        ("not a veilcam home",),
    ),
    Row(
        "home-is-a-file",
        ("grant", "alice", "--camera", "cam1", "--home", "/etc/hostname"),
        ("not a veilcam home",),
    ),
    Row(
        "config-option-missing-file",
        ("camera", "--home", "{home}", "--config", "{tmp}/nope.toml"),
        ("nope.toml", "not found"),
    ),
    Row(
        "zones-unknown-class",
        ("grant", "alice", "--camera", "cam1", "--zones", "faces,cats", "--home", "{home}"),
        ("--zones", "'cats'"),
    ),
    Row(
        "zones-empty",
        ("grant", "alice", "--camera", "cam1", "--zones", "", "--home", "{home}"),
        ("--zones", "''"),
    ),
    Row(
        "grant-camera-id-invalid",
        ("grant", "alice", "--camera", "bad id!", "--home", "{home}"),
        ("invalid camera id",),
    ),
    Row(
        "grant-unknown-user",
        ("grant", "nobody", "--camera", "cam1", "--home", "{home}"),
        ("no user 'nobody'", "public keys", "veilcam register", "--key-id"),
    ),
    Row("cert-unknown-role", ("cert", "issue", "robot:r2", "--home", "{home}"), ("ROLE:NAME",)),
    Row(
        "init-port-base-out-of-range",
        ("init", "{tmp}/new", "--port-base", "70000"),
        ("--port-base", "70000"),
    ),
    Row(
        "init-camera-id-invalid",
        ("init", "{tmp}/new", "--camera-id", "bad id!"),
        ("invalid camera id",),
    ),
    Row(
        "user-name-invalid",
        ("user", "add", "../x", "--home", "{home}", "--password-stdin"),
        ("invalid user name",),
        stdin=PASSWORD + "\n",
    ),
    Row(
        "register-name-invalid",
        ("register", "a/b", "--home", "{home}", "--password-stdin"),
        ("invalid user name",),
        stdin=PASSWORD + "\n",
    ),
]


def _run_row(template: Path, tmp: Path, row: Row) -> subprocess.CompletedProcess:
    work = tmp / row.id
    home = work / "home"
    shutil.copytree(template, home)
    if row.setup:
        row.setup(home)
    args = [a.format(home=home, tmp=work) for a in row.args]
    return run_cli(*args, stdin=row.stdin, timeout=60)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("badconfig")
    template = make_home(tmp, SAMPLE_CLIP)  # with user alice
    workers = max(2, min(4, os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as pool:
        futures = {row.id: pool.submit(_run_row, template, tmp, row) for row in ROWS}
        return {rid: f.result() for rid, f in futures.items()}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line or " ERROR " in line]


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ROWS])
def test_bad_value_is_one_clear_error_without_traceback(results, row: Row) -> None:
    r = results[row.id]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr[-2000:]
    for needle in row.expect:
        assert needle in lines[0], (needle, lines[0])
