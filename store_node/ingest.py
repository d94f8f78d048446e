"""The store's ingest decisions, without sockets: verify a message, archive it, and say what
to answer and what to relay.

``Ingest.take`` gets the parts of one message and the sender's certified identity and returns
an ``IngestOutcome``: an acknowledgement to send at once (a rejection), one to send after the
archive's next commit (stored or duplicate: acknowledged only once durable), the parts to relay
to live viewers, or nothing at all (a storage error: unacknowledged, so the camera keeps the
message and sends it again). The store node's loop (store_node/node.py) owns the sockets and
the commit timing; everything here runs in-process in tests.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from veilcam.common.errors import ArchiveError, FormatError, VerificationError
from veilcam.common.format import (
    ZERO_DIGEST,
    Ack,
    AckStatus,
    FrameHeader,
    FrameMessage,
    GapNotice,
    KeyEnvelope,
    Message,
    decode_message,
)
from veilcam.common.signing import ChainLink, ChainTracker, RejectReason, TrustedCameras
from veilcam.common.stagetimer import StageTimes
from veilcam.store_node.archive import Archive

log = logging.getLogger("veilcam.store")

HOLE_WAIT_S = 30.0
# the reason (metrics label, acknowledgement) of a frame from a camera another store owns
CAMERA_NOT_OWNED = (
    "camera_not_owned"  # later frames wait this long for one the store could not write
)


@dataclass
class IngestOutcome:
    """What the loop does with one message."""

    reply_now: Ack | None = None  # a rejection: answered at once
    reply_after_commit: Ack | None = None  # stored or duplicate: answered once durable
    relay: bool = False  # publish the message's parts to live viewers


class Ingest:
    """Verifies and archives what cameras send; keeps each camera's chain and the counters the
    metrics show. ``clock`` is monotonic seconds (how long a frame that could not be written
    holds back the ones after it)."""

    def __init__(
        self,
        archive: Archive,
        trust: TrustedCameras,
        rejects: Counter[str],
        times: StageTimes | None = None,
        clock: Callable[[], float] = time.monotonic,
        owns: Callable[[str], str | None] | None = None,
    ) -> None:
        """``owns(camera)``: None when this store archives the camera, else why not (several
        stores sharing an index, each owning some cameras); None: every camera."""
        self.archive = archive
        self.owns = owns
        self.trust = trust  # replaced by the store when certificates or the CRL change
        self.rejects = rejects
        self.times = times or StageTimes()
        self.clock = clock
        self.chain = ChainTracker()
        for camera, (seq, digest) in archive.last_frames().items():
            self.chain.set(camera, seq, digest)
        self.accepted: Counter[str] = Counter()
        # for the metrics endpoint (read by the scrape thread; written here only)
        self.frames_by_camera: Counter[str] = Counter()
        self.epoch_recipients: dict[str, int] = {}
        self._holes: dict[str, list] = {}  # camera -> [seq not written, last time it came]

    def take(self, parts: list[bytes], peer: str = "") -> IngestOutcome:
        """One message from the ingest socket; ``peer`` is the ZAP User-Id ("camera:NAME")."""
        try:
            msg = decode_message(parts)
        except FormatError as exc:
            return self._reject(None, RejectReason.MALFORMED, str(exc))
        if peer and peer != f"camera:{msg.camera_id}":
            detail = f"{peer} sent a message in the name of camera {msg.camera_id!r}"
            return self._reject(msg, RejectReason.WRONG_CAMERA_IDENTITY, detail)
        refusal = self.owns(msg.camera_id) if self.owns is not None else None
        if refusal is not None:
            return self._reject(msg, CAMERA_NOT_OWNED, refusal)
        try:
            if isinstance(msg, FrameMessage):
                return self._frame(msg)
            if isinstance(msg, KeyEnvelope):
                return self._envelope(msg)
            return self._gap(msg)
        except VerificationError as exc:
            return self._reject(msg, exc.reason, str(exc))
        except ArchiveError as exc:
            self._not_written(msg, exc)
            return IngestOutcome()

    # ------------------------------------------------------------------ by kind
    def _frame(self, msg: FrameMessage) -> IngestOutcome:
        with self.times.measure("verify"):
            self.trust.verify_frame(msg)
        last = self.chain.last(msg.camera_id)
        if last is not None and msg.header.seq <= last.seq:
            if self.archive.frame_digest(msg.camera_id, msg.header.seq) == msg.digest:
                return IngestOutcome(reply_after_commit=Ack.for_message(msg, AckStatus.DUPLICATE))
        self._hold_back(msg)
        link = self.chain.check(msg)  # raises for replay / fork
        if link == ChainLink.GAP and last is not None:
            log.warning(
                "camera %s: frames %d..%d missing before #%d",
                msg.camera_id,
                last.seq + 1,
                msg.header.seq - 1,
                msg.header.seq,
            )
        elif link == ChainLink.CHAIN_START and last is not None:
            log.info(
                "camera %s declared a new hash chain at #%d (restart without state)",
                msg.camera_id,
                msg.header.seq,
            )
        with self.times.measure("append"):
            self.archive.append(msg)
        self.chain.accept(msg)
        if self._holes.get(msg.camera_id, [None])[0] == msg.header.seq:
            del self._holes[msg.camera_id]
        self.accepted["frame"] += 1
        self.frames_by_camera[msg.camera_id] += 1
        return IngestOutcome(reply_after_commit=Ack.for_message(msg, AckStatus.STORED), relay=True)

    def _envelope(self, env: KeyEnvelope) -> IngestOutcome:
        self.trust.verify_envelope(env)
        status = AckStatus.DUPLICATE
        if not self.archive.has_envelope(env.camera_id, env.body.epoch_id):
            self.archive.append(env)
            self.accepted["envelope"] += 1
            status = AckStatus.STORED
        self.epoch_recipients[env.camera_id] = len({e.recipient_key_id for e in env.body.entries})
        return IngestOutcome(reply_after_commit=Ack.for_message(env, status), relay=True)

    def _gap(self, msg: GapNotice) -> IngestOutcome:
        self.trust.verify_gap(msg)
        if msg.offline:
            return self._offline(msg)
        self.archive.append(msg)
        hole = self._holes.get(msg.camera_id)
        if hole and msg.first_seq <= hole[0] <= msg.last_seq:
            del self._holes[msg.camera_id]  # the camera dropped it: declared
        self.accepted["gap_notice"] += 1
        log.warning(
            "camera %s declares frames #%d..#%d dropped (%s)",
            msg.camera_id,
            msg.first_seq,
            msg.last_seq,
            msg.reason.name.lower(),
        )
        return IngestOutcome(reply_after_commit=Ack.for_message(msg, AckStatus.STORED))

    def _offline(self, msg: GapNotice) -> IngestOutcome:
        """A source outage: its span must be the capture times of the frames it names, as far
        as the archive holds them (a frame the camera's spool dropped is judged by verify).
        A notice sent at a stop (``last_seq == first_seq``) ends at the stop, not at a frame."""
        ends = [(msg.first_seq, msg.from_us, "start")]
        if msg.last_seq != msg.first_seq:
            ends.append((msg.last_seq, msg.to_us, "end"))
        for seq, when, what in ends:
            parts = self.archive.frame_parts(msg.camera_id, seq)
            if parts is None:
                continue
            captured = FrameHeader.from_bytes(bytes(parts[0])).capture_time_us
            if captured != when:
                raise VerificationError(
                    RejectReason.CHAIN_BREAK,
                    f"offline notice {msg.camera_id}#{msg.first_seq}: its {what} "
                    f"({when} us) is not the capture time of frame #{seq} ({captured} us)",
                )
        self.archive.append(msg)
        self.accepted["gap_notice"] += 1
        log.warning("camera %s: %s", msg.camera_id, msg.describe())
        return IngestOutcome(reply_after_commit=Ack.for_message(msg, AckStatus.STORED))

    # ------------------------------------------------------------------ refusals
    def _hold_back(self, msg: FrameMessage) -> None:
        """Refuse (unacknowledged) a frame that would overtake one of its camera that the
        store could not write (disk full): once a later frame is archived, the earlier one
        could never be (it would be a replay), and a smaller later frame may well fit where
        the earlier did not. The camera sends the earlier one again, in order. The wait ends
        when it is stored, declared dropped (gap notice), or no longer sent: the camera
        restarted (a new chain, or HOLE_WAIT_S without it)."""
        hole = self._holes.get(msg.camera_id)
        if hole is None or msg.header.seq <= hole[0]:
            return
        if msg.header.prev_digest != ZERO_DIGEST and self.clock() - hole[1] < HOLE_WAIT_S:
            raise ArchiveError(
                f"frame {msg.camera_id}#{msg.header.seq} waits for "
                f"#{hole[0]}, which could not be written yet"
            )
        log.error(
            "camera %s no longer sends frame #%d, which could not be written; going on at #%d",
            msg.camera_id,
            hole[0],
            msg.header.seq,
        )
        del self._holes[msg.camera_id]

    def _not_written(self, msg: Message, exc: ArchiveError) -> None:
        """Not acknowledged, so the camera keeps the message and sends it again later."""
        if isinstance(msg, FrameMessage):
            hole = self._holes.setdefault(msg.camera_id, [msg.header.seq, 0.0])
            if msg.header.seq <= hole[0]:
                hole[:] = [msg.header.seq, self.clock()]
        self.rejects[RejectReason.STORAGE_ERROR] += 1
        n = self.rejects[RejectReason.STORAGE_ERROR]
        if n in (1, 10, 100) or n % 1000 == 0:
            log.error(
                "%s; not acknowledging (the camera keeps and resends it); "
                "%d message(s) refused so far",
                exc,
                n,
            )

    def _reject(self, msg: Message | None, reason: str, detail: str) -> IngestOutcome:
        self.rejects[reason] += 1
        log.warning("rejected %s: %s", reason, detail)
        if msg is None:
            return IngestOutcome()  # nothing to name in an answer
        return IngestOutcome(reply_now=Ack.for_message(msg, AckStatus.REJECTED, detail))
