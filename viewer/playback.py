"""Playing a camera's archive from a chosen time, through the store's query socket.

Frames come from the store in batches (``RANGE``) and are verified here like live ones, each
against the camera certificate valid at its capture time, with the hash chain followed; key
envelopes are fetched (``ENVELOPE``) and verified the same way, so an unlocked playback opens
exactly what the user was granted then.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from veilcam.common.errors import FormatError, VeilcamError, VerificationError
from veilcam.common.format import EnvelopeBody, FrameMessage, KeyEnvelope, unpack_parts
from veilcam.common.home import Home
from veilcam.common.signing import ChainTracker
from veilcam.viewer.client import ReceivedFrame
from veilcam.viewer.login import StoreLink

BATCH = 32


def parse_time(text: str) -> int:
    """'start', unix seconds, or ISO 8601 (UTC unless it says otherwise) -> unix µs."""
    text = text.strip()
    if text in ("start", "beginning", "0"):
        return 0
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not 0 <= seconds < 2**62 / 1e6:
            raise VeilcamError(f"time {text!r} is out of range")
        return int(seconds * 1_000_000)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise VeilcamError(
            f"cannot read the time {text!r}: use ISO 8601 "
            "(2026-11-27T03:00:00), unix seconds, or 'start'"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if when.timestamp() < 0:
        raise VeilcamError(f"time {text!r} is out of range (before 1970)")
    return int(when.timestamp() * 1_000_000)


class ArchiveReader:
    def __init__(self, home: Home, camera_id: str, from_us: int) -> None:
        self.link = StoreLink(home, home.viewer_config().viewer.query)
        self.trust = home.trusted_cameras(history=True)
        self.camera_id, self.from_us = camera_id, from_us
        self.chain = ChainTracker()
        self._envelopes: dict[tuple[str, bytes], EnvelopeBody | None] = {}
        self._envelope_parts: dict[tuple[str, bytes], list[bytes]] = {}

    def close(self) -> None:
        self.link.close()

    def span(self) -> tuple[int, int, int] | None:
        reply = self.link.request([b"SPAN", self.camera_id.encode()])
        return tuple(int(v) for v in reply[1:4]) if reply[0] == b"OK" else None

    def coverage(self, from_us: int, to_us: int, buckets: int) -> list[int]:
        """Frames archived in each of ``buckets`` equal slices of [from_us, to_us)."""
        reply = self.link.request(
            [
                b"COVERAGE",
                self.camera_id.encode(),
                str(from_us).encode(),
                str(to_us).encode(),
                str(buckets).encode(),
            ]
        )
        if reply[0] != b"OK" or len(reply) != 2:
            raise VeilcamError(
                "the store refused the timeline query: "
                f"{reply[1].decode(errors='replace') if len(reply) > 1 else ''}"
            )
        try:
            counts = [int(v) for v in reply[1].decode("ascii").split(",")]
        except ValueError:
            raise VeilcamError("the store sent a malformed timeline") from None
        if len(counts) != buckets:
            raise VeilcamError("the store sent a timeline of the wrong length")
        return counts

    def count_between(self, from_us: int, to_us: int) -> int:
        """Frames archived with from_us <= capture time <= to_us."""
        return self.coverage(from_us, to_us + 1, 1)[0] if to_us >= from_us else 0

    def envelope(self, camera_id: str, epoch_id: bytes) -> EnvelopeBody | None:
        key = (camera_id, epoch_id)
        if key not in self._envelopes:
            reply = self.link.request([b"ENVELOPE", camera_id.encode(), epoch_id])
            body = None
            if reply[0] == b"OK":
                try:
                    env = KeyEnvelope.from_body_parts(reply[1:])
                    self.trust.verify_envelope(env, at_creation_time=True)
                    if (env.camera_id, env.body.epoch_id) == key:
                        body = env.body
                        self._envelope_parts[key] = reply[1:]
                except (FormatError, VerificationError):
                    body = None
            self._envelopes[key] = body
        return self._envelopes[key]

    def envelope_parts(self, camera_id: str, epoch_id: bytes) -> list[bytes] | None:
        """The verified envelope's body parts exactly as archived (for evidence bundles)."""
        self.envelope(camera_id, epoch_id)
        return self._envelope_parts.get((camera_id, epoch_id))

    def frames(self) -> Iterator[ReceivedFrame]:
        after = -1
        while True:
            reply = self.link.request(
                [
                    b"RANGE",
                    self.camera_id.encode(),
                    str(self.from_us).encode(),
                    str(after).encode(),
                    str(BATCH).encode(),
                ]
            )
            if reply[0] != b"OK":
                raise VeilcamError(
                    f"the store refused the playback: "
                    f"{reply[1].decode(errors='replace') if len(reply) > 1 else ''}"
                )
            if len(reply) == 1:
                return
            asked_after = after
            for packed in reply[1:]:
                try:
                    msg = FrameMessage.from_body_parts(unpack_parts(packed)[1])
                except FormatError as exc:
                    raise VeilcamError(
                        f"the store sent a malformed archived frame: {exc}"
                    ) from None
                if msg.header.seq <= asked_after:  # a store answering the same again: a loop
                    raise VeilcamError(
                        f"the store sent frame #{msg.header.seq} when asked for "
                        f"frames after #{asked_after}"
                    )
                after = msg.header.seq
                try:
                    self.trust.verify_frame(msg, at_capture_time=True)
                    self.chain.check(msg)
                except VerificationError as exc:
                    yield ReceivedFrame(msg, False, f"{exc.reason}: {exc}")
                    continue
                self.chain.accept(msg)
                yield ReceivedFrame(msg, True)
