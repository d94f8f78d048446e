"""The archive: per-camera append-only segment files plus an index (SQLite, or PostgreSQL
shared by several stores: store_node/index.py).

Durability contract: ``append_*`` writes to the open segment (no fsync); ``commit`` fsyncs every
segment written since the last commit, then commits the index. The store acknowledges messages
only after ``commit`` returns, so an acknowledged message survives a crash. The index never
points past fsynced data; on open, records found after the last indexed one (written, not yet
committed) are indexed, and a torn tail is truncated.

Where a segment's bytes live is one column of the index (``segments.location``): ``local``
(the archive folder) or ``s3`` (an object in the bucket of ``store_node.objectstore``, uploaded
by ``store_node.uploader`` once the segment is closed, byte for byte). Readers go through
``_read_record``/``_read_rows``, which read a local file or an object by byte range; nothing else
needs to know. The open segment, and the newest segment of each camera, always stay local.

With a shared index (several stores, ``[archive] index = "postgres"``) each store writes the
rows of the cameras it owns (``cameras``) and applies retention and uploads to those only; it
reads every camera's rows, and every camera's uploaded segments from the bucket. A segment
another store has not uploaded yet is on that store's disk: reading it is a
``SegmentElsewhere`` error, and a playback stops before it (``frames_from``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from veilcam.common.errors import ArchiveError, FormatError
from veilcam.common.format import (
    FrameMessage,
    GapNotice,
    KeyEnvelope,
    Message,
    decode_message_body,
)
from veilcam.common.segments import (
    Record,
    ScanProblem,
    decode_record,
    encode_record,
    list_segments,
    read_record,
    scan_segment,
    segment_file_name,
    segment_header,
)
from veilcam.store_node.index import (
    SCHEMA_VERSION,
    IndexDb,
    IndexUnavailable,
    SqliteIndex,
    ensure_schema,
)

if TYPE_CHECKING:
    from veilcam.store_node.objectstore import ObjectStore, StoredObject

__all__ = ["SCHEMA_VERSION", "Archive", "SegmentElsewhere", "SegmentInfo", "decode_record"]

log = logging.getLogger("veilcam.archive")

# A segment past ``segment_max_bytes`` is closed at the next keyframe only, so each segment
# starts with one and retention drops whole groups of pictures. A stream that sends no
# keyframe would grow one segment without bound: past this many times the limit, the
# segment is closed at the next frame whatever it is.
SEGMENT_CEILING_FACTOR = 4


@dataclass(frozen=True)
class SegmentInfo:
    """A segment as the index knows it (retention, uploads, metrics)."""

    segment_id: int
    camera: str
    name: str
    path: Path  # where the file is or was (a name for logs once remote)
    location: str  # "local" | "s3"
    size: int
    newest_us: int  # newest capture time of its frames (0: none)
    object_key: str | None = None
    version_id: str | None = None
    retain_until_us: int | None = None


class SegmentElsewhere(ArchiveError):
    """A segment the (shared) index lists as local that is not on this store's disk: the
    open or not yet uploaded segment of a camera another store owns."""


# reads of contiguous records of one remote segment are merged into range requests of at most
# this many bytes (a RANGE answer of 50 frames is one GET, not 50)
MAX_RANGE_READ = 32 * 2**20


@dataclass
class _OpenSegment:
    segment_id: int
    path: Path
    fh: BinaryIO
    size: int
    dirty: bool = False


class Archive:
    def __init__(
        self,
        root: Path,
        segment_max_bytes: int = 256 * 2**20,
        objects: ObjectStore | None = None,
        index: IndexDb | None = None,
        cameras: Collection[str] | None = None,
    ) -> None:
        """``index``: the index to use (None: ``index.sqlite3`` in ``root``); ``cameras``: the
        cameras this store owns, whose segments it retains and uploads (None or empty: every
        camera it finds, on its disk only when the index is shared)."""
        self.root = Path(root)
        self.segment_max_bytes = segment_max_bytes
        self.objects = objects  # where remote segments are read from (None: local only)
        self.owned = frozenset(cameras or ())
        self._lock_waits: set[int] = set()  # segments retention found locked (logged once)
        try:
            (self.root / "segments").mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # archive.path is a file, unwritable, on a missing mount...
            raise ArchiveError(
                f"cannot use {self.root} as the archive folder (config "
                f"archive.path): {exc.strerror or exc}"
            ) from None
        try:
            self.index = index if index is not None else SqliteIndex(self.root / "index.sqlite3")
            ensure_schema(self.index)
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(
                f"archive index {self.root / 'index.sqlite3'} is unusable: {exc}; "
                "move it away and restart to rebuild it from the segments"
            ) from None
        self._open: dict[str, _OpenSegment] = {}
        self._in_txn = False
        self.recover()
        if objects is not None:
            self.recover_from_bucket(objects)

    @property
    def db(self) -> Any:
        """The index driver's own connection (tests and benches query SQLite's directly)."""
        return self.index.conn

    # ------------------------------------------------------------------ recovery
    def camera_dir(self, camera_id: str) -> Path:
        return self.root / "segments" / camera_id

    def _segment_id(self, camera_id: str, name: str) -> int:
        row = self.index.execute(
            "SELECT id FROM segments WHERE camera=? AND name=?", (camera_id, name)
        ).fetchone()
        if row:
            return int(row[0])
        return self.index.insert_segment(camera_id, name)

    def recover(self) -> None:
        """Index records the index does not know yet; truncate torn tails of last segments."""
        seg_root = self.root / "segments"
        self._drop_uploaded_copies()  # before scanning: the object is the segment now
        self.index.begin()
        for camera_dir in sorted(p for p in seg_root.iterdir() if p.is_dir()):
            camera_id = camera_dir.name
            segments = list_segments(camera_dir)
            for i, path in enumerate(segments):
                seg_id = self._segment_id(camera_id, path.name)
                end = self.index.execute(
                    'SELECT MAX("offset" + length) FROM (SELECT "offset", length FROM frames '
                    'WHERE segment_id=? UNION ALL SELECT "offset", length FROM envelopes WHERE '
                    "segment_id=?) AS records",
                    (seg_id, seg_id),
                ).fetchone()[0]
                added = 0
                for item in scan_segment(path, start=end):
                    if isinstance(item, ScanProblem):
                        if i == len(segments) - 1 and item.kind == "truncated":
                            log.warning(
                                "%s: torn tail at offset %d (%s): truncated",
                                path,
                                item.offset,
                                item.detail,
                            )
                            os.truncate(path, item.offset)
                        else:
                            log.error(
                                "%s: %s record at offset %d (%s); later records of this "
                                "segment are not indexed; run 'veilcam verify'",
                                path,
                                item.kind,
                                item.offset,
                                item.detail,
                            )
                        break
                    try:
                        msg = decode_message_body(item.kind, item.parts)
                    except FormatError as exc:
                        log.error(
                            "%s: record at offset %d does not parse (%s); not indexed",
                            path,
                            item.offset,
                            exc,
                        )
                        break
                    self.index_record(camera_id, seg_id, item, msg)
                    added += 1
                if added:
                    log.info("%s: indexed %d record(s) written before the last stop", path, added)
        self.index.commit()

    def recover_from_bucket(self, objects: ObjectStore) -> None:
        """Index the segment objects of this store's cameras that the index does not name (a
        lost or new index: ``store_node.rebuild``), before anything is appended, so new
        segments are numbered after them. An object store that cannot be listed is logged:
        the next start tries again."""
        from veilcam.store_node.objectstore import ObjectStoreError
        from veilcam.store_node.rebuild import rebuild_from_bucket

        try:
            rebuild_from_bucket(self, objects)
        except ObjectStoreError as exc:
            log.warning(
                "index rebuild from the bucket skipped (%s): segments in the bucket that the "
                "index does not name stay unindexed until the next start",
                exc,
            )

    def record_remote(self, segment_id: int, stored: StoredObject, uploaded_us: int | None) -> None:
        """Set where a segment lives to the object ``stored`` (inside the caller's transaction)."""
        self.index.execute(
            "UPDATE segments SET location='s3', object_key=?, version_id=?, size=?, sha256=?, "
            "lock_mode=?, retain_until_us=?, uploaded_us=? WHERE id=?",
            (
                stored.key,
                stored.version_id,
                stored.size,
                stored.sha256,
                stored.lock_mode,
                stored.retain_until_us,
                uploaded_us,
                segment_id,
            ),
        )

    def _drop_uploaded_copies(self) -> None:
        """Remove local files of segments the index says are in the object store: a stop
        between recording an upload and removing the file leaves one (the upload was
        confirmed before it was recorded)."""
        for camera, name in self.index.execute(
            "SELECT camera, name FROM segments WHERE location != 'local'"
        ).fetchall():
            path = self.camera_dir(camera) / name
            if path.exists():
                path.unlink()
                log.info("%s: removed the local copy of a segment already uploaded", path)

    def index_record(self, camera_id: str, seg_id: int, rec: Record, msg: Message) -> None:
        """Index the record ``rec`` holding ``msg``. Gap notices are not indexed: ``veilcam
        verify`` reads them from the segments."""
        if isinstance(msg, FrameMessage):
            header = msg.header
            self.index.execute(
                "INSERT INTO frames (camera, seq, capture_us, epoch, digest, "
                'segment_id, "offset", length, keyframe) VALUES (?,?,?,?,?,?,?,?,?) '
                "ON CONFLICT DO NOTHING",
                (
                    camera_id,
                    header.seq,
                    header.capture_time_us,
                    header.epoch_id,
                    msg.digest,
                    seg_id,
                    rec.offset,
                    rec.length,
                    1 if msg.is_keyframe else 0,
                ),
            )
        elif isinstance(msg, KeyEnvelope):
            body = msg.body
            self.index.execute(
                "INSERT INTO envelopes VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                (
                    camera_id,
                    body.epoch_id,
                    body.created_us,
                    body.first_seq,
                    seg_id,
                    rec.offset,
                    rec.length,
                ),
            )

    # ------------------------------------------------------------------ writing
    def _must_close(self, size: int, incoming: int, keyframe: bool) -> bool:
        """Whether a segment of ``size`` bytes is closed before a record of ``incoming``
        bytes: once past ``segment_max_bytes``, at a keyframe (so the next segment starts
        with one); past ``SEGMENT_CEILING_FACTOR`` times the limit, before any record."""
        after = size + incoming
        if after <= self.segment_max_bytes:
            return False
        return keyframe or after > SEGMENT_CEILING_FACTOR * self.segment_max_bytes

    def _segment_for(self, camera_id: str, incoming: int, keyframe: bool) -> _OpenSegment:
        """The segment the next record (``incoming`` bytes; ``keyframe``: a frame decoding
        can start at) goes to, opening a new one when the rotation rule says so."""
        seg = self._open.get(camera_id)
        if seg is not None and not self._must_close(seg.size, incoming, keyframe):
            return seg
        if seg is not None:
            if not keyframe:
                log.warning(
                    "%s: segment %s passed %d times archive.segment_max_bytes with no "
                    "keyframe; closed mid group of pictures",
                    camera_id,
                    seg.path.name,
                    SEGMENT_CEILING_FACTOR,
                )
            self._close_segment(seg)
        camera_dir = self.camera_dir(camera_id)
        camera_dir.mkdir(parents=True, exist_ok=True)
        existing = list_segments(camera_dir)
        # segments uploaded to the object store have no file here any more: count them too
        newest = self.index.execute(
            "SELECT MAX(name) FROM segments WHERE camera=?", (camera_id,)
        ).fetchone()[0]
        names = [p.name for p in existing] + ([newest] if newest else [])
        last_name = max(names) if names else None
        if (
            seg is None
            and existing
            and existing[-1].name == last_name
            and not self._must_close(existing[-1].stat().st_size, incoming, keyframe)
        ):
            path = existing[-1]
        else:
            number = int(Path(last_name).stem) + 1 if last_name else 1
            path = camera_dir / segment_file_name(number)
            with open(path, "xb") as fh:
                fh.write(segment_header(camera_id))
                fh.flush()
                os.fsync(fh.fileno())
            dir_fd = os.open(camera_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._begin()
        fh = open(path, "ab")
        seg = _OpenSegment(self._segment_id(camera_id, path.name), path, fh, fh.tell())
        self._open[camera_id] = seg
        if seg.size == len(segment_header(camera_id)):
            self._carry_envelope(camera_id, seg)
        return seg

    def _carry_envelope(self, camera_id: str, seg: _OpenSegment) -> None:
        """Start a new segment with a copy of the camera's latest key envelope, so that every
        segment holds the envelopes of all its frames' epochs and retention can delete old
        segments without orphaning the frames of an epoch that spans two of them."""
        row = self.index.execute(
            'SELECT segment_id, "offset", length FROM envelopes WHERE camera=? '
            "ORDER BY created_us DESC, segment_id DESC LIMIT 1",  # the newest copy: local
            (camera_id,),
        ).fetchone()
        if row is None:
            return
        kind, parts = self._read_record(row[0], row[1], row[2])
        env = decode_message_body(kind, parts)
        data = encode_record(kind, parts)
        seg.fh.write(data)
        self.index_record(camera_id, seg.segment_id, Record(seg.size, len(data), kind, parts), env)
        seg.size += len(data)
        seg.dirty = True

    def _close_segment(self, seg: _OpenSegment) -> None:
        if seg.dirty:
            seg.fh.flush()
            os.fsync(seg.fh.fileno())
        seg.fh.close()

    def _begin(self) -> None:
        if not self._in_txn:
            self.index.begin()
            self._in_txn = True

    def _append(self, msg: Message) -> Record:
        camera_id, kind, parts = msg.camera_id, msg.kind, msg.body_parts()
        data = encode_record(kind, parts)
        keyframe = isinstance(msg, FrameMessage) and msg.is_keyframe
        try:
            seg = self._segment_for(camera_id, len(data), keyframe)
            self._begin()
            offset = seg.size
            seg.fh.write(data)
            seg.fh.flush()
        except OSError as exc:  # disk full, file too large, I/O error
            self._undo_partial_write(camera_id)
            raise ArchiveError(f"cannot write to the archive at {self.root}: {exc}") from None
        rec = Record(offset, len(data), kind, parts)
        try:
            self.index_record(camera_id, seg.segment_id, rec, msg)
        except (sqlite3.Error, IndexUnavailable) as exc:
            self._undo_partial_write(camera_id)
            raise ArchiveError(f"cannot write to the archive index: {exc}") from None
        seg.size += len(data)
        seg.dirty = True
        return rec

    def _undo_partial_write(self, camera_id: str) -> None:
        """Cut a segment back to its last whole record, so a failed write leaves no torn
        record in the middle of the file for the next one to follow, and make the whole
        records before it durable (commit() no longer sees this segment)."""
        seg = self._open.pop(camera_id, None)
        if seg is None:
            return
        try:
            seg.fh.close()  # its buffer may still hold part of the failed record
        except OSError:
            pass
        try:
            os.truncate(seg.path, seg.size)
            fd = os.open(seg.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error(
                "%s: could not cut a failed write back (%s); the next start truncates "
                "the torn tail",
                seg.path,
                exc,
            )

    def append(self, msg: Message) -> None:
        """Write a verified message to its camera's segment as a record of its kind, and
        index it; durable (and acknowledgeable) only after ``commit``."""
        self._append(msg)

    def append_frame(self, msg: FrameMessage) -> None:
        self.append(msg)

    def append_envelope(self, env: KeyEnvelope) -> None:
        self.append(env)

    def append_gap(self, notice: GapNotice) -> None:
        self.append(notice)

    def commit(self) -> None:
        """Make every append so far durable: fsync the segments, then commit the index."""
        for seg in self._open.values():
            if seg.dirty:
                seg.fh.flush()
                os.fsync(seg.fh.fileno())
                seg.dirty = False
        if self._in_txn:
            self.index.commit()
            self._in_txn = False

    def close(self) -> None:
        self.commit()
        for seg in self._open.values():
            seg.fh.close()
        self._open.clear()
        self.index.close()

    # ------------------------------------------------------------------ reading
    def cameras(self) -> list[str]:
        return [
            r[0] for r in self.index.execute("SELECT DISTINCT camera FROM frames ORDER BY camera")
        ]

    def last_frame(self, camera_id: str) -> tuple[int, bytes] | None:
        row = self.index.execute(
            "SELECT seq, digest FROM frames WHERE camera=? ORDER BY seq DESC LIMIT 1", (camera_id,)
        ).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def last_frames(self) -> dict[str, tuple[int, bytes]]:
        rows = self.index.execute(
            "SELECT camera, seq, digest FROM frames f WHERE seq = "
            "(SELECT MAX(seq) FROM frames WHERE camera=f.camera)"
        )
        return {cam: (seq, bytes(digest)) for cam, seq, digest in rows}

    def last_seq(self, camera_id: str) -> int | None:
        """The highest sequence number archived for ``camera_id`` (None: no frame)."""
        row = self.index.execute(
            "SELECT MAX(seq) FROM frames WHERE camera=?", (camera_id,)
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def frame_digest(self, camera_id: str, seq: int) -> bytes | None:
        row = self.index.execute(
            "SELECT digest FROM frames WHERE camera=? AND seq=?", (camera_id, seq)
        ).fetchone()
        return bytes(row[0]) if row else None

    def has_envelope(self, camera_id: str, epoch_id: bytes) -> bool:
        return (
            self.index.execute(
                "SELECT 1 FROM envelopes WHERE camera=? AND epoch=?", (camera_id, epoch_id)
            ).fetchone()
            is not None
        )

    def _location(self, segment_id: int) -> tuple[Path, str | None, str | None]:
        """(local path, object key, version) of a segment; key None: a local file."""
        row = self.index.execute(
            "SELECT camera, name, location, object_key, version_id FROM segments WHERE id=?",
            (segment_id,),
        ).fetchone()
        if row is None:
            raise ArchiveError(f"segment {segment_id} is not in the index")
        camera, name, location, key, version = row
        path = self.camera_dir(camera) / name
        return path, (key if location != "local" else None), version

    def _read_record(self, segment_id: int, offset: int, length: int) -> tuple[bytes, list[bytes]]:
        """One record of a segment, from its file or from its object (by byte range)."""
        return self._read_rows_raw([(segment_id, offset, length)])[0]

    def _read_rows_raw(self, rows: list[tuple[int, int, int]]) -> list[tuple[bytes, list[bytes]]]:
        """(kind, parts) of each (segment, offset, length), in order. Local records are read
        from their files; contiguous records of one remote segment are read together by one
        range request (up to ``MAX_RANGE_READ`` bytes)."""
        out: list[tuple[bytes, list[bytes]]] = []
        i = 0
        locations: dict[int, tuple[Path, str | None, str | None]] = {}
        while i < len(rows):
            seg, off, length = rows[i]
            if seg not in locations:
                locations[seg] = self._location(seg)
            path, key, version = locations[seg]
            if key is None:
                try:
                    out.append(read_record(path, off, length))
                except FileNotFoundError:
                    raise SegmentElsewhere(
                        f"segment {path.parent.name}/{path.name} is not in the object store yet: "
                        f"it is on the disk of the store that owns camera {path.parent.name} "
                        "(open, or waiting for its upload); that store serves it until then"
                    ) from None
                i += 1
                continue
            if self.objects is None:
                raise ArchiveError(
                    f"segment {path.parent.name}/{path.name} is in the object store, and "
                    "archive.backend is not 's3'"
                )
            j, end = i + 1, off + length
            while j < len(rows) and rows[j][0] == seg and rows[j][1] == end:
                if end + rows[j][2] - off > MAX_RANGE_READ:
                    break
                end += rows[j][2]
                j += 1
            data = self.objects.read_range(key, off, end - off, version)
            for _, o_, l_ in rows[i:j]:
                out.append(decode_record(data[o_ - off : o_ - off + l_], f"{key}: record at {o_}"))
            i = j
        return out

    def envelope_parts(self, camera_id: str, epoch_id: bytes) -> list[bytes] | None:
        """Body parts of the key envelope of an epoch, or None."""
        self._flush_buffers()
        row = self.index.execute(
            'SELECT segment_id, "offset", length FROM envelopes WHERE camera=? AND epoch=?',
            (camera_id, epoch_id),
        ).fetchone()
        if row is None:
            return None
        return self._read_record(row[0], row[1], row[2])[1]

    def frame_parts(self, camera_id: str, seq: int) -> list[bytes] | None:
        self._flush_buffers()
        row = self.index.execute(
            'SELECT segment_id, "offset", length FROM frames WHERE camera=? AND seq=?',
            (camera_id, seq),
        ).fetchone()
        if row is None:
            return None
        return self._read_record(row[0], row[1], row[2])[1]

    def frames_from(
        self, camera_id: str, from_us: int, after_seq: int | None, limit: int
    ) -> list[list[bytes]]:
        """Body parts of up to ``limit`` frames in sequence order: to start a playback
        (``after_seq`` None) from the camera's last keyframe captured at or before
        ``from_us`` (``playback_start``), to continue one from the frame after ``after_seq``."""
        self._flush_buffers()
        if after_seq is None:
            start = self.playback_start(camera_id, from_us)
            if start is None:
                return []
            rows = self.index.execute(
                'SELECT segment_id, "offset", length FROM frames WHERE '
                "camera=? AND seq>=? ORDER BY seq LIMIT ?",
                (camera_id, start, limit),
            ).fetchall()
        else:
            rows = self.index.execute(
                'SELECT segment_id, "offset", length FROM frames WHERE '
                "camera=? AND seq>? ORDER BY seq LIMIT ?",
                (camera_id, after_seq, limit),
            ).fetchall()
        return self._read_rows_until_elsewhere(rows)

    def _read_rows_until_elsewhere(self, rows: list[tuple[int, int, int]]) -> list[list[bytes]]:
        """The frames of ``rows`` up to the first held by a segment on another store's disk
        (a shared index): a playback gets what this store can read, then, asking for the
        next frame, the reason it cannot go on. An error when the first one is elsewhere."""
        out: list[list[bytes]] = []
        start = 0
        while start < len(rows):
            seg = rows[start][0]
            end = start
            while end < len(rows) and rows[end][0] == seg:
                end += 1
            try:
                out += self._read_rows(rows[start:end])
            except SegmentElsewhere:
                if not out:
                    raise
                return out
            start = end
        return out

    def playback_start(self, camera_id: str, from_us: int) -> int | None:
        """The sequence number a playback from ``from_us`` starts at: the keyframe with the
        latest capture time at or before ``from_us`` (decoding can only start at one), else,
        when none is that old, the first frame captured at or after it; None: no such frame."""
        row = self.index.execute(
            "SELECT seq FROM frames WHERE camera=? AND keyframe=1 AND capture_us<=? "
            "ORDER BY capture_us DESC, seq DESC LIMIT 1",
            (camera_id, from_us),
        ).fetchone()
        if row is None:
            row = self.index.execute(
                "SELECT seq FROM frames WHERE camera=? AND capture_us>=? "
                "ORDER BY capture_us, seq LIMIT 1",
                (camera_id, from_us),
            ).fetchone()
        return None if row is None else int(row[0])

    def current_gop(self, camera_id: str, max_frames: int) -> list[list[bytes]]:
        """Body parts of the camera's current group of pictures, in sequence order: from its
        last keyframe to its newest archived frame, what a viewer joining live decodes first.
        Only the newest ``max_frames`` frames are looked at: without a keyframe among them
        the answer is empty (the viewer waits for the next keyframe on the relay)."""
        self._flush_buffers()
        rows = self.index.execute(
            'SELECT segment_id, "offset", length, keyframe FROM frames WHERE camera=? '
            "ORDER BY seq DESC LIMIT ?",
            (camera_id, max_frames),
        ).fetchall()
        for i, row in enumerate(rows):
            if row[3]:
                return self._read_rows([r[:3] for r in reversed(rows[: i + 1])])
        return []

    def _read_rows(self, rows: list[tuple[int, int, int]]) -> list[list[bytes]]:
        return [parts for _, parts in self._read_rows_raw(rows)]

    def time_range(self, camera_id: str) -> tuple[int, int, int] | None:
        """(first capture µs, last capture µs, frame count) of a camera in the archive."""
        row = self.index.execute(
            "SELECT MIN(capture_us), MAX(capture_us), COUNT(*) FROM frames WHERE camera=?",
            (camera_id,),
        ).fetchone()
        return row if row and row[2] else None

    def coverage(self, camera_id: str, from_us: int, to_us: int, buckets: int) -> list[int]:
        """Frames archived in each of ``buckets`` equal slices of [from_us, to_us): the
        viewer's timeline, where empty slices are gaps in the recording."""
        width = max(1, -(-(to_us - from_us) // buckets))
        counts = [0] * buckets
        rows = self.index.execute(
            "SELECT (capture_us - ?) / ?, COUNT(*) FROM frames WHERE "
            "camera=? AND capture_us>=? AND capture_us<? GROUP BY 1",
            (from_us, width, camera_id, from_us, to_us),
        ).fetchall()
        for bucket, count in rows:
            if 0 <= bucket < buckets:
                counts[bucket] = count
        return counts

    # ------------------------------------------------------------------ retention
    def segments_of(self, camera_id: str) -> list[SegmentInfo]:
        """A camera's segments as the index knows them (local and remote), oldest first."""
        out = []
        rows = self.index.execute(
            "SELECT s.id, s.name, s.location, s.size, s.object_key, s.version_id, "
            "s.retain_until_us, (SELECT MAX(capture_us) FROM frames f WHERE f.segment_id=s.id) "
            "FROM segments s WHERE s.camera=? ORDER BY s.name",
            (camera_id,),
        ).fetchall()
        for seg_id, name, location, size, key, version, until, newest in rows:
            path = self.camera_dir(camera_id) / name
            if location == "local":
                try:
                    size = path.stat().st_size
                except OSError:  # removed behind the store's back: nothing left to keep
                    size = 0
            out.append(
                SegmentInfo(
                    seg_id,
                    camera_id,
                    name,
                    path,
                    location,
                    size or 0,
                    newest or 0,
                    key,
                    version,
                    until,
                )
            )
        return out

    def segment_usage(self, camera_id: str) -> list[tuple[int, Path, int, int]]:
        """(segment id, path, bytes, newest capture µs) of a camera's segments, oldest first."""
        return [(i.segment_id, i.path, i.size, i.newest_us) for i in self.segments_of(camera_id)]

    def _all_cameras(self) -> list[str]:
        """The cameras whose segments this store manages (retention, uploads): those it owns
        (``cameras``), else every camera with segments on its disk or in its own index. With
        a shared index, another store's camera is never one of them."""
        seg_root = self.root / "segments"
        on_disk = {p.name for p in seg_root.iterdir() if p.is_dir()} if seg_root.is_dir() else set()
        if self.owned:
            return sorted(self.owned)
        if self.index.shared:
            return sorted(on_disk)
        indexed = {r[0] for r in self.index.execute("SELECT DISTINCT camera FROM segments")}
        return sorted(on_disk | indexed)

    def delete_segment(self, camera_id: str, seg_id: int, path: Path) -> None:
        """Forget a closed segment: index rows first (committed), then the file. A crash in
        between leaves a file the next start re-indexes, never index rows without a file.
        A remote segment's object is deleted first (``_delete_remote``)."""
        open_seg = self._open.get(camera_id)
        if open_seg is not None and open_seg.segment_id == seg_id:
            raise ArchiveError("the open segment is never deleted")
        self.commit()
        self.index.begin()
        for table in ("frames", "envelopes"):
            self.index.execute(f"DELETE FROM {table} WHERE segment_id=?", (seg_id,))  # noqa: S608
        self.index.execute("DELETE FROM segments WHERE id=?", (seg_id,))
        self.index.commit()
        path.unlink(missing_ok=True)

    def _delete_remote(self, info: SegmentInfo, now_us: int) -> bool:
        """Delete a remote segment's object version, then its index rows. False (and logged
        once per segment) when its Object Lock still holds, the store refuses, or the object
        store cannot be reached: retention tries again at its next check. The object goes
        first: a stop in between leaves index rows whose object is gone, which the next
        retention pass removes (a missing object counts as deleted) and verify reports."""
        from veilcam.store_node.objectstore import ObjectStoreError

        where = f"{info.camera}/{info.name}"
        if info.retain_until_us is not None and now_us < info.retain_until_us:
            if info.segment_id not in self._lock_waits:
                self._lock_waits.add(info.segment_id)
                log.info(
                    "retention: %s is due but locked until %s (Object Lock); deleted after that",
                    where,
                    time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.retain_until_us / 1e6)),
                )
            return False
        if self.objects is None or info.object_key is None:
            return False
        try:
            self.objects.delete(info.object_key, info.version_id)
        except ObjectStoreError as exc:
            if info.segment_id not in self._lock_waits:
                self._lock_waits.add(info.segment_id)
                log.warning("retention: cannot delete %s yet (%s); will retry", where, exc)
            return False
        self._lock_waits.discard(info.segment_id)
        self.delete_segment(info.camera, info.segment_id, info.path)
        return True

    def _retire(self, info: SegmentInfo, now_us: int) -> bool:
        """Delete one segment for retention, wherever it lives; False: it stays for now."""
        if info.location == "local":
            self.delete_segment(info.camera, info.segment_id, info.path)
            return True
        return self._delete_remote(info, now_us)

    def apply_retention(
        self, max_age_s: float, max_bytes: int, min_free_bytes: int, now_us: int
    ) -> list[Path]:
        """Delete the oldest closed segments of each camera past ``max_age_s`` or beyond
        ``max_bytes`` (0: no limit), remote ones only once their Object Lock allows; then,
        while the disk has less than ``min_free_bytes`` free, the oldest closed local segment
        of any camera (emergency). Returns what was deleted."""
        deleted: list[Path] = []
        closed_local: dict[str, list[SegmentInfo]] = {}
        for camera in self._all_cameras():
            usage = self.segments_of(camera)
            closed = usage[:-1]  # the newest one is (or will be) written to
            total = sum(u.size for u in usage)
            for info in list(closed):
                # a segment without frames holds only carried envelopes: nothing to keep it for
                too_old = max_age_s > 0 and (
                    not info.newest_us or now_us - info.newest_us > max_age_s * 1e6
                )
                too_big = max_bytes > 0 and total > max_bytes
                if not (too_old or too_big) or not self._retire(info, now_us):
                    break  # oldest first: a segment that stays keeps the younger ones too
                closed.pop(0)
                total -= info.size
                deleted.append(info.path)
            closed_local[camera] = [u for u in closed if u.location == "local"]
        while min_free_bytes > 0 and shutil.disk_usage(self.root).free < min_free_bytes:
            candidates = [(us[0].newest_us, cam) for cam, us in closed_local.items() if us]
            if not candidates:
                break
            _, cam = min(candidates)
            info = closed_local[cam].pop(0)
            log.error(
                "disk almost full (< %d MB free): deleting the oldest segment %s early",
                min_free_bytes // 2**20,
                info.path,
            )
            self.delete_segment(cam, info.segment_id, info.path)
            deleted.append(info.path)
        return deleted

    # ------------------------------------------------------------------ object store
    def upload_candidates(self) -> list[SegmentInfo]:
        """Closed local segments waiting for the object store, in the order they were
        created: every camera's local segments but its newest (open, or reopened at the next
        start), each with a file present."""
        out = []
        for camera in self._all_cameras():
            segs = self.segments_of(camera)
            out += [s for s in segs[:-1] if s.location == "local" and s.path.exists()]
        return sorted(out, key=lambda s: s.segment_id)

    def mark_uploaded(self, segment_id: int, stored: StoredObject, now_us: int) -> Path | None:
        """Record that a segment now lives in the object store (committed), then remove its
        local file. None when the segment is no longer indexed (retention removed it during
        the upload): the caller decides about the object."""
        self.commit()
        self.index.begin()
        cur = self.index.execute(
            "UPDATE segments SET location='s3', object_key=?, version_id=?, size=?, sha256=?, "
            "lock_mode=?, retain_until_us=?, uploaded_us=? WHERE id=? AND location='local'",
            (
                stored.key,
                stored.version_id,
                stored.size,
                stored.sha256,
                stored.lock_mode,
                stored.retain_until_us,
                now_us,
                segment_id,
            ),
        )
        self.index.commit()
        if cur.rowcount == 0:
            return None
        path = self._location(segment_id)[0]
        path.unlink(missing_ok=True)
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
        return path

    def newest_capture(self, segment_id: int) -> int:
        """Newest capture time (µs) of a segment's frames; 0 when it holds none."""
        row = self.index.execute(
            "SELECT MAX(capture_us) FROM frames WHERE segment_id=?", (segment_id,)
        ).fetchone()
        return int(row[0] or 0)

    def remote_segments(self) -> list[SegmentInfo]:
        """Every segment the index places in the object store."""
        return [
            s for cam in self._all_cameras() for s in self.segments_of(cam) if s.location != "local"
        ]

    def _flush_buffers(self) -> None:
        for seg in self._open.values():
            seg.fh.flush()
