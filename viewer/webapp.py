"""The browser viewer's routes, as a Starlette (ASGI) application.

Every request first passes the Host check (``HostCheck``), then one of the routes below.
Blocking work never runs on the event loop: the plain ``def`` routes run in Starlette's
thread pool (unlock's key derivation, archive queries, zip files, decryption and JPEG
encoding for a snapshot), and the streams hand each decryption, encoding and archive read to
it too. Live streams wait for frames in the event loop (``FrameSignal``), not in a thread each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from veilcam.common.errors import KeystoreError, VeilcamError
from veilcam.common.format import FrameMessage
from veilcam.common.home import Home, check_user_name
from veilcam.viewer.export import ExportState
from veilcam.viewer.framehub import FrameHub, Latest
from veilcam.viewer.login import LOGIN_FAILED, login
from veilcam.viewer.msestream import MseLive
from veilcam.viewer.playback import ArchiveReader, parse_time, shown_frames
from veilcam.viewer.render import GAP_WAITING, Renderer, Shown, describe, render
from veilcam.viewer.sessions import Sessions
from veilcam.viewer.trustreload import OUTDATED_TRUST_HINT, OUTDATED_TRUST_REASONS
from veilcam.viewer.unlock import Unlocker, no_grant_reason
from veilcam.viewer.webexports import ExportJob, Exports

if TYPE_CHECKING:
    import numpy as np
    from veilcam.viewer.client import ReceivedFrame

log = logging.getLogger("veilcam.web")

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {  # URL path -> (file in STATIC_DIR, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript"),
    "/app.css": ("app.css", "text/css"),
}
COOKIE = "veilcam_session"
# on every page, API answer and snapshot
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # media-src blob: the live H.264 stream plays from a MediaSource (viewer/msestream.py)
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; media-src blob:",
}
BOUNDARY = "veilcamframe"
MULTIPART_HEADERS = {
    "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
    "Cache-Control": "no-store",
    "Connection": "close",
}
MAX_BODY = 4096  # bytes of a posted JSON document


def send(status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> Response:
    """``body`` with the security headers; the content type exactly as given."""
    return Response(
        body, status, headers={"Content-Type": ctype, **SECURITY_HEADERS, **(headers or {})}
    )


def send_json(status: int, doc: object, headers: dict[str, str] | None = None) -> Response:
    return send(status, json.dumps(doc).encode(), "application/json", headers)


def mjpeg_part(jpeg: bytes) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n".encode()
        + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
        + jpeg
        + b"\r\n"
    )


def first_query_values(request: Request) -> dict[str, str]:
    """Each query parameter's first non-empty value (as ``parse_qs`` gave the old server)."""
    out: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if value and key not in out:
            out[key] = value
    return out


class HostCheck:
    """Refuse requests addressed to another host name (DNS rebinding: a web page that
    resolves its own name to 127.0.0.1 must not reach the stream or the unlock form), and
    requests another site's page makes (``Sec-Fetch-Site: cross-site``, which browsers set
    and pages cannot): an ``<img>`` on any site could otherwise make this viewer decode
    streams and snapshots until its CPU and threads run out. Following a link to the page
    itself (a top-level navigation) stays allowed."""

    def __init__(self, app: ASGIApp, allowed: Collection[str]) -> None:
        self.app, self.allowed = app, frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send_: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = Headers(scope=scope)
            refusal = ""
            if headers.get("host", "") not in self.allowed:
                refusal = "unexpected Host header"
            elif headers.get("sec-fetch-site") == "cross-site" and not (
                headers.get("sec-fetch-mode") == "navigate" and scope.get("method") == "GET"
            ):
                refusal = "requests from another site's page are refused"
            if refusal:
                if scope["type"] == "websocket":
                    await send_({"type": "websocket.close", "code": 1008})
                else:
                    await send_json(403, {"error": refusal})(scope, receive, send_)
                return
        await self.app(scope, receive, send_)


def allowed_hosts(bound_host: str, port: int) -> set[str]:
    """The Host headers this server answers: loopback names and the bound address, with port."""
    return {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]", bound_host)}


class FrameSignal:
    """Wakes the streams waiting in the event loop when the relay thread has a new frame.

    ``notify_threadsafe`` may be called from any thread; ``wait`` only in the loop. A waiter
    takes the current event after checking for frames, with no await in between, so it
    cannot miss a frame: notifications run in the loop too."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()

    def attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop

    def notify_threadsafe(self) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has just closed
            loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float) -> None:
        """Until the next frame, or ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class ViewerApp:
    """The routes and what they share: the hub's frames, the sessions and the exports."""

    def __init__(
        self,
        home: Home,
        hub: FrameHub,
        jpeg_quality: int,
        sessions: Sessions,
        exports: Exports,
        hosts: Collection[str],
    ) -> None:
        self.home, self.hub, self.jpeg_quality = home, hub, jpeg_quality
        self.sessions, self.exports = sessions, exports
        self.signal = FrameSignal()
        # camera -> the gap the latest live stream of it reported ("" when it showed a
        # picture): an H.264 stream waiting for a keyframe shows its last picture, stamped
        self.gaps: dict[str, str] = {}
        not_found = self._not_found
        self.app = Starlette(
            routes=self._routes(),
            exception_handlers={404: not_found, 405: not_found},
            lifespan=self._lifespan,
        )
        self.app.add_middleware(HostCheck, allowed=hosts)

    def _routes(self) -> list[BaseRoute]:
        get, post = ["GET"], ["POST"]  # GET routes answer HEAD too
        return [
            *(Route(path, self.static, methods=get) for path in STATIC_FILES),
            Route("/api/status", self.status, methods=get),
            Route("/stream/{camera:path}.mjpg", self.stream, methods=get),
            Route("/snapshot/{camera:path}.jpg", self.snapshot, methods=get),
            Route("/api/timeline/{camera:path}", self.timeline, methods=get),
            Route("/api/export/{job_id:path}", self.export_status, methods=get),
            Route("/exports/{rest:path}", self.download, methods=get),
            Route("/api/unlock", self.unlock, methods=post),
            Route("/api/export", self.start_export, methods=post),
            Route("/api/lock", self.lock, methods=post),
            WebSocketRoute(
                "/ws/live/{camera:path}", MseLive(self.hub, self.sessions, COOKIE).endpoint
            ),
        ]

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self.signal.attach(asyncio.get_running_loop())
        self.hub.on_frame = self.signal.notify_threadsafe
        try:
            yield
        finally:
            self.hub.on_frame = None
            self.signal.attach(None)

    async def _not_found(self, _request: Request, _exc: Exception) -> Response:
        """Unknown paths, and known paths asked with another method (as the old server did)."""
        return send_json(404, {"error": "not found"})

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _token(request: Request) -> str | None:
        return request.cookies.get(COOKIE)

    def _unlocker(self, request: Request) -> Unlocker | None:
        return self.sessions.get(self._token(request))

    def _jpeg(self, image: np.ndarray) -> bytes | None:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        return buf.tobytes() if ok else None

    def _encode(self, msg: FrameMessage, unlocker: Unlocker | None) -> bytes | None:
        """A version-1 frame as JPEG, unlocked for ``unlocker`` (stateless: version 1)."""
        image = render(msg, unlocker).image
        return None if image is None else self._jpeg(image)

    def _frame_jpeg(self, latest: Latest, unlocker: Unlocker | None) -> bytes:
        """A version-1 frame as shown: the camera's own JPEG when public."""
        msg = latest.received.msg
        if unlocker is None:
            return msg.public_image  # the camera's own, signed bytes
        return self._encode(msg, unlocker) or msg.public_image

    def _render_jpeg(
        self, renderer: Renderer, frames: list[Latest], unlocker: Unlocker | None
    ) -> tuple[bytes | None, str]:
        """Decode ``frames`` in order (an H.264 stream needs every one) and JPEG-encode the
        last one's picture: (JPEG, "") or (None, the gap: no picture for the last frame)."""
        renderer.unlocker = unlocker
        shown: Shown | None = None
        for latest in frames:
            shown = renderer.render(latest.received.msg)
        if shown is None or shown.image is None:
            return None, shown.gap if shown is not None else GAP_WAITING
        return self._jpeg(shown.image), ""

    def _snapshot_v2(self, camera: str, unlocker: Unlocker | None) -> tuple[bytes | None, str]:
        """The current picture of an H.264 camera: its group of pictures decoded afresh."""
        return self._render_jpeg(Renderer(), self.hub.frames_after(camera, 0), unlocker)

    # ------------------------------------------------------------------ pages and status
    def static(self, request: Request) -> Response:
        name, content_type = STATIC_FILES[request.url.path]
        return send(200, (STATIC_DIR / name).read_bytes(), content_type)

    def status(self, request: Request) -> Response:
        unlocker = self._unlocker(request)
        cameras = [self._camera_status(camera, unlocker) for camera in self.hub.cameras]
        return send_json(200, {"user": unlocker.user if unlocker else None, "cameras": cameras})

    def _camera_status(self, camera: str, unlocker: Unlocker | None) -> dict[str, object]:
        hub = self.hub
        latest = hub.latest.get(camera)
        entry: dict[str, object] = {"camera": camera, "live": False}
        if latest is None:
            return entry
        d = describe(latest.received.msg, latest.received.verified, None, latest.received.problem)
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
        if self.gaps.get(camera):
            entry["gap"] = self.gaps[camera]  # the stream shows its last picture, no newer
        if problem.split(":", 1)[0] in OUTDATED_TRUST_REASONS:
            entry["hint"] = OUTDATED_TRUST_HINT
        if unlocker:
            keys = unlocker.keys_for(camera, latest.received.msg.header.epoch_id)
            entry["unlockable"] = bool(keys)
            entry["unlock_problem"] = (
                no_grant_reason(self.home, unlocker.user, camera)
                if camera in unlocker.no_grant and not keys
                else ""
                if keys
                else unlocker.last_problem
            )
        return entry

    def snapshot(self, request: Request) -> Response:
        camera = request.path_params["camera"]
        latest = self.hub.latest.get(camera)
        if latest is None or not latest.received.verified:
            return send_json(404, {"error": f"no verified frame from camera {camera!r} yet"})
        unlocker = self._unlocker(request)
        if latest.received.msg.version == 1:
            return send(200, self._frame_jpeg(latest, unlocker), "image/jpeg")
        jpeg, gap = self._snapshot_v2(camera, unlocker)
        if jpeg is None:
            return send_json(503, {"error": f"no picture of camera {camera!r} now: {gap}"})
        return send(200, jpeg, "image/jpeg")

    def timeline(self, request: Request) -> Response:
        """The archive's extent and how many frames fall in each slice of it (0: a gap)."""
        camera = request.path_params["camera"]
        if camera not in self.hub.cameras:
            return send_json(404, {"error": f"unknown camera {camera!r}"})
        try:
            buckets = max(1, min(int(first_query_values(request).get("buckets", "200")), 1000))
        except ValueError:
            return send_json(400, {"error": "buckets must be a number"})
        try:
            reader = ArchiveReader(self.home, camera, 0)
        except VeilcamError as exc:
            return send_json(503, {"error": str(exc)})
        try:
            span = reader.span()
            if span is None:
                return send_json(200, {"camera": camera, "frames": 0, "buckets": []})
            first_us, last_us, frames = span
            end_us = max(last_us + 1, first_us + buckets)
            counts = reader.coverage(first_us, end_us, buckets)
        except VeilcamError as exc:
            return send_json(503, {"error": str(exc)})
        finally:
            reader.close()
        return send_json(
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

    # ------------------------------------------------------------------ unlock and lock
    async def unlock(self, request: Request) -> Response:
        doc = await read_json(request)
        if isinstance(doc, Response):
            return doc
        previous = self._token(request)
        return await run_in_threadpool(self._unlock, doc, previous)  # key derivation is slow

    def _unlock(self, doc: dict, previous: str | None = None) -> Response:
        user, password = str(doc.get("user", "")), str(doc.get("password", ""))
        try:
            identity = login(self.home, check_user_name(user), password)
        except (KeystoreError, VeilcamError) as exc:
            log.warning("unlock refused for user %r: %s", user, exc)
            message = str(exc) if "try again" in str(exc) else LOGIN_FAILED
            return send_json(429 if "try again" in message else 401, {"error": message})
        unlocker = Unlocker(identity, self.hub.envelope_lookup)
        self.sessions.drop(previous)  # unlocking again: the old session's keys go now
        token = self.sessions.create(unlocker)
        no_grant = self._no_grant(unlocker)
        answer: dict[str, object] = {"unlocked": True, "user": identity.name, "no_grant": no_grant}
        if no_grant:
            answer["warning"] = f"unlocked as {identity.name}, but " + "; ".join(no_grant.values())
            log.warning(
                "user %s unlocked the viewer, but %s", identity.name, "; ".join(no_grant.values())
            )
        else:
            log.info("user %s unlocked the viewer", identity.name)
        cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
        return send_json(200, answer, {"Set-Cookie": cookie})

    def _no_grant(self, unlocker: Unlocker) -> dict[str, str]:
        """Cameras whose current epoch this user cannot open (revoked or never granted),
        with the reason to show; cameras whose key envelope is not known yet are left out."""
        out = {}
        for camera in self.hub.cameras:
            latest = self.hub.latest.get(camera)
            if latest is None or not latest.received.verified:
                continue
            unlocker.keys_for(camera, latest.received.msg.header.epoch_id)
            if camera in unlocker.no_grant:
                out[camera] = no_grant_reason(self.home, unlocker.user, camera)
        return out

    async def lock(self, request: Request) -> Response:
        doc = await read_json(request)
        if isinstance(doc, Response):
            return doc
        self.sessions.drop(self._token(request))
        cookie = f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"
        return send_json(200, {"unlocked": False}, {"Set-Cookie": cookie})

    # ------------------------------------------------------------------ exports
    async def start_export(self, request: Request) -> Response:
        doc = await read_json(request)
        if isinstance(doc, Response):
            return doc
        return await run_in_threadpool(self._start_export, doc, self._token(request))

    def _start_export(self, doc: dict, token: str | None) -> Response:
        camera = str(doc.get("camera", ""))
        if camera not in self.hub.cameras:
            return send_json(404, {"error": f"unknown camera {camera!r}"})
        try:
            from_us = parse_time(str(doc.get("from", "")))
            to_us = parse_time(str(doc.get("to", "")))
        except VeilcamError as exc:
            return send_json(400, {"error": str(exc)})
        if to_us <= from_us:
            return send_json(400, {"error": "the end of the export must be after its start"})
        session = self.sessions.get(token)
        job = self.exports.start(
            camera, from_us, to_us, session.identity if session else None, token or ""
        )
        log.info(
            "export %s of %s started (%s)",
            job.job_id,
            camera,
            f"unlocked for {session.user}" if session else "redacted",
        )
        return send_json(202, job.as_json())

    def _own_job(self, request: Request, job_id: str) -> ExportJob | None:
        """The export, if this request may see it: an unlocked export belongs to the session
        that started it (and ends with it: Lock or expiry); a redacted one to anyone here."""
        job = self.exports.get(job_id)
        if job is None or (job.owner and not self.sessions.owns(self._token(request), job.owner)):
            return None
        return job

    def export_status(self, request: Request) -> Response:
        job = self._own_job(request, request.path_params["job_id"])
        if job is None:
            return send_json(404, {"error": "no such export"})
        return send_json(200, job.as_json())

    def download(self, request: Request) -> Response:
        """/exports/JOB/video.mp4 or /exports/JOB/bundle.zip of a finished export."""
        job_id, _, what = request.path_params["rest"].partition("/")
        job = self._own_job(request, job_id)
        if job is None or job.state != ExportState.DONE or what not in ("video.mp4", "bundle.zip"):
            return send_json(404, {"error": "no such finished export"})
        if what == "video.mp4":
            path, ctype = job.video, "video/mp4"
        else:
            path, ctype = self.exports.bundle_zip(job), "application/zip"
        return FileResponse(
            path,
            media_type=ctype,
            filename=path.name,  # Content-Disposition: attachment
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    # ------------------------------------------------------------------ streams
    async def stream(self, request: Request) -> Response:
        """Live MJPEG, or the archive from ``?from=T`` (playback)."""
        camera = request.path_params["camera"]
        if camera not in self.hub.cameras:
            return send_json(404, {"error": f"unknown camera {camera!r}"})
        when = first_query_values(request).get("from")
        if when:
            return await self._playback(request, camera, when)
        if request.method == "HEAD":  # the headers only: no parts follow
            return StreamingResponse(iter(()), headers=MULTIPART_HEADERS)
        return StreamingResponse(
            self._live(camera, self._token(request)), headers=MULTIPART_HEADERS
        )

    async def _live(self, camera: str, token: str | None) -> AsyncIterator[bytes]:
        """Version-1 frames: the latest one each time (the camera's own JPEG when public).
        Version 2 (H.264): every frame of the current group of pictures not yet decoded by
        this stream goes through its ``Renderer``, then the last picture is JPEG-encoded; a
        frame without a picture (waiting for a keyframe) sends nothing (the page keeps the
        last picture and the status says ``gap``)."""
        counter = 0
        hub = self.hub
        hub.want(camera)  # the current group of pictures, if the hub has none yet
        renderer = Renderer()
        while not hub.stop.is_set():
            latest = hub.latest.get(camera)
            if latest is None or latest.counter <= counter:
                await self.signal.wait(1.0)
                continue
            unlocker = self.sessions.get(token)  # an open stream keeps its session alive
            if latest.received.msg.version == 1:
                counter = latest.counter
                if not latest.received.verified:
                    continue  # never show what did not verify
                if unlocker is None:
                    yield mjpeg_part(latest.received.msg.public_image)
                else:
                    yield mjpeg_part(await run_in_threadpool(self._frame_jpeg, latest, unlocker))
                continue
            pending = hub.frames_after(camera, counter)  # verified only, from a keyframe on
            # (frames may have come since ``latest`` was read: never decode one twice)
            counter = max(latest.counter, pending[-1].counter if pending else 0)
            if not pending:
                continue
            jpeg, gap = await run_in_threadpool(self._render_jpeg, renderer, pending, unlocker)
            self.gaps[camera] = gap
            if jpeg is not None:
                yield mjpeg_part(jpeg)

    async def _playback(self, request: Request, camera: str, when: str) -> Response:
        """The archive from ``when``, at the pace it was recorded; unlocked for a session."""
        try:
            reader = await run_in_threadpool(ArchiveReader, self.home, camera, parse_time(when))
        except (VeilcamError, ValueError) as exc:
            return send_json(400, {"error": str(exc)})
        token = self._token(request)
        session = self.sessions.get(token)
        unlocker = Unlocker(session.identity, reader.envelope) if session else None
        if request.method == "HEAD":
            reader.close()
            return StreamingResponse(iter(()), headers=MULTIPART_HEADERS)
        return StreamingResponse(
            self._played(camera, reader, token, unlocker), headers=MULTIPART_HEADERS
        )

    async def _played(
        self, camera: str, reader: ArchiveReader, token: str | None, unlocker: Unlocker | None
    ) -> AsyncIterator[bytes]:
        # The reader's socket is used by one thread-pool call at a time, never concurrently.
        # The frames before the asked time (from the keyframe before it) are decoded, not
        # shown; each frame is rendered as it is read (a gap, waiting for a keyframe, shows
        # nothing), then paced to the time it was recorded.
        renderer = Renderer(unlocker)
        frames: Iterator[tuple[ReceivedFrame, Shown | None]] = shown_frames(
            reader.frames(preroll=True), renderer
        )
        started, first_us = time.monotonic(), None
        try:
            while not self.hub.stop.is_set():
                if renderer.unlocker is not None and self.sessions.get(token) is None:
                    renderer.unlocker = None  # locked or expired meanwhile: public from now on
                item = await run_in_threadpool(next, frames, None)
                if item is None:
                    break
                got, shown = item
                if shown is None or shown.image is None:
                    continue  # never show what did not verify, nor a broken stream
                capture_us = got.msg.header.capture_time_us
                first_us = first_us if first_us is not None else capture_us
                delay = (capture_us - first_us) / 1e6 - (time.monotonic() - started)
                if delay > 0:
                    await self._pause(min(delay, 2.0))
                if renderer.unlocker is not None and self.sessions.get(token) is None:
                    renderer.unlocker = None  # locked during the pause: not this picture
                    continue
                jpeg = await run_in_threadpool(self._jpeg, shown.image)
                if jpeg is not None:
                    yield mjpeg_part(jpeg)
        except VeilcamError as exc:
            log.warning("playback of %s stopped: %s", camera, exc)
        finally:
            reader.close()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but notice the stop flag within a fifth of a second."""
        end = time.monotonic() + seconds
        while not self.hub.stop.is_set() and (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.2))


async def read_json(request: Request) -> dict | Response:
    """The posted JSON object, or the error answer: JSON only, at most MAX_BODY bytes."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        return send_json(415, {"error": "send JSON"})
    try:
        length = int(request.headers.get("content-length") or 0)
    except ValueError:
        length = -1
    if not 0 <= length <= MAX_BODY:
        return send_json(413 if length > MAX_BODY else 400, {"error": "bad or too large body"})
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:  # a body longer than announced (or chunked)
            return send_json(413, {"error": "bad or too large body"})
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return send_json(400, {"error": "body is not a JSON object"})
    return doc
