"""The camera's own memory of its hash chain across restarts.

Sequence numbers must never repeat for a camera (the store rejects a repeat as a replay), even
after a crash. So the camera *reserves* blocks of numbers: before using numbers up to R it
durably records R. After a crash it resumes at R, declaring a new chain (zero prev digest,
since the last digest may be lost); after a clean stop it records the exact last number and
digest and the next run continues the same chain. With no state file at all (a first run, or
the state folder lost with a disk), the camera node asks the store where its chain ended
(``CHAIN`` query) and resumes after it (``resume_after``).
"""

from __future__ import annotations

import json
from pathlib import Path

from veilcam.common.errors import VeilcamError
from veilcam.common.format import ZERO_DIGEST
from veilcam.common.secretfiles import write_atomic

RESERVE_BLOCK = 10_000


class ChainStateFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.next_seq = 0
        self.prev_digest = ZERO_DIGEST
        self._reserved = 0
        self.restored = self.path.exists()  # False: a first run, or the state folder was lost
        if self.restored:
            try:
                doc = json.loads(self.path.read_text("utf-8"))
                if doc.get("clean"):
                    self.next_seq = int(doc["next_seq"])
                    self.prev_digest = bytes.fromhex(doc["prev_digest"])
                else:
                    self.next_seq = int(doc["reserved"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise VeilcamError(
                    f"camera state {self.path} is corrupt ({exc}); move it "
                    "away only if you accept a new chain and possibly "
                    "rejected sequence numbers"
                ) from None
            if len(self.prev_digest) != 32:
                raise VeilcamError(f"camera state {self.path} has a bad digest")
        self._reserve()

    def _reserve(self) -> None:
        self._reserved = self.next_seq + RESERVE_BLOCK
        write_atomic(self.path, json.dumps({"clean": False, "reserved": self._reserved}).encode())

    def resume_after(self, last_seq: int) -> None:
        """Continue after ``last_seq`` (what the store holds, or a clock-based floor), as a
        new chain: without this camera's own state the last digest is unknown here."""
        if last_seq + 1 > self.next_seq:
            self.next_seq = last_seq + 1
            self.prev_digest = ZERO_DIGEST
            self._reserve()

    def advance(self, seq: int, digest: bytes) -> None:
        """Record that frame ``seq`` with ``digest`` was published."""
        self.next_seq = seq + 1
        self.prev_digest = digest
        if self.next_seq >= self._reserved:
            self._reserve()

    def close_clean(self) -> None:
        write_atomic(
            self.path,
            json.dumps(
                {"clean": True, "next_seq": self.next_seq, "prev_digest": self.prev_digest.hex()}
            ).encode(),
        )
