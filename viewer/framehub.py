"""The web viewer's one receiving thread: it takes the relay, verifies every frame (in
RelayClient) and keeps the latest per camera for the page's streams, snapshots and status.

An H.264 camera's frames decode only in sequence from a keyframe, so the hub also keeps, per
camera, the verified frames since its last keyframe (the current group of pictures): a stream
opened now decodes them at once and shows the current picture, and a stream that fell behind
catches up from them. When it has none for a camera yet (the hub just started), a stream
that opens asks for a live join (``RelayClient.join_live``, run in this thread: the client
is not shared between threads)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from veilcam.common.errors import TransportError
from veilcam.common.format import EnvelopeBody
from veilcam.common.home import Home
from veilcam.common.lifecycle import StopFlag
from veilcam.viewer.client import ReceivedFrame, RelayClient
from veilcam.viewer.freshness import DEFAULT_MAX_AGE_S, Freshness
from veilcam.viewer.trustreload import watch_trust

log = logging.getLogger("veilcam.web")

GOP_MAX = 300  # frames kept per camera (as LIVE answers): a longer GOP waits for its next one


@dataclass
class Latest:
    received: ReceivedFrame
    counter: int
    at: float


class FrameHub:
    """One thread receives and verifies the relay and keeps the latest frame per camera.

    ``on_frame`` (set by the web app while it runs) is called from that thread after every
    new frame and once when the thread ends: the app uses it to wake the streams waiting in
    its event loop."""

    def __init__(self, home: Home, stop: StopFlag, max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        self.home = home
        self.client = RelayClient(home)
        self.cameras = self.client.trust.camera_ids
        self.latest: dict[str, Latest] = {}
        self.stop = stop
        self.counter = 0
        self.max_age_s = max_age_s
        self.freshness = Freshness(max_age_s)  # until the store's clock is measured
        self.reloader = watch_trust(home, self.client)
        self.on_frame: Callable[[], None] | None = None
        self.thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._lock = threading.Lock()  # guards gop and the join requests
        self.gop: dict[str, deque[Latest]] = {}  # verified frames since the last keyframe
        self._joins: set[str] = set()
        self.joined: dict[str, int] = {}  # camera -> frames the last live join delivered

    def want(self, camera: str) -> None:
        """A stream of ``camera`` opens: if no keyframe of it is held yet, ask the store for
        its current group of pictures (in the hub's thread, at its next turn)."""
        with self._lock:
            if not self.gop.get(camera):
                self._joins.add(camera)

    def frames_after(self, camera: str, counter: int) -> list[Latest]:
        """The held frames of ``camera``'s current group of pictures received after
        ``counter`` (all of them for 0), oldest first."""
        with self._lock:
            return [f for f in self.gop.get(camera, ()) if f.counter > counter]

    def _keep(self, latest: Latest) -> None:
        msg = latest.received.msg
        with self._lock:
            held = self.gop.get(msg.camera_id)
            if msg.is_keyframe or held is None:
                held = self.gop[msg.camera_id] = deque(maxlen=GOP_MAX)
            if msg.is_keyframe or held:  # from a keyframe on only
                held.append(latest)

    def take(self, got: ReceivedFrame) -> None:
        """A frame from the relay (verified or not): the latest of its camera, and kept in
        its group of pictures if verified; the waiting streams are woken."""
        self.counter += 1
        latest = Latest(got, self.counter, time.time())
        if got.verified:
            self._keep(latest)
        self.latest[got.msg.camera_id] = latest
        self._notify()

    def _join_wanted(self) -> None:
        with self._lock:
            cameras, self._joins = sorted(self._joins), set()
        for camera in cameras:
            self.joined[camera] = self.client.join_live(camera)

    def _notify(self) -> None:
        on_frame = self.on_frame
        if on_frame is not None:
            on_frame()

    def _run(self) -> None:
        try:
            # the store's clock, once (at most 2 s; a store that does not answer: no allowance)
            self.freshness = Freshness.measured(self.home, self.max_age_s)
            while not self.stop.is_set():
                if self.reloader.poll():  # renewed or revoked certificates, as the store does
                    self.cameras = self.client.trust.camera_ids
                try:
                    self._join_wanted()
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
                self.take(got)
        finally:
            self.client.close()
            self._notify()

    def envelope_lookup(self, camera_id: str, epoch_id: bytes) -> EnvelopeBody | None:
        return self.client.envelopes.get((camera_id, epoch_id))
