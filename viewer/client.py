"""Receiving the store's relay: verify every message, keep key envelopes, hand out frames.

The viewer trusts the camera keys of its home, not the store: every frame and envelope is
verified again here, end to end. Missing envelopes (a viewer that joined mid-epoch) are asked
of the store's query socket, and verified like the rest.
"""

from __future__ import annotations

import logging
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
from veilcam.common.query import QueryRefused
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


class RelayClient:
    def __init__(self, home: Home, cameras: list[str] | None = None) -> None:
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

    def receive(self, timeout_ms: int) -> ReceivedFrame | None:
        """The next frame (verified or not, with the reason); envelopes are absorbed.

        Raises TransportError if the store fails authentication."""
        self.watch.check()
        while self.sub.poll(timeout_ms):
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
            parts = [f.bytes for f in got.frames]
            try:
                msg = message_from_parts(parts)
            except FormatError as exc:
                self.rejected += 1
                log.warning("dropped a malformed message from the relay: %s", exc)
                continue
            if isinstance(msg, GapNotice):  # the store archives these, never relays them
                self.rejected += 1
                log.warning("dropped a gap notice from the relay (not a frame)")
                continue
            if isinstance(msg, KeyEnvelope):
                try:
                    self.trust.verify_envelope(msg)
                except VerificationError as exc:
                    self.rejected += 1
                    log.warning("dropped a key envelope: %s", exc)
                    continue
                self.envelopes[(msg.camera_id, msg.body.epoch_id)] = msg.body
                continue
            try:
                self.trust.verify_frame(msg)
                self.chain.check(msg)
            except VerificationError as exc:
                self.rejected += 1
                return ReceivedFrame(msg, False, f"{exc.reason}: {exc}")
            self.chain.accept(msg)
            return ReceivedFrame(msg, True)
        return None
