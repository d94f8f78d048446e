"""The browser viewer: a page on localhost, served by the process that holds the keys.

Live video is MJPEG (multipart/x-mixed-replace): every browser plays it in a plain <img>
with no script or codec, it needs nothing from the internet, and each part is one verified
frame, so what is shown is exactly what was checked. Public streams forward the camera's own
JPEG bytes untouched; an unlocked session gets frames decrypted and re-encoded here.

Unlocking: the user's password is posted once (JSON, same origin) and used to open their
keystore in this process; the browser only gets a random session cookie (HttpOnly,
SameSite=Strict). Keys never reach the browser, its storage or any URL.

The routes are a Starlette application (``webapp``) served by uvicorn on a socket bound here,
in a thread of its own: the main thread keeps waiting on the StopFlag (SIGINT/SIGTERM), and
stopping asks uvicorn to finish, which takes well under a second once the streams have seen
the flag. The relay thread (``framehub``), the session sweeper and the export threads run
beside it as before.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from veilcam.common import deployment
from veilcam.common.home import Home
from veilcam.common.lifecycle import StopFlag
from veilcam.viewer.framehub import FrameHub
from veilcam.viewer.freshness import DEFAULT_MAX_AGE_S
from veilcam.viewer.private import private_umask
from veilcam.viewer.sessions import Sessions
from veilcam.viewer.webapp import ViewerApp, allowed_hosts
from veilcam.viewer.webexports import Exports

log = logging.getLogger("veilcam.web")

GRACE_S = 2  # at stop, how long uvicorn waits for open responses before cancelling them


class ViewerServer:
    """The web viewer bound to ``address`` (port 0: any free port), served by uvicorn in a
    thread between ``start`` and ``close``. Binding raises OSError (port taken, bad host)."""

    def __init__(
        self,
        address: tuple[str, int],
        home: Home,
        hub: FrameHub,
        jpeg_quality: int,
        export_dir: Path,
        session_idle_s: float = 15 * 60,
        session_max_s: float = 12 * 3600,
    ) -> None:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family)
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self.home, self.hub = home, hub
        self.sessions = Sessions(session_idle_s, session_max_s)
        self.sessions.start_sweeper(hub.stop, max(1.0, min(30.0, session_idle_s / 4)))
        self.exports = Exports(home, export_dir)
        bound_host, bound_port = self.server_address
        self.viewer = ViewerApp(
            home,
            hub,
            jpeg_quality,
            self.sessions,
            self.exports,
            allowed_hosts(bound_host, bound_port),
        )
        config = uvicorn.Config(
            self.viewer.app,
            host=bound_host,
            port=bound_port,
            lifespan="on",
            log_config=None,  # the process's logging stays as the CLI set it up
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=GRACE_S,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="http", daemon=True
        )

    def start(self, timeout: float = 10.0) -> None:
        """Serve from a thread (uvicorn leaves the signal handlers alone there); return once
        it accepts connections. RuntimeError if it did not come up."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the web server did not start")
            time.sleep(0.01)

    def close(self, timeout: float = GRACE_S + 3.0) -> None:
        """Stop serving: open streams end once they see the hub's stop flag (set it first)."""
        self.viewer.signal.notify_threadsafe()  # waiting streams look at the flag now
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(1.0)
        self.socket.close()


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
    try:
        server.start()
    except RuntimeError as exc:
        log.error("%s on http://%s:%d", exc, host, port)
        stop.set("web server failed")
        server.close()
        return 2
    log.info("viewer ready: http://%s:%d/ (relay %s)", host, server.server_address[1], cfg.relay)
    if on_ready is not None:
        on_ready({"url": f"http://{host}:{server.server_address[1]}/", "relay": cfg.relay})
    try:
        while not stop.wait(0.5):
            pass
    finally:
        stop.set("error")  # only when leaving on an exception: end the relay thread and streams
        server.close()
        hub.thread.join(timeout=2)
        log.info("viewer stopped: %s", stop.reason or "error")
    return 0
