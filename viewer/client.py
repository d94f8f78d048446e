"""Receiving the store's relay: verify every message, keep key envelopes, hand out frames.

The viewer trusts the camera keys of its home, not the store: every frame and envelope is
verified again here, end to end. Missing envelopes (a viewer that joined mid-epoch) are asked
of the store's query socket, and verified like the rest.

Joining live: a camera's stream can only be decoded from a keyframe, so for each camera it
subscribes to by name the client first asks the store for the camera's current group of
pictures (``LIVE``: its last keyframe and the archived frames after it) and hands those out,
verified like relayed frames, before the relay's; relayed frames the join already delivered
(sequence number not above the last one it delivered) are dropped as duplicates. A store too
old for ``LIVE`` (or one that cannot answer) just means the first picture waits for the
relay.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import zmq
from veilcam.common import deployment
from veilcam.common.errors import FormatError, TransportError, VeilcamError, VerificationError
from veilcam.common.format import (
    EnvelopeBody,
    FrameMessage,
    GapNotice,
    KeyEnvelope,
    message_from_parts,
)
from veilcam.common.home import Home
from veilcam.common.query import QueryError, QueryRefused
from veilcam.common.queryclient import StoreQueryClient
from veilcam.common.signing import ChainTracker
from veilcam.common.transport import HandshakeWatch, curve_pair, make_client, recv_capped

log = logging.getLogger("veilcam.viewer")

QUERY_TIMEOUT_S = 2.0
# whole-message caps on the relay (MAXMSGSIZE limits each part only): topic, header,
# signature, image and at most 256 zones; the store's ingest takes no more than this
RELAY_MAX_PARTS = 4 + 256
RELAY_MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class ReceivedFrame:
    msg: FrameMessage
    verified: bool
    problem: str = ""
    # decode only, do not show: a frame before the one asked for, which a decoder needs
    # because decoding starts at a keyframe (archive playback, ArchiveReader.frames)
    preroll: bool = False


class RelayClient:
    def __init__(self, home: Home, cameras: list[str] | None = None) -> None:
        """Subscribe to ``cameras`` (None: every camera); the current group of pictures of
        each one named is asked of the store (``LIVE``) at the first ``receive``."""
        cfg = deployment.viewer_config(home).viewer
        relay, query = cfg.relay, cfg.query
        self.home = home
        self.trust = deployment.trusted_cameras(home)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        make_client(
            self.sub,
            curve_pair(deployment.transport_key(home, "viewer", cfg.identity)),
            deployment.store_identity(home).transport_key,
        )
        self.watch = HandshakeWatch(self.sub, "store", relay)
        self.sub.setsockopt(zmq.RCVHWM, 200)
        self.sub.setsockopt(zmq.MAXMSGSIZE, 256 * 2**20)
        for camera in cameras or [""]:
            self.sub.setsockopt(
                zmq.SUBSCRIBE, camera.encode("ascii") + (b"\x00" if camera else b"")
            )
        self.sub.connect(relay)
        self.query_endpoint = query
        self.query = self._new_query_socket()
        self.envelopes: dict[tuple[str, bytes], EnvelopeBody] = {}
        self.chain = ChainTracker()
        self.rejected = 0
        self._to_join: list[str] = list(dict.fromkeys(cameras or []))
        self._ready: deque[ReceivedFrame] = deque()
        # camera -> the last sequence number a live join delivered, while the relay has not
        # passed it: relayed frames up to it are duplicates (or older), dropped unshown
        self._join_horizon: dict[str, int] = {}

    def _new_query_socket(self) -> StoreQueryClient:
        return StoreQueryClient.connect(self.home, self.query_endpoint, timeout_s=QUERY_TIMEOUT_S)

    def close(self) -> None:
        self.watch.close()
        self.sub.close(linger=0)
        self.query.close()

    def envelope(self, camera_id: str, epoch_id: bytes) -> EnvelopeBody | None:
        """The verified envelope of an epoch: from what was relayed, else asked of the store."""
        key = (camera_id, epoch_id)
        if key in self.envelopes:
            return self.envelopes[key]
        try:
            parts = self.query.envelope(camera_id, epoch_id).body_parts
        except TransportError:
            raise
        except QueryRefused:
            return None
        except FormatError as exc:  # QueryError: a malformed answer
            log.error("store returned a bad key envelope for %s: %s", camera_id, exc)
            return None
        except VeilcamError as exc:
            log.warning("%s", exc)
            self.query.close()  # a late reply must not be taken for the next question
            self.query = self._new_query_socket()
            return None
        try:
            env = KeyEnvelope.from_body_parts(parts)
            self.trust.verify_envelope(env)
        except (FormatError, VerificationError) as exc:
            log.error("store returned a bad key envelope for %s: %s", camera_id, exc)
            return None
        if (env.camera_id, env.body.epoch_id) != key:
            log.error("store returned the key envelope of another epoch")
            return None
        self.envelopes[key] = env.body
        return env.body

    def join_live(self, camera_id: str) -> int:
        """Ask the store for ``camera_id``'s current group of pictures (``LIVE``) and queue
        those frames, verified like relayed ones, ahead of the relay's: what a decoder
        needs to show the camera at once. Frames up to the last one already handed out for
        the camera are skipped. Returns how many frames were queued (0 also when the store
        cannot answer: the picture then waits for the relay's next keyframe).

        Raises TransportError if the store fails authentication."""
        if camera_id in self._to_join:
            self._to_join.remove(camera_id)  # joined now, not again at the next receive
        try:
            frames = self.query.live(camera_id).frames
        except TransportError:
            raise
        except QueryRefused as exc:
            level = logging.INFO if exc.unknown_command else logging.WARNING
            log.log(level, "no live join for %s: the store says %s", camera_id, exc.reason)
            return 0
        except QueryError as exc:
            self.rejected += 1
            log.error("store returned a bad live join for %s: %s", camera_id, exc)
            return 0
        except VeilcamError as exc:
            log.warning("no live join for %s: %s", camera_id, exc)
            self.query.close()  # a late reply must not be taken for the next question
            self.query = self._new_query_socket()
            return 0
        last = self.chain.last(camera_id)
        queued = 0
        for parts in frames:
            try:
                msg = FrameMessage.from_body_parts(parts)
            except FormatError as exc:
                self.rejected += 1
                log.warning("dropped a malformed frame of a live join: %s", exc)
                continue
            if msg.camera_id != camera_id:
                self.rejected += 1
                log.warning(
                    "dropped a frame of %s from the live join of %s", msg.camera_id, camera_id
                )
                continue
            if last is not None and msg.header.seq <= last.seq:
                continue  # handed out already (from the relay)
            got = self._verified(msg)
            self._ready.append(got)
            queued += 1
            if got.verified:  # only a frame the camera signed moves the horizon
                self._join_horizon[camera_id] = msg.header.seq
        return queued

    def receive(self, timeout_ms: int) -> ReceivedFrame | None:
        """The next frame (verified or not, with the reason); envelopes are absorbed.

        Raises TransportError if the store fails authentication."""
        self.watch.check()
        while self._to_join:
            self.join_live(self._to_join[0])
        while not self._ready and self.sub.poll(timeout_ms):
            timeout_ms = 0
            got = recv_capped(self.sub, RELAY_MAX_PARTS, RELAY_MAX_BYTES)
            if got.oversized:
                self.rejected += 1
                log.warning(
                    "dropped an oversized message from the relay (%d parts, %d bytes)",
                    got.parts,
                    got.size,
                )
                continue
            self._take_relayed([f.bytes for f in got.frames])
        return self._ready.popleft() if self._ready else None

    def _take_relayed(self, parts: list[bytes]) -> None:
        """Parse and verify one relayed message: a frame is queued, an envelope kept."""
        try:
            msg = message_from_parts(parts)
        except FormatError as exc:
            self.rejected += 1
            log.warning("dropped a malformed message from the relay: %s", exc)
            return
        if isinstance(msg, GapNotice):  # the store archives these, never relays them
            self.rejected += 1
            log.warning("dropped a gap notice from the relay (not a frame)")
            return
        if isinstance(msg, KeyEnvelope):
            try:
                self.trust.verify_envelope(msg)
            except VerificationError as exc:
                self.rejected += 1
                log.warning("dropped a key envelope: %s", exc)
                return
            self.envelopes[(msg.camera_id, msg.body.epoch_id)] = msg.body
            return
        horizon = self._join_horizon.get(msg.camera_id)
        if horizon is not None:
            if msg.header.seq <= horizon:
                log.debug(
                    "dropped %s#%d: the live join delivered it", msg.camera_id, msg.header.seq
                )
                return
            del self._join_horizon[msg.camera_id]  # the relay has caught up
        self._ready.append(self._verified(msg))

    def _verified(self, msg: FrameMessage) -> ReceivedFrame:
        """Verify a frame (signature, hashes, certificate) and follow its camera's chain."""
        try:
            self.trust.verify_frame(msg)
            self.chain.check(msg)
        except VerificationError as exc:
            self.rejected += 1
            return ReceivedFrame(msg, False, f"{exc.reason}: {exc}")
        self.chain.accept(msg)
        return ReceivedFrame(msg, True)
