"""The browser viewer in a real browser: Debian's Chromium, headless, driven by Playwright.

Store, camera (the bundled clip, with a static zone) and the web viewer run as processes on
loopback. The test opens the grid, sees a live verified frame, goes to the camera page,
unlocks with a wrong then the right password and sees the zone's pixels change, plays the
archive back from the timeline, exports a range with the progress bar and checks the bundle
with ``veilcam verify``, then locks again. Screenshots land in ``test-artifacts/browser/``.

Chromium comes from the system (``/usr/bin/chromium``; ``.ci/run`` installs Debian's package
when it is missing); Playwright never downloads a browser. Outside CI, a machine without
Chromium skips these tests with the reason; in CI (``CI`` set) that is a failure.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from veilcam.common import deployment
from veilcam.common.home import Home

from tests.conftest import PASSWORD, ROOT, SAMPLE_CLIP, make_home, run_cli

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
ZONE = (0.0, 0.0, 0.6, 0.1)  # a static zone over the clip's caption: sharp text in every frame
STATIC_ZONE = (
    f'[[zones]]\nname = "poster"\nrect = [{", ".join(map(str, ZONE))}]\nunits = "fraction"\n'
)
pytestmark = pytest.mark.e2e


def chromium_path() -> str | None:
    for candidate in (
        os.environ.get("VEILCAM_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run installs Debian's 'chromium'")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def zone_detail(png: bytes) -> float:
    """Fine detail (variance of the Laplacian) inside the static zone of a screenshot of the
    stream element: a pixelated zone is flat blocks, the unlocked one has the photo's detail."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    h, w = image.shape
    x, y, zw, zh = ZONE
    inner = image[
        int((y + 0.05 * zh) * h) : int((y + 0.95 * zh) * h),
        int((x + 0.05 * zw) * w) : int((x + 0.95 * zw) * w),
    ]
    return float(cv2.Laplacian(inner, cv2.CV_64F).var())


def wait_image(page, selector: str, timeout_s: float = 20) -> None:
    page.wait_for_function(
        "(sel) => { const i = document.querySelector(sel);"
        " return i && i.complete && i.naturalWidth > 0; }",
        arg=selector,
        timeout=timeout_s * 1000,
    )


def stream_shot(page, name: str) -> bytes:
    time.sleep(0.5)  # let a few MJPEG parts replace the one shown when the request switched
    return page.locator("#cam-stream").screenshot(path=str(ARTIFACTS / f"stream-{name}.png"))


def test_grid_camera_page_unlock_playback_export(tmp_path: Path, procs, browser) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, extra_camera_toml=STATIC_ZONE)
    port = deployment.viewer_config(Home(home)).viewer.web_port
    base = f"http://127.0.0.1:{port}"
    camera = procs.start_web_pipeline(home)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        # the grid: one card per camera, a live frame, the signature badge green
        page.goto(base + "/")
        card = page.locator("a.camera[data-camera='cam1']")
        card.wait_for()
        wait_image(page, "a.camera[data-camera='cam1'] img")
        page.locator("a.camera .sig", has_text="signature verified").wait_for()
        assert not page.locator("#camera-view").is_visible()
        page.screenshot(path=str(ARTIFACTS / "grid.png"))

        # the camera page
        card.click()
        page.wait_for_url("**/#camera/cam1")
        # the page's hash handler switches the views after the URL changes: wait for it
        page.locator("#camera-view").wait_for(state="visible")
        page.locator("#grid").wait_for(state="hidden")
        wait_image(page, "#cam-stream")
        page.locator("#cam-sig", has_text="signature verified").wait_for()
        page.locator("#cam-mode", has_text="LIVE").wait_for()
        # the capture time and age of the live frame are shown; a live pipeline is not STALE
        page.locator("#cam-age", has_text="captured").wait_for()
        assert "STALE" not in page.inner_text("#cam-mode")
        public_detail = zone_detail(stream_shot(page, "public"))

        # wrong password: refused, still public; the password field is emptied
        page.fill("#user", "alice")
        page.fill("#password", "not the password at all")
        page.click("#unlock")
        page.locator("#message", has_text="wrong user name or password").wait_for()
        assert page.locator("#mode").inner_text() == "public view"
        assert page.input_value("#password") == ""

        # right password: unlocked, the zone shows the original pixels
        page.fill("#password", PASSWORD)
        page.click("#unlock")
        page.locator("#mode", has_text="unlocked as alice").wait_for()
        page.locator("#lock").wait_for(state="visible")
        wait_image(page, "#cam-stream")
        unlocked_detail = zone_detail(stream_shot(page, "unlocked"))
        page.screenshot(path=str(ARTIFACTS / "camera-unlocked.png"))
        assert unlocked_detail > 3 * public_detail, (public_detail, unlocked_detail)
        # the keys stay in the viewer process: nothing in the browser's storage or URL
        assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0
        assert "alice" not in page.url and PASSWORD not in page.url
        assert page.evaluate("() => document.cookie") == ""  # HttpOnly session cookie

        # the timeline shows recorded slices; a click plays the archive from there
        page.wait_for_function("() => document.querySelectorAll('#tl-bars .rec').length > 0")
        page.locator("#timeline").click(position={"x": 5, "y": 18})
        page.locator("#cam-mode", has_text="PLAYBACK").wait_for()
        assert "from=" in page.get_attribute("#cam-stream", "src")
        page.locator("#tl-cursor").wait_for(state="visible")
        wait_image(page, "#cam-stream")
        assert zone_detail(stream_shot(page, "playback")) > 3 * public_detail  # unlocked too
        page.screenshot(path=str(ARTIFACTS / "camera-playback.png"))
        page.click("#live")
        page.locator("#cam-mode", has_text="LIVE").wait_for()

        # export the last seconds, with progress, and verify the evidence bundle offline
        page.click("#export")
        page.locator("#exp-status", has_text="exported").wait_for(timeout=60_000)
        assert page.get_attribute("#exp-progress", "value") == "1"
        status = page.inner_text("#exp-status")
        assert "unlocked for alice" in status
        video = Path(status.rsplit(" to ", 1)[1].strip())
        assert video.is_file() and video.stat().st_size > 0
        download = context.request.get(base + page.get_attribute("#exp-bundle", "href"))
        assert download.status == 200 and download.body()[:2] == b"PK"
        page.screenshot(path=str(ARTIFACTS / "camera-export.png"))
        verified = run_cli("verify", str(video) + ".bundle", "--trust", str(home))
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # lock: back to the public view, zone unreadable again
        page.click("#lock")
        page.locator("#mode", has_text="public view").wait_for()
        wait_image(page, "#cam-stream")
        assert zone_detail(stream_shot(page, "locked")) < unlocked_detail / 3

        # the camera stops: its last frame still verifies, but it is no longer live
        camera.terminate()
        camera.wait(timeout=15)
        page.locator("#cam-mode", has_text="STALE").wait_for(timeout=10_000)
        assert "captured" in page.inner_text("#cam-age")
        page.screenshot(path=str(ARTIFACTS / "camera-stale.png"))
        assert errors == [], errors
    finally:
        context.close()


H264_CAMERA = '[encoding]\nvideo = "h264"\n'
MSE_TYPE = 'video/mp4; codecs="avc1.42E01E"'


def first_picture_s(page, camera: str) -> float:
    """Open the camera page from the grid and wait for its first decoded video frame: the
    seconds between the click and the frame, measured in the page."""
    page.goto(page.url.split("#")[0] + "#")
    page.locator(f"a.camera[data-camera='{camera}']").wait_for()
    page.evaluate("() => { window.clickedAt = performance.now(); window.firstAt = null; }")
    page.locator(f"a.camera[data-camera='{camera}']").click()
    page.wait_for_function(
        "() => { const v = document.getElementById('cam-video');"
        " if (v.hidden || v.getVideoPlaybackQuality().totalVideoFrames === 0) return false;"
        " window.firstAt = window.firstAt || performance.now(); return true; }",
        timeout=20_000,
    )
    return page.evaluate("() => (window.firstAt - window.clickedAt) / 1000")


def test_live_h264_plays_through_media_source_extensions(tmp_path: Path, procs, browser) -> None:
    """An H.264 camera's public view on the camera page is the camera's verified access
    units, remuxed to fragmented MP4 and played by MSE (no MJPEG request); it keeps the live
    edge; unlocking switches to the MJPEG stream composed in the viewer, locking back to MSE."""
    home = make_home(tmp_path, SAMPLE_CLIP, extra_camera_toml=H264_CAMERA)
    port = deployment.viewer_config(Home(home)).viewer.web_port
    base = f"http://127.0.0.1:{port}"
    procs.start_web_pipeline(home)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    try:
        page.goto(base + "/")
        # this Chromium (Debian's) plays H.264 through MSE; without it the page shows MJPEG
        assert page.evaluate(f"() => MediaSource.isTypeSupported('{MSE_TYPE}')")

        cold = first_picture_s(page, "cam1")  # the viewer has no GOP in memory yet
        warm = first_picture_s(page, "cam1")  # a second page gets the current GOP at once
        print(f"first picture after {cold:.2f} s (first page), {warm:.2f} s (later page)")
        assert warm < 2.0, warm
        page.locator("#cam-sig", has_text="signature verified").wait_for()
        video = page.locator("#cam-video")
        assert video.get_attribute("data-mode") == "mse"
        assert page.evaluate("() => document.getElementById('cam-video').src").startswith("blob:")
        page.locator("#cam-stream").wait_for(state="hidden")
        asked = len(requests)

        state = (
            "() => { const v = document.getElementById('cam-video'), b = v.buffered;"
            " return {t: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames,"
            " lag: b.length ? b.end(b.length - 1) - v.currentTime : null,"
            " w: v.videoWidth, h: v.videoHeight}; }"
        )
        before = page.evaluate(state)
        time.sleep(3)
        after = page.evaluate(state)
        print(f"MSE playback: {before} -> {after}")
        assert after["t"] - before["t"] > 2.0  # plays at about real time
        assert after["frames"] - before["frames"] > 20  # the clip's 30 fps, at least 10/s
        assert after["lag"] is not None and after["lag"] < 1.0  # at the live edge
        assert (after["w"], after["h"]) == (640, 360)
        stream_requests = [u for u in requests[asked:] if "/stream/" in u or "/snapshot/" in u]
        assert stream_requests == []  # the picture came over the WebSocket, not MJPEG
        video.screenshot(path=str(ARTIFACTS / "h264-mse.png"))

        # unlocked: the zones are composed in the viewer, so the view is MJPEG
        page.fill("#user", "alice")
        page.fill("#password", PASSWORD)
        page.click("#unlock")
        page.locator("#mode", has_text="unlocked as alice").wait_for()
        wait_image(page, "#cam-stream")
        page.locator("#cam-stream").wait_for(state="visible")
        video.wait_for(state="hidden")
        # locked again: back to MSE
        page.click("#lock")
        page.locator("#mode", has_text="public view").wait_for()
        page.wait_for_function(
            "() => { const v = document.getElementById('cam-video');"
            " return !v.hidden && v.getVideoPlaybackQuality().totalVideoFrames > 0; }"
        )
        assert errors == [], errors
    finally:
        context.close()
