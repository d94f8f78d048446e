"""Playing a camera's archive from a chosen time, through the store's query socket.

Frames come from the store in batches (``RANGE``, through ``common.queryclient``) and are
verified here like live ones, each against the camera certificate valid at its capture time,
with the hash chain followed; key envelopes are fetched (``ENVELOPE``) and verified the same
way, so an unlocked playback opens exactly what the user was granted then.

Decoding can only start at a keyframe, so the store starts a playback from a time at the
camera's last keyframe captured at or before it. The frames before the asked time are
*preroll*: verified and chained like the rest, handed out (flagged) only to a caller that
decodes (``frames(preroll=True)``). Every version-1 frame is a keyframe, so for those the
first frame shown is, as before, the first captured at or after the asked time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

from veilcam.common import deployment
from veilcam.common.errors import FormatError, VeilcamError, VerificationError
from veilcam.common.format import EnvelopeBody, FrameMessage, KeyEnvelope
from veilcam.common.home import Home
from veilcam.common.query import QueryError, QueryRefused
from veilcam.common.queryclient import StoreQueryClient
from veilcam.common.signing import ChainTracker
from veilcam.viewer.client import ReceivedFrame
from veilcam.viewer.render import Renderer, Shown

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
        self.client = StoreQueryClient.connect(home)
        self.trust = deployment.trusted_cameras(home, history=True)
        self.camera_id, self.from_us = camera_id, from_us
        self.chain = ChainTracker()
        self._envelopes: dict[tuple[str, bytes], EnvelopeBody | None] = {}
        self._envelope_parts: dict[tuple[str, bytes], list[bytes]] = {}

    def close(self) -> None:
        self.client.close()

    def span(self) -> tuple[int, int, int] | None:
        try:
            reply = self.client.span(self.camera_id)
        except (QueryRefused, QueryError):
            return None
        return reply.first_us, reply.last_us, reply.frames

    def coverage(self, from_us: int, to_us: int, buckets: int) -> list[int]:
        """Frames archived in each of ``buckets`` equal slices of [from_us, to_us)."""
        try:
            counts = self.client.coverage(self.camera_id, from_us, to_us, buckets).counts
        except QueryRefused as exc:
            raise VeilcamError(f"the store refused the timeline query: {exc.reason}") from None
        except QueryError:
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
            body = None
            try:
                parts = self.client.envelope(camera_id, epoch_id).body_parts
                env = KeyEnvelope.from_body_parts(parts)
                self.trust.verify_envelope(env, at_creation_time=True)
                if (env.camera_id, env.body.epoch_id) == key:
                    body = env.body
                    self._envelope_parts[key] = parts
            except (QueryRefused, FormatError, VerificationError):  # QueryError: a FormatError
                body = None
            self._envelopes[key] = body
        return self._envelopes[key]

    def envelope_parts(self, camera_id: str, epoch_id: bytes) -> list[bytes] | None:
        """The verified envelope's body parts exactly as archived (for evidence bundles)."""
        self.envelope(camera_id, epoch_id)
        return self._envelope_parts.get((camera_id, epoch_id))

    def _batch(self, after: int) -> list[list[bytes]]:
        """The next frames (body parts each) after frame ``after`` (-1: from from_us)."""
        try:
            reply = self.client.range(
                self.camera_id, self.from_us, None if after < 0 else after, BATCH
            )
        except QueryRefused as exc:
            raise VeilcamError(f"the store refused the playback: {exc.reason}") from None
        except QueryError as exc:
            raise VeilcamError(f"the store sent a malformed archived frame: {exc}") from None
        return reply.frames

    def frames(self, preroll: bool = False) -> Iterator[ReceivedFrame]:
        """The camera's archived frames from ``from_us`` on, verified, in order. The store
        starts at the keyframe at or before ``from_us``; the frames captured before it (up
        to the first one at or after it) are verified too, and handed out flagged
        ``preroll`` only when ``preroll`` is True (a decoder needs them, a display not)."""
        after = -1
        reached = False  # a frame captured at or after from_us has come
        while True:
            batch = self._batch(after)
            if not batch:
                return
            asked_after = after
            for parts in batch:
                try:
                    msg = FrameMessage.from_body_parts(parts)
                except FormatError as exc:
                    raise VeilcamError(
                        f"the store sent a malformed archived frame: {exc}"
                    ) from None
                if msg.camera_id != self.camera_id:  # another camera's (signed) footage
                    raise VeilcamError(
                        f"the store answered frames of camera {msg.camera_id!r} when asked "
                        f"for {self.camera_id!r}"
                    )
                if msg.header.seq <= asked_after:  # a store answering the same again: a loop
                    raise VeilcamError(
                        f"the store sent frame #{msg.header.seq} when asked for "
                        f"frames after #{asked_after}"
                    )
                after = msg.header.seq
                reached = reached or msg.header.capture_time_us >= self.from_us
                try:
                    self.trust.verify_frame(msg, at_capture_time=True)
                    self.chain.check(msg)
                except VerificationError as exc:
                    got = ReceivedFrame(msg, False, f"{exc.reason}: {exc}", preroll=not reached)
                else:
                    self.chain.accept(msg)
                    got = ReceivedFrame(msg, True, preroll=not reached)
                if reached or preroll:
                    yield got


def shown_frames(
    frames: Iterable[ReceivedFrame], renderer: Renderer
) -> Iterator[tuple[ReceivedFrame, Shown | None]]:
    """Each frame to show, with its picture (None: it did not verify, never rendered).

    Preroll frames (``ArchiveReader.frames(preroll=True)``) go through ``renderer`` only, so
    that the first frame shown, at the asked time, already decodes."""
    for got in frames:
        if not got.verified:
            if not got.preroll:
                yield got, None
            continue
        shown = renderer.render(got.msg)
        if not got.preroll:
            yield got, shown
