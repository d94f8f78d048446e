"""``veilcam doctor``'s source check in-process (no store, no process): a video file is opened
and described, an unreadable one is a FAIL, an unreachable stream a WARN naming why with the
password redacted. The check against a real RTSP server is in tests/test_rtsp.py (e2e)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

from tests.conftest import SAMPLE_CLIP, make_home
from veilcam.doctor import Doctor


def _source_check(home: Path, source: str) -> tuple[str, str, str]:
    cfg = home / "config" / "camera.toml"
    text = re.sub(r"(?m)^source = .*$", lambda _: f"source = {json.dumps(source)}", cfg.read_text())
    if "open_timeout_s" not in text:
        text = text.replace("[camera]\n", "[camera]\nopen_timeout_s = 2.0\n", 1)
    cfg.write_text(text)
    doctor = Doctor(home)
    assert doctor.check_home()
    doctor.check_configs()
    doctor.check_source()
    (result,) = [r for r in doctor.results if r.check == "source"]
    return result.status, result.finding, result.fix


def test_doctor_opens_a_video_file_and_reports_codec_size_and_rate(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP)
    status, finding, _ = _source_check(home, str(SAMPLE_CLIP))
    assert status == "OK" and finding.endswith(": mpeg4 640x360 at 30.0 fps"), finding
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    status, finding, fix = _source_check(home, str(broken))
    assert status == "FAIL" and "cannot read video file" in finding and fix, finding


def test_doctor_says_why_a_stream_does_not_open_without_the_password(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = make_home(tmp_path, SAMPLE_CLIP)
    status, finding, fix = _source_check(home, f"rtsp://admin:hunter2-x@127.0.0.1:{port}/s")
    assert status == "WARN" and "Connection refused" in finding, finding
    assert "admin:***@" in finding and "hunter2" not in finding + fix
