"""Frame sources: a device index, a video file (optionally looped, paced), or a stream URL.

Webcams, files and non-RTSP URLs are read through OpenCV. RTSP and RTSPS cameras are read
through PyAV (FFmpeg) with explicit open and read timeouts, so a camera that accepts the
connection and then says nothing cannot block the camera node, and are reconnected with
exponential backoff (one log line per state change, not per attempt). A URL is only ever
shown redacted (:func:`veilcam.common.urls.redact_url`): IP camera URLs carry passwords."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from veilcam.common.errors import VeilcamError
from veilcam.common.urls import redact_text, redact_url

log = logging.getLogger("veilcam.source")

# frames a live source holds for a pipeline behind its schedule (133 ms at 30 fps): enough
# for an IDR's or a scene cut's slow frame to be caught up on; measured 1080p H.264, camera
# alone: 28.5 fps with one frame, 30.0 with four (docs/PERFORMANCE.md)
JITTER_FRAMES = 4
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")
RTSP_SCHEMES = ("rtsp://", "rtsps://")
BACKOFF_FIRST_S = 1.0


@dataclass(frozen=True)
class CapturedFrame:
    image: np.ndarray
    capture_time_us: int
    waited_s: float = 0.0  # time spent pacing a file to its frame rate (not capture work)
    # the first frame since the live source was lost and came back: the camera declares the
    # time between its previous frame and this one offline (a signed gap notice)
    after_loss: bool = False


def describe_source(spec: str) -> tuple[str, int | str]:
    """('device', index) | ('url', url) | ('file', path)."""
    text = spec.strip()
    if text.isdigit():
        return "device", int(text)
    if text.lower().startswith(URL_SCHEMES):
        return "url", text
    return "file", text


class FrameSource:
    """Iterates captured frames; a file ends (or loops); a device or URL reconnects on failure.

    A live source (device or URL) is read by its own thread that keeps the newest
    ``JITTER_FRAMES`` frames: a frame that took longer than the frame interval (an IDR, a scene
    cut's detection) is caught up on from there, and when the pipeline falls behind for longer
    it is the oldest frames that are dropped, never the capture thread that stalls the
    camera's buffer; every dropped frame is counted (``dropped_overload``). A paced file
    stands in for such a camera: it may run the same ``JITTER_FRAMES`` behind its schedule,
    and beyond that pacing slips (a replay loses no frame)."""

    def __init__(
        self,
        spec: str,
        *,
        loop: bool = False,
        pace: bool = True,
        fps: float = 0.0,
        max_width: int = 0,
        reconnect_delay_s: float = 1.0,
        live: bool | None = None,
        rtsp_transport: str = "tcp",
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        reconnect_max_s: float = 30.0,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.kind, self.target = describe_source(spec)
        self.display = redact_url(str(self.target))  # what logs, metrics and errors show
        if self.kind == "file" and not Path(str(self.target)).is_file():
            raise VeilcamError(f"video file {self.target} not found")
        self.loop, self.pace, self.max_width = loop, pace, max_width
        self.reconnect_delay_s = reconnect_delay_s
        self._stop_event = threading.Event()
        self._should_stop = should_stop or (lambda: False)
        self.dropped_overload = 0
        self.captured = 0
        self.reconnects = 0  # times a live source came back after being lost
        self.up = True  # a live source is delivering (or about to: just connected)
        self.size: tuple[int, int] | None = None  # of the latest frame, before scaling
        self.size_changes = 0
        self._grabber: threading.Thread | None = None
        self._cap: cv2.VideoCapture | None = None
        self._rtsp: RtspReader | None = None
        if self.kind == "url" and str(self.target).lower().startswith(RTSP_SCHEMES):
            self._rtsp = RtspReader(
                self,
                rtsp_transport,
                open_timeout_s,
                read_timeout_s,
                max(reconnect_max_s, BACKOFF_FIRST_S),
            )
            native = self._rtsp.first_open()
        else:
            self._cap = self._open()
            native = self._cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = fps or (native if 1 <= native <= 240 else 30.0)
        self.live = self.kind != "file" if live is None else live

    @property
    def _stopped(self) -> bool:
        return self._stop_event.is_set() or self._should_stop()

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            what = {"device": "camera device", "url": "stream", "file": "video file"}[self.kind]
            shown = self.display if self.kind == "url" else self.target
            raise VeilcamError(f"cannot open {what} {shown!r}")
        return cap

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking at once when stopped; True if stopped."""
        deadline = time.monotonic() + seconds
        while not self._stopped:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._stop_event.wait(min(left, 0.2))
        return True

    def stop(self) -> None:
        self._stop_event.set()

    def _scaled(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if (w, h) != self.size:
            if self.size is not None:  # an IP camera reconfigured: the pipeline follows
                log.warning(
                    "source %s changed its frame size from %dx%d to %dx%d",
                    self.display,
                    *self.size,
                    w,
                    h,
                )
                self.size_changes += 1
            self.size = (w, h)
        if self.max_width and w > self.max_width:
            new_h = round(h * self.max_width / w)
            image = cv2.resize(image, (self.max_width, new_h), interpolation=cv2.INTER_LINEAR)
        return image

    def frames(self) -> Iterator[CapturedFrame]:
        return self._latest_frames() if self.live else self._read_frames()

    def _latest_frames(self) -> Iterator[CapturedFrame]:
        cond = threading.Condition()
        queue: deque[CapturedFrame] = deque()
        done = [False]
        failure: list[VeilcamError] = []

        def grab() -> None:
            try:
                for frame in self._read_frames():
                    with cond:
                        if len(queue) >= JITTER_FRAMES:
                            dropped = queue.popleft()
                            self.dropped_overload += 1
                            if dropped.after_loss:  # the mark outlives the frame it was on
                                if queue:
                                    queue[0] = replace(queue[0], after_loss=True)
                                else:
                                    frame = replace(frame, after_loss=True)
                        queue.append(frame)
                        cond.notify()
            except VeilcamError as exc:  # told in the consumer's thread
                failure.append(exc)
            finally:
                with cond:
                    done[0] = True
                    cond.notify()

        self._grabber = threading.Thread(target=grab, name="capture", daemon=True)
        self._grabber.start()
        while True:
            with cond:
                cond.wait_for(lambda: bool(queue) or done[0], timeout=0.2)
                frame = queue.popleft() if queue else None
                if frame is None and done[0]:
                    if failure:
                        raise failure[0]
                    return
            if frame is not None:
                yield frame
            if self._stopped:
                return

    def _read_frames(self) -> Iterator[CapturedFrame]:
        return self._rtsp_frames() if self._rtsp is not None else self._opencv_frames()

    def _rtsp_frames(self) -> Iterator[CapturedFrame]:
        assert self._rtsp is not None
        seen_reconnects = self.reconnects
        for image in self._rtsp.images():
            self.captured += 1
            after_loss, seen_reconnects = self.reconnects != seen_reconnects, self.reconnects
            yield CapturedFrame(self._scaled(image), time.time_ns() // 1000, after_loss=after_loss)

    def _opencv_frames(self) -> Iterator[CapturedFrame]:
        assert self._cap is not None
        period = 1.0 / self.fps
        next_due = lost_at = time.monotonic()
        while not self._stopped:
            ok, image = self._cap.read()
            if not ok or image is None:
                if self.kind == "file":
                    if not self.loop:
                        return
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, image = self._cap.read()
                    if not ok:
                        raise VeilcamError(f"video file {self.target} has no readable frames")
                else:
                    if self.up:
                        log.warning(
                            "source %s stopped delivering frames; reconnecting every %.1f s",
                            self.display,
                            self.reconnect_delay_s,
                        )
                        self.up, lost_at = False, time.monotonic()
                    self._cap.release()
                    if self.wait(self.reconnect_delay_s):
                        return
                    try:
                        self._cap = self._open()
                    except VeilcamError as exc:
                        log.debug("%s", exc)
                    continue
            after_loss = not self.up
            if after_loss:
                self.up, self.reconnects = True, self.reconnects + 1
                log.info(
                    "source %s reconnected after %.1f s", self.display, time.monotonic() - lost_at
                )
            waited = 0.0
            if self.kind == "file" and self.pace:
                delay = next_due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                    waited = delay
                next_due = max(next_due + period, time.monotonic() - JITTER_FRAMES * period)
            self.captured += 1
            yield CapturedFrame(self._scaled(image), time.time_ns() // 1000, waited, after_loss)

    def close(self) -> None:
        self._stop_event.set()
        if self._rtsp is not None:
            # the reader thread owns its container and closes it itself; a read in progress
            # ends within the read timeout, and the thread is a daemon: no wait here
            if self._grabber is not None:
                self._grabber.join(timeout=1)
            else:
                self._rtsp.close()
            return
        if self._grabber is not None:
            self._grabber.join(timeout=5)  # never release the capture under a running read
        if self._cap is not None:
            self._cap.release()


class SourceAuthError(VeilcamError):
    """The camera refused the credentials of its URL (401/403)."""


def _reason(exc: BaseException) -> str:
    """A one-line cause for a log line, with any URL in it redacted (FFmpeg names the URL)."""
    if isinstance(exc, av.error.ExitError):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return redact_text(str(text))


def open_stream(url: str, transport: str, open_timeout_s: float, read_timeout_s: float) -> Any:
    """A PyAV container of a stream URL with a video stream, opened within ``open_timeout_s``
    (each later read bounded by ``read_timeout_s``); raises SourceAuthError (credentials
    refused) or VeilcamError naming the cause, the URL always redacted."""
    display = redact_url(url)
    # FFmpeg's socket I/O timeout, in microseconds (RTSP's was 'stimeout' before FFmpeg 5)
    options = {"timeout": str(int(read_timeout_s * 1_000_000))}
    if url.lower().startswith(RTSP_SCHEMES):
        options["rtsp_transport"] = transport
    started = time.monotonic()
    try:
        container = av.open(url, options=options, timeout=(open_timeout_s, read_timeout_s))
    except (av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError) as exc:
        raise SourceAuthError(
            f"camera {display} refused the credentials ({_reason(exc)}): check the "
            "user and password in camera.source"
        ) from None
    except (av.FFmpegError, OSError, EOFError) as exc:
        waited = time.monotonic() - started
        # FFmpeg reports a silent server as invalid data: say what happened instead
        why = (
            f"no answer within {open_timeout_s:g} s (timed out)"
            if waited >= 0.9 * min(open_timeout_s, read_timeout_s)
            else _reason(exc)
        )
        raise VeilcamError(f"cannot open stream {display}: {why}") from None
    if not container.streams.video:
        container.close()
        raise VeilcamError(f"stream {display} has no video")
    return container


@dataclass(frozen=True)
class SourceInfo:
    """What a source delivers, as its first decoded frame shows: for ``veilcam doctor``."""

    codec: str
    width: int
    height: int
    fps: float

    def describe(self) -> str:
        return f"{self.codec} {self.width}x{self.height} at {self.fps:.1f} fps"


def probe_source(
    spec: str,
    *,
    rtsp_transport: str = "tcp",
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
) -> SourceInfo:
    """Open a stream URL or a video file as the camera would and decode its first frame,
    within the timeouts (a stream: at most about open + read timeout); raises
    SourceAuthError or VeilcamError naming the problem. Not for device indexes (OpenCV's
    device open cannot be bounded)."""
    kind, target = describe_source(spec)
    if kind == "device":
        raise VeilcamError("a camera device is not probed (its open cannot be bounded)")
    display = redact_url(str(target))
    if kind == "file":
        try:
            container = av.open(str(target))
        except (av.FFmpegError, OSError) as exc:
            raise VeilcamError(f"cannot read video file {target}: {_reason(exc)}") from None
        if not container.streams.video:
            container.close()
            raise VeilcamError(f"video file {target} has no video")
    else:
        container = open_stream(str(target), rtsp_transport, open_timeout_s, read_timeout_s)
    try:
        stream = container.streams.video[0]
        frame = next(iter(container.decode(stream)), None)
        if frame is None:
            raise VeilcamError(f"{display} ended before its first frame")
        rate = stream.average_rate or stream.guessed_rate
        return SourceInfo(stream.codec_context.name, frame.width, frame.height, float(rate or 0))
    except (av.FFmpegError, OSError, EOFError) as exc:
        raise VeilcamError(f"no frame from {display}: {_reason(exc)}") from None
    finally:
        container.close()


class RtspReader:
    """Decoded frames of an RTSP(S) camera through PyAV, reconnecting with backoff.

    Opening is bounded by ``open_timeout_s`` and each read by ``read_timeout_s`` (PyAV's
    interrupt callback, plus FFmpeg's own RTSP socket ``timeout``), so a silent camera is a
    lost source after a few seconds, never a hung process. After a loss the reader retries
    at 1 s, 2 s, 4 s ... up to ``backoff_max_s``, and the wait ends at once on stop. It logs
    state changes only: connected, lost (why), a change of why it cannot reconnect, and
    reconnected (after how long). All of this runs in the capture thread, which owns the
    container (opens, reads and closes it)."""

    def __init__(
        self,
        source: FrameSource,
        transport: str,
        open_timeout_s: float,
        read_timeout_s: float,
        backoff_max_s: float,
    ) -> None:
        if transport not in ("tcp", "udp"):
            raise VeilcamError(f"rtsp transport must be 'tcp' or 'udp', not {transport!r}")
        self.source, self.url, self.display = source, str(source.target), source.display
        self.transport = transport
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self.backoff_max_s = backoff_max_s
        self._container: Any = None
        self._last_failure = ""
        self._ever_connected = False
        self._last_packet = 0.0  # monotonic time of the last packet read

    def _open(self) -> Any:
        """Open the stream (bounded); raises SourceAuthError or VeilcamError with the cause."""
        return open_stream(self.url, self.transport, self.open_timeout_s, self.read_timeout_s)

    def _describe(self, container: Any) -> str:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return (
            f"{stream.codec_context.name} {stream.width}x{stream.height} at "
            f"{float(rate or 0):.1f} fps over {self.transport}"
        )

    def first_open(self) -> float:
        """Try the camera once at start-up: its frame rate (0 when it is not reachable yet: the
        capture thread keeps trying). Refused credentials are an error here, since retrying
        cannot fix them."""
        try:
            self._container = self._open()
        except SourceAuthError:
            raise
        except VeilcamError as exc:
            self.source.up = False
            self._last_failure = str(exc)
            log.warning(
                "%s; retrying in the background (backoff up to %.0f s)", exc, self.backoff_max_s
            )
            return 0.0
        log.info("source %s connected: %s", self.display, self._describe(self._container))
        self._ever_connected = True
        stream = self._container.streams.video[0]
        return float(stream.average_rate or stream.guessed_rate or 0)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def images(self) -> Iterator[np.ndarray]:
        """BGR images until stopped; reconnects on any loss."""
        source = self.source
        delay = BACKOFF_FIRST_S  # before the next attempt: 0 right after a loss, then 1, 2, 4 ...
        lost_at = time.monotonic()
        attempts = 0
        try:
            while not source._stopped:
                if self._container is None:
                    if source.wait(delay):
                        return
                    attempts += 1
                    try:
                        self._container = self._open()
                    except VeilcamError as exc:
                        delay = min(max(delay * 2, BACKOFF_FIRST_S), self.backoff_max_s)
                        if str(exc) != self._last_failure:  # a new reason: say it once
                            log.warning("%s; still retrying", exc)
                            self._last_failure = str(exc)
                        else:
                            log.debug("%s", exc)
                        continue
                    what = self._describe(self._container)
                    if not self._ever_connected:
                        log.info("source %s connected: %s", self.display, what)
                    else:
                        source.reconnects += 1
                        log.info(
                            "source %s reconnected after %.1f s (%d attempt(s)): %s",
                            self.display,
                            time.monotonic() - lost_at,
                            attempts,
                            what,
                        )
                    source.up, self._ever_connected = True, True
                    attempts, self._last_failure = 0, ""
                try:
                    yield from self._decode(self._container)
                    why = "the stream ended"
                except (av.FFmpegError, OSError, EOFError) as exc:
                    silent = time.monotonic() - self._last_packet
                    why = (
                        f"nothing received for {self.read_timeout_s:g} s (timed out)"
                        if silent >= 0.9 * self.read_timeout_s
                        else _reason(exc)
                    )
                self.close()
                if source._stopped:
                    return
                delay = 0.0  # the first attempt at once: a restarted server is back already
                if source.up:
                    source.up, lost_at, attempts = False, time.monotonic(), 0
                    log.warning(
                        "source %s lost (%s); reconnecting with backoff %.0f-%.0f s",
                        self.display,
                        why,
                        BACKOFF_FIRST_S,
                        self.backoff_max_s,
                    )
        finally:
            self.close()

    def _decode(self, container: Any) -> Iterator[np.ndarray]:
        stream = container.streams.video[0]
        self._last_packet = time.monotonic()
        for packet in container.demux(stream):
            self._last_packet = time.monotonic()
            for frame in packet.decode():
                yield frame.to_ndarray(format="bgr24")
            if self.source._stopped:
                return
