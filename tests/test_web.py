"""The browser viewer over HTTP: page, status, MJPEG stream, unlock with wrong and right password."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import cv2
import numpy as np
import pytest
from veilcam.common import deployment
from veilcam.common.home import Home

from tests.conftest import PASSWORD, SAMPLE_CLIP, make_home


def _get(url: str, cookie: str = "") -> tuple[int, bytes, Message]:
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read(), resp.headers  # header names case-insensitive


def _post(url: str, doc: dict) -> tuple[int, dict, Message]:
    req = urllib.request.Request(
        url,
        data=json.dumps(doc).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers


def _first_mjpeg_part(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        assert resp.readline().strip() == b"--veilcamframe"
        headers = {}
        while line := resp.readline().strip():
            key, value = line.decode().split(":", 1)
            headers[key.lower()] = value.strip()
        return resp.read(int(headers["content-length"]))


@pytest.mark.e2e
def test_browser_viewer_streams_and_unlocks(tmp_path: Path, procs) -> None:
    # a generous lag bound: this test compares frames, not the fail-closed path
    home = make_home(tmp_path, SAMPLE_CLIP, extra_camera_toml="")
    cfg = home / "config" / "camera.toml"
    cfg.write_text(cfg.read_text().replace("[faces]\n", "[faces]\nmax_lag_ms = 5000\n", 1))
    port = deployment.viewer_config(Home(home)).viewer.web_port
    base = f"http://127.0.0.1:{port}"
    camera = procs.start_web_pipeline(home)

    status, page, _ = _get(base + "/")
    assert status == 200 and b"veilcam" in page and b"https://" not in page
    rebound = urllib.request.Request(base + "/api/status", headers={"Host": "evil.example:80"})
    try:
        urllib.request.urlopen(rebound, timeout=5)
        raise AssertionError("a request for another host name was served")
    except urllib.error.HTTPError as err:
        assert err.code == 403
    jpeg = _first_mjpeg_part(base + "/stream/cam1.mjpg")
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (360, 640, 3)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until faces are in view
        cams = json.loads(_get(base + "/api/status")[1])["cameras"]
        if cams[0].get("zones", 0) >= 1 and cams[0].get("seq", 0) > 60:
            break
        time.sleep(0.2)
    assert cams[0]["verified"] and cams[0]["live"] and cams[0]["zones"] >= 1

    code, doc, _ = _post(base + "/api/unlock", {"user": "alice", "password": "wrong password"})
    assert code == 401 and doc["error"] == "wrong user name or password"
    code, doc, _ = _post(base + "/api/unlock", {"user": "nobody", "password": PASSWORD})
    assert code == 401 and doc["error"] == "wrong user name or password"
    code, doc, headers = _post(base + "/api/unlock", {"user": "alice", "password": PASSWORD})
    assert code == 200 and doc["user"] == "alice"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    assert json.loads(_get(base + "/api/status", cookie)[1])["user"] == "alice"

    camera.terminate()  # freeze the latest frame so both snapshots show the same one
    camera.wait(timeout=15)
    previous = None
    for _ in range(40):  # until the viewer has shown the last relayed frame
        latest = json.loads(_get(base + "/api/status")[1])["cameras"][0]
        if latest.get("seq") == previous:
            break
        previous = latest.get("seq")
        time.sleep(0.5)
    public = cv2.imdecode(np.frombuffer(_get(base + "/snapshot/cam1.jpg")[1], np.uint8), 1)
    unlocked = cv2.imdecode(
        np.frombuffer(_get(base + "/snapshot/cam1.jpg", cookie)[1], np.uint8), 1
    )
    assert latest["zones"] >= 1
    diff = np.abs(public.astype(int) - unlocked.astype(int)).mean(axis=2)
    assert diff.max() > 60  # zones differ...
    assert np.median(diff) < 3  # ...the rest is the same picture
    assert PASSWORD not in procs.log("viewer")
    # playback from the archive, unlocked for this session
    played = cv2.imdecode(
        np.frombuffer(_first_mjpeg_part(base + "/stream/cam1.mjpg?from=start"), np.uint8), 1
    )
    assert played.shape == (360, 640, 3)


def test_unlocked_sessions_expire_when_idle_and_at_their_maximum_age() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from veilcam.common.keywrap import Identity
    from veilcam.viewer.sessions import Sessions
    from veilcam.viewer.unlock import Unlocker

    def unlocker() -> Unlocker:
        return Unlocker(Identity("alice", X25519PrivateKey.generate()), lambda cam, epoch: None)

    now = [1000.0]
    idle = Sessions(idle_s=300, max_s=3600, clock=lambda: now[0])
    token = idle.create(unlocker())
    for _ in range(4):  # requests keep it alive past the idle limit
        now[0] += 150
        assert idle.get(token) is not None
    now[0] += 301
    assert idle.get(token) is None  # idle too long: locked, keys dropped
    assert idle.get(token) is None

    aged = Sessions(idle_s=300, max_s=600, clock=lambda: now[0])
    token = aged.create(unlocker())
    for _ in range(3):
        now[0] += 200
        assert aged.get(token).user == "alice"
    now[0] += 200
    assert aged.get(token) is None  # in use, but past its maximum age
    assert aged.get("not-a-token") is None and aged.get(None) is None


def _status_of(base: str, cookie: str = "") -> dict:
    return json.loads(_get(base + "/api/status", cookie)[1])["cameras"][0]


def _wait_status(base: str, ok, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cam = _status_of(base)
        if ok(cam):
            return cam
        time.sleep(0.2)
    raise AssertionError(f"status never satisfied the condition: {cam}")


@pytest.mark.e2e
def test_renewed_camera_certificate_and_revoked_user_in_a_running_viewer(
    tmp_path: Path, procs
) -> None:
    """A running web viewer reloads certificates as the store does (renewing a
    camera certificate does not leave it on VERIFICATION FAILED), and a revoked user who
    unlocks is told so, in the API and on the command line, instead of a bare success."""
    from tests.conftest import run_cli

    home = make_home(tmp_path, SAMPLE_CLIP, users=("alice", "bob"))
    r = run_cli("revoke", "bob", "--camera", "cam1", "--home", str(home))
    assert r.returncode == 0, r.stderr
    port = deployment.viewer_config(Home(home)).viewer.web_port
    base = f"http://127.0.0.1:{port}"
    camera = procs.start_web_pipeline(home)
    cam = _wait_status(base, lambda c: c.get("verified") and c.get("seq", 0) > 10)
    assert cam["stale"] is False and cam["age_s"] < 2  # a live pipeline is live

    code, doc, _ = _post(base + "/api/unlock", {"user": "bob", "password": PASSWORD})
    assert code == 200 and doc["unlocked"] is True
    assert "cam1" in doc["no_grant"] and "revoked" in doc["warning"], doc
    cookie = _post(base + "/api/unlock", {"user": "alice", "password": PASSWORD})
    assert cookie[0] == 200 and cookie[1]["no_grant"] == {} and "warning" not in cookie[1]
    r = run_cli(
        "view",
        "--home",
        str(home),
        "--headless",
        "--out",
        str(tmp_path / "bob"),
        "--frames",
        "3",
        "--user",
        "bob",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert r.returncode == 0, r.stderr
    assert "unlocked as bob, but access to camera cam1 was revoked" in r.stderr, r.stderr

    # renew the camera's certificate (new keys) while the viewer runs
    camera.terminate()
    camera.wait(timeout=15)
    r = run_cli("cert", "issue", "camera:cam1", "--home", str(home))
    assert r.returncode == 0, r.stderr
    procs.wait_for_log("store", "identities loaded", timeout=10)
    time.sleep(1.5)  # the store re-reads certificates within a second
    last = _status_of(base)["seq"]
    procs.start_ready("camera2", "camera", "--home", str(home), "--loop", timeout=60)
    cam = _wait_status(base, lambda c: c.get("seq", 0) > last + 10, timeout=30)
    assert cam["verified"], cam  # not VERIFICATION FAILED until a restart
    assert "certificates or CRL changed: reloaded" in procs.log("viewer")
