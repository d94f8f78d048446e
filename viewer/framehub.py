"""The web viewer's one receiving thread: it takes the relay, verifies every frame (in
RelayClient) and keeps the latest per camera for the page's streams, snapshots and status."""

from __future__ import annotations

import logging
import threading
import time
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
                self.counter += 1
                self.latest[got.msg.camera_id] = Latest(got, self.counter, time.time())
                self._notify()
        finally:
            self.client.close()
            self._notify()

    def envelope_lookup(self, camera_id: str, epoch_id: bytes) -> EnvelopeBody | None:
        return self.client.envelopes.get((camera_id, epoch_id))
