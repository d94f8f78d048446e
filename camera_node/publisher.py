"""Sending signed messages to the store over ZeroMQ and tracking its acknowledgements.

A DEALER socket connected to the store's ROUTER. Each message stays in ``in_flight`` until the
store acknowledges it as durably stored (or as a duplicate); unacknowledged messages are sent
again after ``resend_after_s`` (the store drops duplicates). Sending never blocks capture:
when ``max_in_flight`` is reached, ``has_room`` is False and the node drops the *captured*
frame before it is numbered and signed, so the hash chain stays whole.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import zmq

from common.errors import FormatError
from common.format import KIND_ENVELOPE, KIND_FRAME, Ack, AckStatus, FrameMessage, KeyEnvelope
from common.transport import HandshakeWatch, make_client

log = logging.getLogger("veilcam.publisher")


@dataclass
class _Pending:
    parts: list[bytes]
    sent_at: float


class Publisher:
    def __init__(self, ctx: zmq.Context, endpoint: str, keys: tuple[bytes, bytes],
                 store_key: bytes, max_in_flight: int = 300, resend_after_s: float = 5.0) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, max_in_flight * 2 + 16)
        make_client(self.sock, keys, store_key)
        self.watch = HandshakeWatch(self.sock, "store", endpoint)
        self.sock.connect(endpoint)
        self.endpoint = endpoint
        self.max_in_flight = max_in_flight
        self.resend_after_s = resend_after_s
        self.in_flight: dict[tuple[bytes, int | bytes], _Pending] = {}
        self.acked = 0
        self.rejected = 0
        self.resent = 0
        self.last_ack_at = time.monotonic()

    @property
    def has_room(self) -> bool:
        return len(self.in_flight) < self.max_in_flight

    def send(self, msg: FrameMessage | KeyEnvelope) -> None:
        key = ((KIND_FRAME, msg.header.seq) if isinstance(msg, FrameMessage)
               else (KIND_ENVELOPE, msg.body.epoch_id))
        parts = msg.to_parts()
        self.in_flight[key] = _Pending(parts, time.monotonic())
        self._send_parts(parts)

    def _send_parts(self, parts: list[bytes]) -> None:
        try:
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass  # stays in in_flight and is sent again later

    def poll(self, timeout_ms: int = 0) -> None:
        """Take every acknowledgement waiting (waiting up to ``timeout_ms`` for the first).

        Raises TransportError if the store failed authentication (see HandshakeWatch)."""
        self.watch.check()
        while self.sock.poll(timeout_ms, zmq.POLLIN):
            timeout_ms = 0
            parts = self.sock.recv_multipart()
            try:
                ack = Ack.from_parts(parts)
            except FormatError as exc:
                log.warning("ignoring malformed acknowledgement from the store: %s", exc)
                continue
            key = (ack.kind, ack.seq if ack.kind == KIND_FRAME else ack.epoch_id)
            if self.in_flight.pop(key, None) is None:
                continue
            self.last_ack_at = time.monotonic()
            if ack.status == AckStatus.REJECTED:
                self.rejected += 1
                log.error("store rejected %s: %s", _describe(ack), ack.reason)
            else:
                self.acked += 1
        now = time.monotonic()
        for pending in self.in_flight.values():
            if now - pending.sent_at > self.resend_after_s:
                pending.sent_at = now
                self.resent += 1
                self._send_parts(pending.parts)

    def drain(self, timeout_s: float) -> bool:
        """Wait until everything sent is acknowledged; False if time runs out first."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            self.poll(timeout_ms=100)
        return not self.in_flight

    def close(self) -> None:
        self.watch.close()
        self.sock.close(linger=0)


def _describe(ack: Ack) -> str:
    if ack.kind == KIND_FRAME:
        return f"frame {ack.camera_id}#{ack.seq}"
    return f"key envelope {ack.camera_id}/{ack.epoch_id.hex()[:8]}"
