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

import datetime as dt
import json
import logging
import os
import secrets
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import cv2
from veilcam.common import deployment
from veilcam.common.errors import KeystoreError, TransportError, VeilcamError
from veilcam.common.home import Home, check_user_name
from veilcam.common.lifecycle import StopFlag
from veilcam.viewer.client import ReceivedFrame, RelayClient
from veilcam.viewer.export import ExportState, export
from veilcam.viewer.freshness import DEFAULT_MAX_AGE_S, Freshness
from veilcam.viewer.login import LOGIN_FAILED, login
from veilcam.viewer.playback import ArchiveReader, parse_time
from veilcam.viewer.private import make_private, private_dir, private_umask
from veilcam.viewer.render import describe, render
from veilcam.viewer.trustreload import OUTDATED_TRUST_HINT, OUTDATED_TRUST_REASONS, watch_trust
from veilcam.viewer.unlock import Unlocker, no_grant_reason

log = logging.getLogger("veilcam.web")

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {  # URL path -> (file in STATIC_DIR, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript"),
    "/app.css": ("app.css", "text/css"),
}
COOKIE = "veilcam_session"


@dataclass
class Latest:
    received: ReceivedFrame
    counter: int
    at: float


class FrameHub:
    """One thread receives and verifies the relay; handlers wait on ``cond`` for new frames."""

    def __init__(self, home: Home, stop: StopFlag, max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        self.home = home
        self.client = RelayClient(home)
        self.cameras = self.client.trust.camera_ids
        self.latest: dict[str, Latest] = {}
        self.cond = threading.Condition()
        self.stop = stop
        self.counter = 0
        self.max_age_s = max_age_s
        self.freshness = Freshness(max_age_s)  # until the store's clock is measured
        self.reloader = watch_trust(home, self.client)
        self.thread = threading.Thread(target=self._run, name="relay", daemon=True)

    def _run(self) -> None:
        try:
            # the store's clock, once (at most 2 s; a store that does not answer: no allowance)
            self.freshness = Freshness.measured(self.home, self.max_age_s)
            while not self.stop.is_set():
                if self.reloader.poll():  # renewed or revoked certificates, as the store does
                    self.cameras = self.client.trust.camera_ids
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
            self.cond.wait_for(
                lambda: (
                    self.stop.is_set()
                    or (camera_id in self.latest and self.latest[camera_id].counter > counter)
                ),
                timeout,
            )
            latest = self.latest.get(camera_id)
            return latest if latest and latest.counter > counter else None


@dataclass
class Session:
    unlocker: Unlocker
    created: float
    used: float


class Sessions:
    """Unlocked sessions by cookie token. A session ends after ``idle_s`` without a request (an
    open stream counts as requests) or ``max_s`` after the unlock, whichever comes first; its
    keys are dropped with it and the streams fall back to the public view."""

    def __init__(
        self,
        idle_s: float = 15 * 60,
        max_s: float = 12 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock  # monotonic seconds: idle and maximum session age
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.idle_s, self.max_s = idle_s, max_s

    def create(self, unlocker: Unlocker) -> str:
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._by_token[token] = Session(unlocker, now, now)
        return token

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.used > self.idle_s or now - session.created > self.max_s

    def sweep(self) -> int:
        """End every expired session now, dropping its keys (not only when its cookie comes
        back): called on every request and by a timer. Returns how many ended."""
        now = self.clock()
        with self._lock:
            ended = [(t, s) for t, s in self._by_token.items() if self._expired(s, now)]
            for token, _ in ended:
                del self._by_token[token]
        for _, session in ended:
            log.info("session of user %s expired; locked", session.unlocker.user)
            session.unlocker.forget()
        return len(ended)

    def get(self, token: str | None) -> Unlocker | None:
        self.sweep()
        if not token:
            return None
        with self._lock:
            session = self._by_token.get(token)
            if session is None:
                return None
            session.used = self.clock()
            return session.unlocker

    def owns(self, token: str | None, owner: str) -> bool:
        """Whether ``token`` is the live session ``owner`` (a token) names."""
        if not token or not owner:
            return False
        return (
            secrets.compare_digest(token.encode(), owner.encode()) and self.get(token) is not None
        )

    def drop(self, token: str | None) -> None:
        with self._lock:
            session = self._by_token.pop(token or "", None)
        if session is not None:
            session.unlocker.forget()

    def start_sweeper(self, stop: StopFlag, every_s: float = 30.0) -> threading.Thread:
        """A timer that ends expired sessions even when no request comes."""

        def run() -> None:
            while not stop.wait(every_s):
                self.sweep()

        thread = threading.Thread(target=run, name="session-sweeper", daemon=True)
        thread.start()
        return thread


@dataclass
class ExportJob:
    """One export started from the page; its thread updates ``done``/``total``/``state``."""

    job_id: str
    camera: str
    video: Path
    owner: str = ""  # the session token that started an unlocked export ("" for redacted)
    state: ExportState = ExportState.RUNNING
    done: int = 0
    total: int = 0
    error: str = ""
    manifest: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {
            "id": self.job_id,
            "camera": self.camera,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "file": str(self.video),
            "bundle": str(self.video) + ".bundle" if self.state == ExportState.DONE else "",
            "frames": self.manifest.get("frames", 0),
            "unlocked_for": self.manifest.get("unlocked_for"),
        }


class Exports:
    """Exports run one at a time in their own thread, into the viewer's export folder."""

    MAX_KEPT = 50

    def __init__(self, home: Home, folder: Path) -> None:
        self.home, self.folder = home, folder
        self.jobs: dict[str, ExportJob] = {}
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()
        self._zip_lock = threading.Lock()

    def start(self, camera: str, from_us: int, to_us: int, identity, owner: str = "") -> ExportJob:
        stamp = dt.datetime.fromtimestamp(from_us / 1e6, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        private_dir(self.folder)  # owner-only: unlocked exports show what the zones hide
        base = f"{camera}-{stamp}-{(to_us - from_us) // 1_000_000}s"
        video = self.folder / f"{base}.mp4"
        n = 1
        while video.exists() or video.with_name(video.name + ".bundle").exists():
            n += 1
            video = self.folder / f"{base}-{n}.mp4"
        job = ExportJob(secrets.token_urlsafe(12), camera, video, owner if identity else "")
        with self._lock:
            if len(self.jobs) >= self.MAX_KEPT:
                finished = [j for j in self.jobs.values() if j.state != ExportState.RUNNING]
                for old in finished[: len(self.jobs) - self.MAX_KEPT + 1]:
                    del self.jobs[old.job_id]
            self.jobs[job.job_id] = job
        threading.Thread(
            target=self._run,
            args=(job, from_us, to_us, identity),
            name=f"export-{camera}",
            daemon=True,
        ).start()
        return job

    def _run(self, job: ExportJob, from_us: int, to_us: int, identity) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        with self._one_at_a_time, private_umask():
            try:
                job.manifest = export(
                    self.home, job.camera, from_us, to_us, job.video, identity, progress
                )
                make_private(job.video)
                make_private(job.video.with_name(job.video.name + ".bundle"))
                job.done = job.total = job.manifest["frames"]
                job.state = ExportState.DONE
                log.info(
                    "exported %d frame(s) of %s to %s (+ .bundle)", job.done, job.camera, job.video
                )
            except (VeilcamError, OSError) as exc:
                job.error, job.state = str(exc), ExportState.FAILED
                log.warning("export of %s failed: %s", job.camera, exc)

    def get(self, job_id: str) -> ExportJob | None:
        with self._lock:
            return self.jobs.get(job_id)

    def bundle_zip(self, job: ExportJob) -> Path:
        """The video and its bundle in one zip, laid out as on disk (made once, kept beside)."""
        bundle = job.video.with_name(job.video.name + ".bundle")
        target = job.video.with_name(bundle.name + ".zip")
        with self._zip_lock:
            if target.exists():
                return target
            partial = target.with_name(target.name + ".part")
            partial.unlink(missing_ok=True)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
                # the manifest names the video beside the bundle
                zf.write(job.video, job.video.name, compress_type=zipfile.ZIP_STORED)
                for f in sorted(bundle.rglob("*")):
                    if f.is_file():
                        zf.write(f, str(f.relative_to(bundle.parent)))
            partial.replace(target)
        return target


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        home: Home,
        hub: FrameHub,
        jpeg_quality: int,
        export_dir: Path,
        session_idle_s: float = 15 * 60,
        session_max_s: float = 12 * 3600,
    ):
        super().__init__(address, Handler)
        self.home, self.hub, self.jpeg_quality = home, hub, jpeg_quality
        self.sessions = Sessions(session_idle_s, session_max_s)
        self.sessions.start_sweeper(hub.stop, max(1.0, min(30.0, session_idle_s / 4)))
        self.exports = Exports(home, export_dir)


class Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"
    head_only = False  # HEAD: the GET answer's status and headers, without its body

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
        if not self.head_only:
            self.wfile.write(body)

    def _json(self, status: int, doc: object, headers: dict | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", headers)

    def _host_ok(self) -> bool:
        """Refuse requests addressed to another host name (DNS rebinding: a web page that
        resolves its own name to 127.0.0.1 must not reach the stream or the unlock form)."""
        bound, port = self.server.server_address[:2]
        # getsockname() names an AF_INET host with a str; typeshed's address type allows bytes
        bound_host = bound.decode() if isinstance(bound, (bytes, bytearray)) else bound
        allowed = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]", bound_host)}
        if self.headers.get("Host", "") in allowed:
            return True
        self._json(403, {"error": "unexpected Host header"})
        return False

    # ------------------------------------------------------------------ routes
    def do_HEAD(self) -> None:  # noqa: N802
        self.head_only = True
        try:
            self.do_GET()
        finally:
            self.head_only = False

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if not self._host_ok():
            return
        path = self.path.split("?", 1)[0]
        if path in STATIC_FILES:
            name, content_type = STATIC_FILES[path]
            self._send(200, (STATIC_DIR / name).read_bytes(), content_type)
        elif path == "/api/status":
            self._status()
        elif path.startswith("/stream/") and path.endswith(".mjpg"):
            self._stream_or_playback(path[len("/stream/") : -len(".mjpg")])
        elif path.startswith("/snapshot/") and path.endswith(".jpg"):
            self._snapshot(path[len("/snapshot/") : -len(".jpg")])
        else:
            for prefix, handler in (
                ("/api/timeline/", self._timeline),
                ("/api/export/", self._export_status),
                ("/exports/", self._download),
            ):
                if path.startswith(prefix):
                    handler(path[len(prefix) :])
                    return
            self._json(404, {"error": "not found"})

    def _export_status(self, job_id: str) -> None:
        job = self._own_job(job_id)
        if job is None:
            self._json(404, {"error": "no such export"})
        else:
            self._json(200, job.as_json())

    def _stream_or_playback(self, camera: str) -> None:
        query = parse_qs(self.path.split("?", 1)[1]) if "?" in self.path else {}
        if query.get("from"):
            self._playback(camera, query["from"][0])
        else:
            self._stream(camera)

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
        elif self.path == "/api/export":
            self._start_export(doc)
        elif self.path == "/api/lock":
            self.server.sessions.drop(self._session_token())
            self._json(
                200,
                {"unlocked": False},
                {"Set-Cookie": f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"},
            )
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
        unlocker = Unlocker(identity, self.server.hub.envelope_lookup)
        token = self.server.sessions.create(unlocker)
        no_grant = self._no_grant(unlocker)
        doc = {"unlocked": True, "user": identity.name, "no_grant": no_grant}
        if no_grant:
            doc["warning"] = f"unlocked as {identity.name}, but " + "; ".join(no_grant.values())
            log.warning(
                "user %s unlocked the viewer, but %s", identity.name, "; ".join(no_grant.values())
            )
        else:
            log.info("user %s unlocked the viewer", identity.name)
        self._json(200, doc, {"Set-Cookie": f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"})

    def _no_grant(self, unlocker: Unlocker) -> dict[str, str]:
        """Cameras whose current epoch this user cannot open (revoked or never granted),
        with the reason to show; cameras whose key envelope is not known yet are left out."""
        out = {}
        for camera in self.server.hub.cameras:
            latest = self.server.hub.latest.get(camera)
            if latest is None or not latest.received.verified:
                continue
            unlocker.keys_for(camera, latest.received.msg.header.epoch_id)
            if camera in unlocker.no_grant:
                out[camera] = no_grant_reason(self.server.home, unlocker.user, camera)
        return out

    def _query(self) -> dict[str, str]:
        query = parse_qs(self.path.split("?", 1)[1]) if "?" in self.path else {}
        return {k: v[0] for k, v in query.items() if v}

    def _timeline(self, camera: str) -> None:
        """The archive's extent and how many frames fall in each slice of it (0: a gap)."""
        if camera not in self.server.hub.cameras:
            self._json(404, {"error": f"unknown camera {camera!r}"})
            return
        try:
            buckets = max(1, min(int(self._query().get("buckets", "200")), 1000))
        except ValueError:
            self._json(400, {"error": "buckets must be a number"})
            return
        try:
            reader = ArchiveReader(self.server.home, camera, 0)
        except VeilcamError as exc:
            self._json(503, {"error": str(exc)})
            return
        try:
            span = reader.span()
            if span is None:
                self._json(200, {"camera": camera, "frames": 0, "buckets": []})
                return
            first_us, last_us, frames = span
            end_us = max(last_us + 1, first_us + buckets)
            counts = reader.coverage(first_us, end_us, buckets)
        except VeilcamError as exc:
            self._json(503, {"error": str(exc)})
            return
        finally:
            reader.close()
        self._json(
            200,
            {
                "camera": camera,
                "frames": frames,
                "first_us": first_us,
                "last_us": last_us,
                "bucket_us": -(-(end_us - first_us) // buckets),
                "buckets": counts,
            },
        )

    def _start_export(self, doc: dict) -> None:
        camera = str(doc.get("camera", ""))
        if camera not in self.server.hub.cameras:
            self._json(404, {"error": f"unknown camera {camera!r}"})
            return
        try:
            from_us, to_us = (
                parse_time(str(doc.get("from", ""))),
                parse_time(str(doc.get("to", ""))),
            )
        except VeilcamError as exc:
            self._json(400, {"error": str(exc)})
            return
        if to_us <= from_us:
            self._json(400, {"error": "the end of the export must be after its start"})
            return
        session = self._unlocker()
        job = self.server.exports.start(
            camera,
            from_us,
            to_us,
            session.identity if session else None,
            self._session_token() or "",
        )
        log.info(
            "export %s of %s started (%s)",
            job.job_id,
            camera,
            f"unlocked for {session.user}" if session else "redacted",
        )
        self._json(202, job.as_json())

    def _own_job(self, job_id: str) -> ExportJob | None:
        """The export, if this request may see it: an unlocked export belongs to the session
        that started it (and ends with it: Lock or expiry); a redacted one to anyone here."""
        job = self.server.exports.get(job_id)
        if job is None or (
            job.owner and not self.server.sessions.owns(self._session_token(), job.owner)
        ):
            return None
        return job

    def _download(self, rest: str) -> None:
        """/exports/JOB/video.mp4 or /exports/JOB/bundle.zip of a finished export."""
        job_id, _, what = rest.partition("/")
        job = self._own_job(job_id)
        if job is None or job.state != ExportState.DONE or what not in ("video.mp4", "bundle.zip"):
            self._json(404, {"error": "no such finished export"})
            return
        if what == "video.mp4":
            path, ctype = job.video, "video/mp4"
        else:
            path, ctype = self.server.exports.bundle_zip(job), "application/zip"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Content-Disposition", f'attachment; filename="{path.name}"')
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.head_only:
            return
        try:
            with open(path, "rb") as fh:
                shutil.copyfileobj(fh, self.wfile, 2**20)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _status(self) -> None:
        unlocker = self._unlocker()
        hub = self.server.hub
        cameras = []
        for camera in hub.cameras:
            latest = hub.latest.get(camera)
            entry: dict[str, object] = {"camera": camera, "live": False}
            if latest:
                d = describe(
                    latest.received.msg, latest.received.verified, None, latest.received.problem
                )
                problem: str = d.get("problem", "")
                # a validly signed frame is not a live one: judge its capture time too
                entry.update(
                    live=time.time() - latest.at < 5,
                    seq=d["seq"],
                    verified=d["verified"],
                    zones=len(d["zones"]),
                    width=d["width"],
                    height=d["height"],
                    problem=problem,
                    capture_time_us=d["capture_time_us"],
                    max_age_s=round(hub.freshness.allowed_s, 3),
                    **hub.freshness.judge(d["capture_time_us"]),
                )
                if problem.split(":", 1)[0] in OUTDATED_TRUST_REASONS:
                    entry["hint"] = OUTDATED_TRUST_HINT
                if unlocker:
                    keys = unlocker.keys_for(camera, latest.received.msg.header.epoch_id)
                    entry["unlockable"] = bool(keys)
                    entry["unlock_problem"] = (
                        no_grant_reason(self.server.home, unlocker.user, camera)
                        if camera in unlocker.no_grant and not keys
                        else ""
                        if keys
                        else unlocker.last_problem
                    )
            cameras.append(entry)
        self._json(200, {"user": unlocker.user if unlocker else None, "cameras": cameras})

    def _frame_jpeg(self, latest: Latest, unlocker: Unlocker | None) -> bytes:
        msg = latest.received.msg
        if unlocker is None:
            return msg.public_image  # the camera's own, signed bytes
        shown = render(msg, unlocker)
        ok, buf = cv2.imencode(
            ".jpg", shown.image, [cv2.IMWRITE_JPEG_QUALITY, self.server.jpeg_quality]
        )
        return buf.tobytes() if ok else msg.public_image

    def _snapshot(self, camera: str) -> None:
        latest = self.server.hub.latest.get(camera)
        if latest is None or not latest.received.verified:
            self._json(404, {"error": f"no verified frame from camera {camera!r} yet"})
            return
        self._send(200, self._frame_jpeg(latest, self._unlocker()), "image/jpeg")

    def _write_part(self, jpeg: bytes) -> None:
        self.wfile.write(
            b"--veilcamframe\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
            + jpeg
            + b"\r\n"
        )
        self.wfile.flush()

    def _start_multipart(self) -> bool:
        """Send the stream's headers; False for HEAD (no parts follow)."""
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=veilcamframe")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.head_only:
            self.close_connection = True
            return False
        return True

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
        token = self._session_token()
        session = self.server.sessions.get(token)
        unlocker = Unlocker(session.identity, reader.envelope) if session else None
        if not self._start_multipart():
            reader.close()
            return
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
                if unlocker is not None and self.server.sessions.get(token) is None:
                    unlocker = None  # locked or expired meanwhile: public from now on
                shown = render(got.msg, unlocker)
                ok, buf = cv2.imencode(
                    ".jpg", shown.image, [cv2.IMWRITE_JPEG_QUALITY, self.server.jpeg_quality]
                )
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
        if not self._start_multipart():
            return
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


def run_web(
    home: Home,
    host: str | None = None,
    port: int | None = None,
    stop: StopFlag | None = None,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    on_ready: Callable[[dict[str, str]], None] | None = None,
) -> int:
    """Serve the browser page until ``stop``; ``on_ready`` gets its address once it listens
    (``--ready-file``)."""
    with private_umask():  # exports and zips: owner-only, whatever the caller's umask
        return _run_web(home, host, port, stop, max_age_s, on_ready)


def _run_web(
    home: Home,
    host: str | None,
    port: int | None,
    stop: StopFlag | None,
    max_age_s: float,
    on_ready: Callable[[dict[str, str]], None] | None = None,
) -> int:
    cfg = deployment.viewer_config(home).viewer
    host = host or cfg.web_host
    port = cfg.web_port if port is None else port
    stop = stop or StopFlag()
    hub = FrameHub(home, stop, max_age_s)
    try:
        server = ViewerServer(
            (host, port),
            home,
            hub,
            cfg.jpeg_quality,
            home.resolve(cfg.export_dir),
            cfg.session_idle_minutes * 60,
            cfg.session_max_hours * 3600,
        )
    except OSError as exc:
        log.error("cannot listen on http://%s:%d (%s); choose another --port", host, port, exc)
        return 2
    hub.thread.start()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
    )
    thread.start()
    log.info("viewer ready: http://%s:%d/ (relay %s)", host, server.server_address[1], cfg.relay)
    if on_ready is not None:
        on_ready({"url": f"http://{host}:{server.server_address[1]}/", "relay": cfg.relay})
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        hub.thread.join(timeout=2)
        log.info("viewer stopped: %s", stop.reason or "error")
    return 0
