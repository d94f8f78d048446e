"""A real RTSP server for the tests: Debian's GStreamer RTSP server (gst-rtsp-server) on loopback.

Two halves in one file:

* run as a script by the **system** Python (``/usr/bin/python3``, which has ``gi``; the venv
  has not): serves a file of H.264 access units at ``rtsp://127.0.0.1:PORT/stream``, looped
  forever at a fixed frame rate, optionally behind basic auth. Each client gets its own
  pipeline (``appsrc ! h264parse ! rtph264pay``), fed from the file in its ``need-data``
  callback with increasing timestamps, so the loop never ends and never jumps back in time.
* imported by the tests (venv Python): :func:`encode_clip` turns the bundled clip (MPEG-4 part
  2, which GStreamer cannot decode without gstreamer1.0-libav) into that file of access units
  with PyAV's libx264, and :class:`RtspServer` starts and stops the script.

The access-unit file is a sequence of ``[4-byte big-endian length][Annex-B access unit]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
STARTUP_TIMEOUT_S = 15.0


# --------------------------------------------------------------------------- test side


def missing_requirements() -> str:
    """Why the RTSP server cannot run here ('' when it can): checked with the system Python."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "missing = [e for e in ('appsrc', 'h264parse', 'rtph264pay')"
        " if Gst.ElementFactory.find(e) is None];"
        "print(' '.join(missing))"
    )
    try:
        done = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"system python failed: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer RTSP server not importable by {SYSTEM_PYTHON} ({last}); run .ci/install-rtsp"
    if done.stdout.strip():
        return f"GStreamer elements missing: {done.stdout.strip()}; run .ci/install-rtsp"
    return ""


def encode_clip(
    clip: Path,
    out: Path,
    *,
    max_frames: int = 300,
    gop: int = 30,
    size: tuple[int, int] | None = None,
) -> float:
    """Encode ``clip`` to a file of H.264 access units (a keyframe every ``gop`` frames, so a
    client that joins or rejoins starts within a second), scaled to ``size`` if given (a camera
    reconfigured to another resolution); returns the clip's frame rate."""
    import av

    with av.open(str(clip)) as src:
        stream = src.streams.video[0]
        fps = float(stream.average_rate or 30)
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height = size or (stream.width, stream.height)
        codec.pix_fmt = "yuv420p"
        rate = stream.average_rate or Fraction(30)
        codec.time_base = 1 / Fraction(rate)
        codec.framerate = rate
        codec.gop_size = gop
        codec.max_b_frames = 0
        codec.options = {"preset": "ultrafast", "tune": "zerolatency", "repeat-headers": "1"}
        codec.open()
        with out.open("wb") as f:

            def write(packets: list) -> None:
                for packet in packets:
                    data = bytes(packet)
                    f.write(struct.pack(">I", len(data)) + data)

            for n, frame in enumerate(src.decode(stream)):
                if n >= max_frames:
                    break
                frame = frame.reformat(width=codec.width, height=codec.height, format="yuv420p")
                frame.pts = n
                frame.time_base = codec.time_base
                write(codec.encode(frame))
            write(codec.encode(None))
    return fps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class RtspServer:
    """The script above in a child process on 127.0.0.1:``port``; :meth:`start` returns once
    the port accepts connections (or raises after STARTUP_TIMEOUT_S)."""

    def __init__(
        self,
        aus: Path,
        *,
        fps: float = 30.0,
        port: int | None = None,
        user: str = "",
        password: str = "",
        log_path: Path | None = None,
    ) -> None:
        self.aus, self.fps = aus, fps
        self.port = port or free_port()
        self.user, self.password = user, password
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        user = self.user if user is None else user
        password = self.password if password is None else password
        auth = f"{user}:{password}@" if user else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}/stream"

    def start(self) -> RtspServer:
        cmd = [SYSTEM_PYTHON, __file__, "--port", str(self.port), "--aus", str(self.aus)]
        cmd += ["--fps", str(self.fps)]
        env = dict(os.environ)
        if self.user:
            cmd += ["--user", self.user]
            env["RTSP_TEST_PASSWORD"] = self.password  # not on the command line
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not port_accepts(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"RTSP server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"RTSP server did not listen within {STARTUP_TIMEOUT_S} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Kill the server at once (a camera losing its network, not a polite shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


# --------------------------------------------------------------------------- server side


def _serve(port: int, aus_path: Path, fps: float, user: str, password: str) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    data = aus_path.read_bytes()
    aus: list[bytes] = []
    pos = 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        aus.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    duration = int(Gst.SECOND / fps)

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        "( appsrc name=src is-live=false format=time "
        'caps="video/x-h264,stream-format=byte-stream,alignment=au" '
        "! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )"
    )
    factory.set_shared(False)

    def configure(_factory: object, media: GstRtspServer.RTSPMedia) -> None:
        src = media.get_element().get_child_by_name("src")
        state = {"n": 0}

        def need_data(appsrc: Gst.Element, _length: int) -> None:
            n = state["n"]
            buf = Gst.Buffer.new_wrapped(aus[n % len(aus)])
            buf.pts = buf.dts = n * duration
            buf.duration = duration
            state["n"] = n + 1
            appsrc.emit("push-buffer", buf)

        src.connect("need-data", need_data)

    factory.connect("media-configure", configure)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    if user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("viewer", "media.factory.access", True)
        permissions.add_permission_for_role("viewer", "media.factory.construct", True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/stream", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    print(f"rtsp server on 127.0.0.1:{port}, {len(aus)} access units at {fps} fps", flush=True)
    GLib.MainLoop().run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--aus", type=Path, required=True)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--user", default="")
    args = parser.parse_args()
    _serve(args.port, args.aus, args.fps, args.user, os.environ.get("RTSP_TEST_PASSWORD", ""))


if __name__ == "__main__":
    sys.exit(main())
