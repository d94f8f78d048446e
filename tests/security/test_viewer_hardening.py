"""Viewer hardening, in process: live frames judged by their capture time,
owner-only decrypted output and exports tied to their session, expired sessions swept with
their keys, no HTML built from data, HEAD answered, repeated verification failures logged
once with the real cause at the end, and every command-line flag documented."""

from __future__ import annotations

import argparse
import json
import logging
import stat
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from veilcam.camera_node.protect import EncodeSettings, protect_frame
from veilcam.camera_node.redact import make_redactor
from veilcam.camera_node.zones import Zone
from veilcam.common import deployment
from veilcam.common.format import ZoneClass
from veilcam.common.home import Home
from veilcam.common.keywrap import Identity
from veilcam.common.lifecycle import StopFlag
from veilcam.viewer.client import ReceivedFrame
from veilcam.viewer.freshness import Freshness
from veilcam.viewer.unlock import Unlocker

from tests.conftest import ROOT, SAMPLE_CLIP, make_home
from tests.factory import Camera, textured


def _frame(cam: Camera, capture_time_us: int):
    msg = protect_frame(
        textured(),
        [Zone(40, 30, 64, 80, ZoneClass.FACE)],
        camera_id=cam.camera_id,
        seq=cam.seq,
        capture_time_us=capture_time_us,
        epoch=cam.epoch,
        prev_digest=cam.prev,
        redactor=make_redactor("pixelate"),
        settings=EncodeSettings(),
        signing_key=cam.key,
    )
    cam.seq += 1
    cam.prev = msg.digest
    return msg


def _unlocker(name: str = "alice") -> Unlocker:
    return Unlocker(Identity(name, X25519PrivateKey.generate()), lambda cam, epoch: None)


class _FakeHub:
    """What ViewerServer needs of a FrameHub, without a store."""

    def __init__(self) -> None:
        self.cameras = ["cam1"]
        self.latest = {}
        self.stop = StopFlag()
        self.freshness = Freshness(2.0)

    def envelope_lookup(self, camera_id, epoch_id):
        return None

    def show(self, msg) -> None:
        from veilcam.viewer.framehub import Latest

        self.latest[msg.camera_id] = Latest(
            ReceivedFrame(msg, True), len(self.latest) + 1, time.time()
        )


@pytest.fixture
def server(tmp_path: Path):
    from veilcam.viewer.web import ViewerServer

    hub = _FakeHub()
    srv = ViewerServer(("127.0.0.1", 0), Home(tmp_path / "home"), hub, 80, tmp_path / "exports")
    srv.start()
    yield srv
    hub.stop.set("test over")
    srv.close()


def _url(srv, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def _request(
    srv, path: str, method: str = "GET", cookie: str = "", body: dict | None = None
) -> tuple[int, bytes, Message]:
    headers = {"Cookie": cookie} if cookie else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(_url(srv, path), data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers  # names case-insensitive
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


# --------------------------------------------------------------------------- 12.3 freshness


def test_freshness_allows_the_measured_clock_difference() -> None:
    now = 1_800_000_000.0
    fresh = Freshness(2.0)
    assert fresh.judge(int((now - 0.5) * 1e6), now) == {"age_s": 0.5, "stale": False}
    assert fresh.judge(int((now - 86400) * 1e6), now)["stale"]
    skewed = Freshness(2.0, skew_s=-3.0, margin_s=0.1)  # this clock 3 s ahead of the store's
    assert not skewed.judge(int((now - 4.0) * 1e6), now)["stale"]
    assert skewed.judge(int((now - 5.5) * 1e6), now)["stale"]


def test_status_marks_a_relayed_old_frame_stale(server) -> None:
    cam = Camera("cam1")
    server.hub.show(_frame(cam, time.time_ns() // 1000 - 86_400_000_000))  # yesterday's
    (entry,) = json.loads(_request(server, "/api/status")[1])["cameras"]
    assert entry["verified"] and entry["live"]  # signed, chained and just received...
    assert entry["stale"] is True and entry["age_s"] > 86000  # ...but not live
    assert entry["capture_time_us"] > 0 and entry["max_age_s"] == 2.0
    server.hub.show(_frame(cam, time.time_ns() // 1000))
    (entry,) = json.loads(_request(server, "/api/status")[1])["cameras"]
    assert entry["stale"] is False and -1 < entry["age_s"] < 2


def test_the_page_shows_stale_and_the_capture_time() -> None:
    js = (ROOT / "viewer" / "static" / "app.js").read_text()
    assert '"STALE"' in js and "cam.stale" in js and "capture_time_us" in js
    assert 'id="cam-age"' in (ROOT / "viewer" / "static" / "index.html").read_text()


class _FakeRelay:
    """Stands in for RelayClient in the headless viewer: serves prepared frames."""

    frames: list[ReceivedFrame] = []

    def __init__(self, home, cameras=None) -> None:
        self.trust = deployment.trusted_cameras(home)
        self._frames = list(type(self).frames)

    def receive(self, timeout_ms: int):
        if self._frames:
            return self._frames.pop(0)
        time.sleep(timeout_ms / 1000)
        return None

    def envelope(self, camera_id, epoch_id):
        return None

    def close(self) -> None:
        pass


def test_headless_live_lines_say_age_and_stale_and_files_are_owner_only(
    tmp_path: Path, monkeypatch
) -> None:
    from veilcam.viewer import headless

    home = Home(make_home(tmp_path, SAMPLE_CLIP, users=()))
    cam = Camera("cam1")
    now_us = time.time_ns() // 1000
    _FakeRelay.frames = [
        ReceivedFrame(_frame(cam, now_us - 3600_000_000), True),
        ReceivedFrame(_frame(cam, now_us), True),
    ]
    monkeypatch.setattr(headless, "RelayClient", _FakeRelay)
    monkeypatch.setattr(
        headless.Freshness, "measured", classmethod(lambda cls, home, max_age_s: cls(max_age_s))
    )  # no store to ask the time
    out = tmp_path / "out"
    assert headless.run_headless(home, out, 2, timeout_s=5) == 0
    old, new = (json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines())
    assert old["stale"] is True and old["age_s"] > 3500
    assert new["stale"] is False and new["age_s"] < 2
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for png in out.glob("*.png"):
        assert stat.S_IMODE(png.stat().st_mode) == 0o600, png


# --------------------------------------------------------------------------- 17: failures


def test_repeated_verification_failures_are_logged_once_and_blamed_right(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    from veilcam.viewer import headless

    home = Home(make_home(tmp_path, SAMPLE_CLIP, users=()))
    cam = Camera("cam1")
    now_us = time.time_ns() // 1000
    bad = [
        ReceivedFrame(
            _frame(cam, now_us), False, "bad_signature: frame cam1#1: signature does not verify"
        )
        for _ in range(450)
    ]
    _FakeRelay.frames = bad
    monkeypatch.setattr(headless, "RelayClient", _FakeRelay)
    monkeypatch.setattr(
        headless.Freshness, "measured", classmethod(lambda cls, home, max_age_s: cls(max_age_s))
    )
    caplog.set_level(logging.INFO, logger="veilcam.viewer")
    assert headless.run_headless(home, tmp_path / "out", 3, timeout_s=0.8) == 1
    lines = [r.getMessage() for r in caplog.records if "failed verification" in r.getMessage()]
    assert len(lines) <= 5, lines  # not 450
    closing = caplog.records[-1].getMessage()
    assert "450 frame(s) arrived from the store but failed verification" in closing
    assert "bad_signature" in closing and "certificate" in closing
    assert "is the store" not in closing  # the store is not to blame


# --------------------------------------------------------------------------- 12.6 exports


def test_exports_are_owner_only_and_belong_to_their_session(server, monkeypatch) -> None:
    import os

    from veilcam.viewer import webexports

    def fake_export(home, camera, from_us, to_us, out, identity, progress):
        old = os.umask(0o022)  # as a careless library would
        os.umask(old)
        out.write_bytes(b"mp4")
        bundle = out.with_name(out.name + ".bundle")
        bundle.mkdir()
        (bundle / "manifest.json").write_text("{}")
        return {"frames": 1, "unlocked_for": identity.name if identity else None}

    monkeypatch.setattr(webexports, "export", fake_export)
    folder = server.exports.folder
    folder.mkdir(mode=0o755)
    token = server.sessions.create(_unlocker())
    cookie = f"veilcam_session={token}"
    code, body, _ = _request(
        server,
        "/api/export",
        "POST",
        cookie,
        {"camera": "cam1", "from": "1700000000", "to": "1700000010"},
    )
    assert code == 202, body
    job = json.loads(body)["id"]
    for _ in range(100):
        if json.loads(_request(server, f"/api/export/{job}", cookie=cookie)[1])["state"] == "done":
            break
        time.sleep(0.05)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    video = next(folder.glob("*.mp4"))
    assert stat.S_IMODE(video.stat().st_mode) == 0o600
    bundle = video.with_name(video.name + ".bundle")
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    assert stat.S_IMODE((bundle / "manifest.json").stat().st_mode) == 0o600

    assert _request(server, f"/exports/{job}/video.mp4", cookie=cookie)[0] == 200
    code, _, _ = _request(server, f"/exports/{job}/bundle.zip", cookie=cookie)
    assert code == 200
    assert stat.S_IMODE(next(folder.glob("*.zip")).stat().st_mode) == 0o600
    # the job id alone is not enough: another browser, or the same one after Lock
    assert _request(server, f"/exports/{job}/video.mp4")[0] == 404
    assert _request(server, f"/api/export/{job}")[0] == 404
    other = f"veilcam_session={server.sessions.create(_unlocker('bob'))}"
    assert _request(server, f"/exports/{job}/video.mp4", cookie=other)[0] == 404
    assert _request(server, "/api/lock", "POST", cookie, {})[0] == 200
    assert _request(server, f"/exports/{job}/video.mp4", cookie=cookie)[0] == 404


# --------------------------------------------------------------------------- 12.7 sessions


def test_expired_sessions_are_swept_with_their_keys() -> None:
    from veilcam.viewer.sessions import Sessions

    sessions = Sessions(idle_s=0.2, max_s=60)
    unlocker = _unlocker()
    sessions.create(unlocker)
    time.sleep(0.3)
    # no request with that cookie: any other request (or the timer) ends it
    assert sessions.get("some-other-token") is None
    assert sessions._by_token == {}
    assert unlocker.identity is None and unlocker._keys == {}

    timed = Sessions(idle_s=0.2, max_s=60)
    unlocker = _unlocker()
    timed.create(unlocker)
    stop = StopFlag()
    timed.start_sweeper(stop, every_s=0.1)
    try:
        time.sleep(0.6)
        assert timed._by_token == {} and unlocker.identity is None  # no request at all
    finally:
        stop.set("test over")


# --------------------------------------------------------------------------- 12.11 no HTML


def test_the_page_builds_no_html_from_data() -> None:
    js = (ROOT / "viewer" / "static" / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in js, sink


# --------------------------------------------------------------------------- 17: HEAD, help


def test_head_answers_like_get_without_a_body(server) -> None:
    code, body, headers = _request(server, "/", "HEAD")
    assert code == 200 and body == b"" and int(headers["Content-Length"]) > 100
    code, body, headers = _request(server, "/api/status", "HEAD")
    assert code == 200 and body == b"" and headers["Content-Type"] == "application/json"
    code, body, headers = _request(server, "/stream/cam1.mjpg", "HEAD")
    assert code == 200 and body == b"" and headers["Content-Type"].startswith("multipart/")
    assert _request(server, "/nope", "HEAD")[0] == 404
    assert _request(server, "/", "GET")[0] == 200  # the connection after HEAD is sound


def test_every_flag_of_every_command_has_help() -> None:
    from veilcam.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, where: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
            elif not action.help or action.help == argparse.SUPPRESS:
                if action.default is not argparse.SUPPRESS or action.dest != "verbose":
                    missing.append(f"{where}: {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "veilcam")
    assert missing == []


def test_a_camera_failing_verification_points_at_outdated_certificates(server) -> None:
    from veilcam.viewer.framehub import Latest

    cam = Camera("cam1")
    msg = _frame(cam, time.time_ns() // 1000)
    server.hub.latest["cam1"] = Latest(
        ReceivedFrame(msg, False, "bad_signature: frame cam1#0: signature does not verify"),
        1,
        time.time(),
    )
    (entry,) = json.loads(_request(server, "/api/status")[1])["cameras"]
    assert entry["verified"] is False and entry["problem"].startswith("bad_signature")
    assert "outdated camera certificate or CRL" in entry["hint"]


def test_requests_from_another_sites_page_are_refused_but_links_to_the_page_work(
    server,
) -> None:
    """An ``<img src=http://127.0.0.1:PORT/snapshot/...>`` on any web site would make the
    viewer decode for it (the Host header is right): refused by Sec-Fetch-Site, which pages
    cannot set. A link the user follows to the page stays allowed."""

    def fetch(path: str, **headers: str) -> int:
        req = urllib.request.Request(_url(server, path), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    cross = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    assert fetch("/snapshot/cam1.jpg", **cross, **{"Sec-Fetch-Dest": "image"}) == 403
    assert fetch("/api/status", **cross) == 403
    assert fetch("/", **{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}) == 200
    assert fetch("/api/status", **{"Sec-Fetch-Site": "same-origin"}) == 200
    assert fetch("/api/status") == 200  # clients that send no Sec-Fetch headers


def test_unlocking_again_drops_the_previous_sessions_keys(server, monkeypatch) -> None:
    from veilcam.viewer import webapp

    identities = iter([_unlocker("alice").identity, _unlocker("alice").identity])
    monkeypatch.setattr(webapp, "login", lambda home, user, password: next(identities))
    body = {"user": "alice", "password": "whatever it is"}
    code, _, headers = _request(server, "/api/unlock", "POST", body=body)
    assert code == 200
    first = headers["Set-Cookie"].split(";")[0]
    old = server.sessions.get(first.split("=", 1)[1])
    assert old is not None and old.identity is not None
    code, _, headers = _request(server, "/api/unlock", "POST", first, body)
    assert code == 200 and headers["Set-Cookie"].split(";")[0] != first
    assert server.sessions.get(first.split("=", 1)[1]) is None
    assert old.identity is None  # its private keys forgotten at once, not at idle expiry
