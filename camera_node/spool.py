"""The camera's pending messages, in sending order, without sockets.

Every message stays *pending* until the store acknowledges it as durably stored (or as a
duplicate). Pending messages live in memory up to ``memory_window``, beyond that in an on-disk
spool (one file each, in the camera's state folder), up to ``max_bytes``. When the spool is
full, ``drop_policy`` decides: with ``newest`` the camera drops the newly *captured* frame
before it is numbered and signed (``has_room`` is False), so the hash chain stays whole; with
``oldest`` the oldest spooled frames are deleted to make room (``add`` returns their sequence
numbers, and the camera declares them in a signed gap notice).

The spool outlives the process: ``keep_all`` writes what is still in memory to disk, and the
next start takes up the whole spool first, in the original order (file names begin with a
running number). The sender (camera_node/publisher.py) decides when each message goes out.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from veilcam.common.errors import FormatError
from veilcam.common.format import (
    KIND_FRAME,
    Ack,
    AckKey,
    AckStatus,
    Message,
    decode_message_body,
    pack_parts,
    unpack_parts,
)
from veilcam.common.secretfiles import write_atomic

log = logging.getLogger("veilcam.publisher")


@dataclass
class Pending:
    """One message waiting for its acknowledgement."""

    topic: bytes
    parts: list[bytes] | None  # None: spooled to ``path``
    size: int
    name: str
    path: Path | None = None
    sent: bool = False  # sent on the current connection


class Spool:
    def __init__(
        self,
        folder: Path,
        memory_window: int = 300,
        max_bytes: int = 2 * 2**30,
        drop_policy: str = "newest",
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.memory_window, self.max_bytes, self.drop_policy = memory_window, max_bytes, drop_policy
        self.pending: OrderedDict[AckKey, Pending] = OrderedDict()
        self.pending_bytes = 0
        self.in_memory = 0
        self.acked = self.rejected = self.dropped_spool_full = 0
        self.acked_frames = 0  # of ``acked``: frames (the rest are key envelopes, gap notices)
        self._order = 0  # running number of spool file names: the sending order
        self.recovered = self._load()

    # ------------------------------------------------------------------ state
    @property
    def has_room(self) -> bool:
        return self.drop_policy == "oldest" or self.pending_bytes < self.max_bytes

    @property
    def spooled(self) -> int:
        return len(self.pending) - self.in_memory

    def __len__(self) -> int:
        return len(self.pending)

    def unsent(self) -> Iterator[tuple[AckKey, Pending]]:
        """Pending messages not yet sent on the current connection, oldest first."""
        for key, entry in list(self.pending.items()):
            if not entry.sent:
                yield key, entry

    def mark_all_unsent(self) -> None:
        """A new connection, or a resend: everything pending goes again from the oldest."""
        for entry in self.pending.values():
            entry.sent = False

    # ------------------------------------------------------------------ changes
    def add(self, msg: Message, endpoint: str = "the store") -> list[int]:
        """Keep ``msg`` until acknowledged; returns the sequence numbers of frames dropped to
        make room (``oldest`` policy)."""
        key = msg.ack_key
        what = key[1].hex() if isinstance(key[1], bytes) else f"{key[1]:020d}"
        name = f"{self._order:012d}-{key[0].decode()}-{what}.msg"
        self._order += 1
        parts = msg.to_parts()
        size = sum(len(p) for p in parts)
        entry = Pending(parts[0], parts, size, name)
        if self.in_memory >= self.memory_window:
            if self.spooled == 0:
                log.warning(
                    "%d messages unacknowledged (store at %s unreachable or slow): spooling to %s",
                    len(self.pending),
                    endpoint,
                    self.folder,
                )
            self._write(key, entry)
        else:
            self.in_memory += 1
        self.pending[key] = entry
        self.pending_bytes += size
        return self._make_room(key) if self.drop_policy == "oldest" else []

    def _make_room(self, newest: AckKey) -> list[int]:
        dropped: list[int] = []
        while self.pending_bytes > self.max_bytes:
            # only frames go: envelopes open what remains, notices explain what went
            old_key = next((k for k in self.pending if k[0] == KIND_FRAME and k != newest), None)
            if old_key is None:
                break
            self.forget(old_key)
            seq = old_key[1]
            assert isinstance(seq, int)  # a frame's key
            dropped.append(seq)
            self.dropped_spool_full += 1
            if self.dropped_spool_full in (1, 10, 100) or self.dropped_spool_full % 1000 == 0:
                log.error(
                    "spool full (%d bytes): dropped the oldest unacknowledged frame(s), %d so far",
                    self.max_bytes,
                    self.dropped_spool_full,
                )
        return dropped

    def settle(self, ack: Ack) -> bool:
        """Take an acknowledgement; False if it names nothing pending (a late duplicate)."""
        if self.forget(ack.key) is None:
            return False
        if ack.status == AckStatus.REJECTED:
            self.rejected += 1
            log.error("store rejected %s: %s", ack.describe(), ack.reason)
        else:
            self.acked += 1
            self.acked_frames += ack.kind == KIND_FRAME
        return True

    def forget(self, key: AckKey) -> Pending | None:
        entry = self.pending.pop(key, None)
        if entry is None:
            return None
        self.pending_bytes -= entry.size
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)
        else:
            self.in_memory -= 1
        return entry

    def parts(self, entry: Pending) -> list[bytes] | None:
        """The message's parts, read back from disk if spooled; None if unreadable."""
        if entry.parts is not None:
            return entry.parts
        assert entry.path is not None  # spooled
        try:
            _, body = unpack_parts(entry.path.read_bytes())
        except (OSError, FormatError) as exc:
            log.error("spooled message %s is unreadable (%s); dropping it", entry.path, exc)
            return None
        return [entry.topic, *body]

    def keep_all(self) -> int:
        """Write what is in memory to disk for the next start; returns how many are kept."""
        for key, entry in self.pending.items():
            if entry.path is None:
                try:
                    self._write(key, entry)
                    self.in_memory -= 1
                except OSError as exc:
                    log.error("cannot keep %s in the spool (%s): it is lost", entry.name, exc)
        if self.pending:
            log.warning(
                "%d unacknowledged message(s) kept in %s; the next start sends them first",
                len(self.pending),
                self.folder,
            )
        return len(self.pending)

    # ------------------------------------------------------------------ disk
    def _write(self, key: AckKey, entry: Pending) -> None:
        """Move a pending message's bytes from memory to its spool file."""
        assert entry.parts is not None  # in memory until now
        entry.path = self.folder / entry.name
        write_atomic(entry.path, pack_parts(key[0], entry.parts[1:]))
        entry.parts = None

    def _load(self) -> int:
        """Take up what a previous run left unacknowledged in the spool, oldest first."""
        for path in sorted(self.folder.glob("*.msg")):
            try:
                self._order = max(self._order, int(path.name.split("-", 1)[0]) + 1)
                kind, body = unpack_parts(path.read_bytes())
                msg = decode_message_body(kind, body)
            except (OSError, ValueError, FormatError) as exc:
                log.error(
                    "spooled message %s is unreadable (%s); moving it aside as .bad", path, exc
                )
                path.replace(path.with_suffix(".bad"))
                continue
            key = msg.ack_key
            if key in self.pending:
                path.unlink()
                continue
            size = path.stat().st_size
            self.pending[key] = Pending(msg.to_parts()[0], None, size, path.name, path)
            self.pending_bytes += size
        if self.pending:
            log.warning(
                "%d message(s) a previous run left unacknowledged in %s go to the store first",
                len(self.pending),
                self.folder,
            )
        return len(self.pending)


def spool_dir_for(state_dir: Path, camera_id: str) -> Path:
    return Path(state_dir) / f"spool-{camera_id}"
