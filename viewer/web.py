"""The browser viewer: a page on localhost, served by the process that holds the keys.

Live video is MJPEG (multipart/x-mixed-replace): every browser plays it in a plain <img>
with no script or codec, it needs nothing from the internet, and each part is one verified
frame, so what is shown is exactly what was checked. Public streams forward the camera's own
JPEG bytes untouched; an unlocked session gets frames decrypted and re-encoded here.

Unlocking: the user's password is posted once (JSON, same origin) and used to open their
keystore in this process; the browser only gets a random session cookie (HttpOnly,
SameSite=Strict). Keys never reach the browser, its storage or any URL.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import cv2

from common.errors import KeystoreError, TransportError, VeilcamError
from common.home import Home, check_user_name
from common.lifecycle import StopFlag
from viewer.client import ReceivedFrame, RelayClient
from viewer.login import LOGIN_FAILED, login
from viewer.playback import ArchiveReader, parse_time
from viewer.render import describe, render
from viewer.unlock import Unlocker

log = logging.getLogger("veilcam.web")

STATIC_DIR = Path(__file__).parent / "static"
COOKIE = "veilcam_session"


@dataclass
class Latest:
    received: ReceivedFrame
    counter: int
    at: float


class FrameHub:
    """One thread receives and verifies the relay; handlers wait on ``cond`` for new frames."""

    def __init__(self, home: Home, stop: StopFlag) -> None:
        self.client = RelayClient(home)
        self.cameras = self.client.trust.camera_ids
        self.latest: dict[str, Latest] = {}
        self.cond = threading.Condition()
        self.stop = stop
        self.counter = 0
        self.thread = threading.Thread(target=self._run, name="relay", daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    got = self.client.receive(timeout_ms=200)
                except TransportError as exc:
                    log.error("%s", exc)
                    self.stop.set("store failed authentication")
                    break
                if got is None:
                    continue
                if got.verified:
                    # fetch the epoch's envelope now, in this thread, so sessions find it
                    self.client.envelope(got.msg.camera_id, got.msg.header.epoch_id)
                with self.cond:
                    self.counter += 1
                    self.latest[got.msg.camera_id] = Latest(got, self.counter, time.time())
                    self.cond.notify_all()
        finally:
            self.client.close()
            with self.cond:
                self.cond.notify_all()

    def envelope_lookup(self, camera_id: str, epoch_id: bytes):
        return self.client.envelopes.get((camera_id, epoch_id))

    def wait_newer(self, camera_id: str, counter: int, timeout: float) -> Latest | None:
        with self.cond:
            self.cond.wait_for(lambda: self.stop.is_set() or (
                camera_id in self.latest and self.latest[camera_id].counter > counter), timeout)
            latest = self.latest.get(camera_id)
            return latest if latest and latest.counter > counter else None


class Sessions:
    def __init__(self) -> None:
        self._by_token: dict[str, Unlocker] = {}
        self._lock = threading.Lock()

    def create(self, unlocker: Unlocker) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._by_token[token] = unlocker
        return token

    def get(self, token: str | None) -> Unlocker | None:
        if not token:
            return None
        with self._lock:
            return self._by_token.get(token)

    def drop(self, token: str | None) -> None:
        with self._lock:
            self._by_token.pop(token or "", None)


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], home: Home, hub: FrameHub, jpeg_quality: int):
        super().__init__(address, Handler)
        self.home, self.hub, self.jpeg_quality = home, hub, jpeg_quality
        self.sessions = Sessions()


class Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:  # route through our logging, quietly
        log.debug("%s %s", self.address_string(), fmt % args)

    # ------------------------------------------------------------------ helpers
    def _session_token(self) -> str | None:
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        return cookie[COOKIE].value if COOKIE in cookie else None

    def _unlocker(self) -> Unlocker | None:
        return self.server.sessions.get(self._session_token())

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self'")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, doc: object, headers: dict | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", headers)

    def _host_ok(self) -> bool:
        """Refuse requests addressed to another host name (DNS rebinding: a web page that
        resolves its own name to 127.0.0.1 must not reach the stream or the unlock form)."""
        port = self.server.server_address[1]
        allowed = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]",
                                           self.server.server_address[0])}
        if self.headers.get("Host", "") in allowed:
            return True
        self._json(403, {"error": "unexpected Host header"})
        return False

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if not self._host_ok():
            return
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, (STATIC_DIR / "index.html").read_bytes(), "text/html; charset=utf-8")
        elif path == "/app.js":
            self._send(200, (STATIC_DIR / "app.js").read_bytes(), "text/javascript")
        elif path == "/app.css":
            self._send(200, (STATIC_DIR / "app.css").read_bytes(), "text/css")
        elif path == "/api/status":
            self._status()
        elif path.startswith("/stream/") and path.endswith(".mjpg"):
            query = parse_qs(self.path.split("?", 1)[1]) if "?" in self.path else {}
            camera = path[len("/stream/"):-len(".mjpg")]
            if query.get("from"):
                self._playback(camera, query["from"][0])
            else:
                self._stream(camera)
        elif path.startswith("/snapshot/") and path.endswith(".jpg"):
            self._snapshot(path[len("/snapshot/"):-len(".jpg")])
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok():
            return
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            self._json(415, {"error": "send JSON"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= 4096:
            self._json(413 if length > 4096 else 400, {"error": "bad or too large body"})
            return
        try:
            doc = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self._json(400, {"error": "body is not a JSON object"})
            return
        if self.path == "/api/unlock":
            self._unlock(doc)
        elif self.path == "/api/lock":
            self.server.sessions.drop(self._session_token())
            self._json(200, {"unlocked": False},
                       {"Set-Cookie": f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"})
        else:
            self._json(404, {"error": "not found"})

    def _unlock(self, doc: dict) -> None:
        user, password = str(doc.get("user", "")), str(doc.get("password", ""))
        try:
            identity = login(self.server.home, check_user_name(user), password)
        except (KeystoreError, VeilcamError) as exc:
            log.warning("unlock refused for user %r: %s", user, exc)
            message = str(exc) if "try again" in str(exc) else LOGIN_FAILED
            self._json(429 if "try again" in message else 401, {"error": message})
            return
        token = self.server.sessions.create(Unlocker(identity, self.server.hub.envelope_lookup))
        log.info("user %s unlocked the viewer", identity.name)
        self._json(200, {"unlocked": True, "user": identity.name},
                   {"Set-Cookie": f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"})

    def _status(self) -> None:
        unlocker = self._unlocker()
        hub = self.server.hub
        cameras = []
        for camera in hub.cameras:
            latest = hub.latest.get(camera)
            entry = {"camera": camera, "live": False}
            if latest:
                d = describe(latest.received.msg, latest.received.verified, None,
                             latest.received.problem)
                entry.update(live=time.time() - latest.at < 5, seq=d["seq"],
                             verified=d["verified"], zones=len(d["zones"]),
                             width=d["width"], height=d["height"], problem=d.get("problem", ""))
                if unlocker:
                    keys = unlocker.keys_for(camera, latest.received.msg.header.epoch_id)
                    entry["unlockable"] = bool(keys)
                    entry["unlock_problem"] = unlocker.last_problem
            cameras.append(entry)
        self._json(200, {"user": unlocker.user if unlocker else None, "cameras": cameras})

    def _frame_jpeg(self, latest: Latest, unlocker: Unlocker | None) -> bytes:
        msg = latest.received.msg
        if unlocker is None:
            return msg.public_image  # the camera's own, signed bytes
        shown = render(msg, unlocker)
        ok, buf = cv2.imencode(".jpg", shown.image,
                               [cv2.IMWRITE_JPEG_QUALITY, self.server.jpeg_quality])
        return buf.tobytes() if ok else msg.public_image

    def _snapshot(self, camera: str) -> None:
        latest = self.server.hub.latest.get(camera)
        if latest is None or not latest.received.verified:
            self._json(404, {"error": f"no verified frame from camera {camera!r} yet"})
            return
        self._send(200, self._frame_jpeg(latest, self._unlocker()), "image/jpeg")

    def _write_part(self, jpeg: bytes) -> None:
        self.wfile.write(b"--veilcamframe\r\nContent-Type: image/jpeg\r\n"
                         + f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
        self.wfile.flush()

    def _start_multipart(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=veilcamframe")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()

    def _playback(self, camera: str, when: str) -> None:
        """The archive from ``when``, at the pace it was recorded; unlocked for a session."""
        if camera not in self.server.hub.cameras:
            self._json(404, {"error": f"unknown camera {camera!r}"})
            return
        try:
            reader = ArchiveReader(self.server.home, camera, parse_time(when))
        except (VeilcamError, ValueError) as exc:
            self._json(400, {"error": str(exc)})
            return
        session = self.server.sessions.get(self._session_token())
        unlocker = Unlocker(session.identity, reader.envelope) if session else None
        self._start_multipart()
        started, first_us = time.monotonic(), None
        try:
            for got in reader.frames():
                if self.server.hub.stop.is_set():
                    break
                if not got.verified:
                    continue  # never show what did not verify
                capture_us = got.msg.header.capture_time_us
                first_us = first_us if first_us is not None else capture_us
                delay = (capture_us - first_us) / 1e6 - (time.monotonic() - started)
                if delay > 0:
                    time.sleep(min(delay, 2.0))
                shown = render(got.msg, unlocker)
                ok, buf = cv2.imencode(".jpg", shown.image,
                                       [cv2.IMWRITE_JPEG_QUALITY, self.server.jpeg_quality])
                if ok:
                    self._write_part(buf.tobytes())
        except (BrokenPipeError, ConnectionResetError):
            pass
        except VeilcamError as exc:
            log.warning("playback of %s stopped: %s", camera, exc)
        finally:
            reader.close()
        self.close_connection = True

    def _stream(self, camera: str) -> None:
        if camera not in self.server.hub.cameras:
            self._json(404, {"error": f"unknown camera {camera!r}"})
            return
        token = self._session_token()
        self._start_multipart()
        counter = 0
        hub = self.server.hub
        try:
            while not hub.stop.is_set():
                latest = hub.wait_newer(camera, counter, timeout=1.0)
                if latest is None:
                    continue
                counter = latest.counter
                if not latest.received.verified:
                    continue  # never show what did not verify
                self._write_part(self._frame_jpeg(latest, self.server.sessions.get(token)))
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def run_web(home: Home, host: str | None = None, port: int | None = None,
            stop: StopFlag | None = None) -> int:
    cfg = home.viewer_config().viewer
    host = host or cfg.web_host
    port = cfg.web_port if port is None else port
    stop = stop or StopFlag()
    hub = FrameHub(home, stop)
    try:
        server = ViewerServer((host, port), home, hub, cfg.jpeg_quality)
    except OSError as exc:
        log.error("cannot listen on http://%s:%d (%s); choose another --port", host, port, exc)
        return 2
    hub.thread.start()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="http", daemon=True)
    thread.start()
    log.info("viewer ready: http://%s:%d/ (relay %s)", host, server.server_address[1], cfg.relay)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        hub.thread.join(timeout=2)
        log.info("viewer stopped: %s", stop.reason or "error")
    return 0
