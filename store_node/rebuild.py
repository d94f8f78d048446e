"""Rebuild the archive index from the segments in the bucket (``archive.backend = "s3"``).

An index lost with its disk, or an SQLite file moved away after corruption, leaves the closed
segments in the bucket with nothing naming them: playback, export and retention would not see
them, and the store, numbering new segments after the highest one it knows, would reuse their
names. So every store start with an object store runs ``rebuild_from_bucket`` after the local
recovery (``Archive.recover``) and before the first append: it lists the segment objects under
the key prefix (one LIST per 1000 objects; nothing more when the index names them all), and
reads each object the index does not name — the store's own cameras only (``store.cameras``;
with a shared index and no such list, only cameras it has local segments of) — whole, into a
temporary file, scans it with the code recovery uses for local files
(``common.segments.scan_segment``), and indexes its records with ``location = 's3'`` and the
object's key, version, size, SHA-256 (of the bytes read; checked against the object's own
checksum and the SHA-256 metadata the uploader wrote), and Object Lock mode and retain-until
(from a HEAD).

An object is indexed all or nothing, in one transaction: one whose bytes do not match its
checksum, whose header names another camera, or with any record that is cut short, corrupt or
does not parse is reported (one line) and left out of the index. ``veilcam verify`` still finds
it (it reads objects the index does not name) and reports the damage. A second run finds
nothing to do: an object is skipped once the index has a segment of that camera and name (a
local file of the same name wins: a copy not yet removed after its upload).

Why at start rather than a separate command: the rebuild has to happen before the store writes
again (or new segments would take the names of objects in the bucket), and when the index is
whole it costs one LIST. An unreachable object store is logged and the store starts anyway (the
rebuild runs at the next start).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from veilcam.common.errors import ArchiveError, FormatError
from veilcam.common.format import FrameMessage, KeyEnvelope, decode_message_body
from veilcam.common.segments import Record, ScanProblem, read_segment_header, scan_segment
from veilcam.store_node.objectstore import (
    ObjectState,
    ObjectStore,
    ObjectStoreError,
    StoredObject,
    parse_object_key,
    sha256_b64,
)

if TYPE_CHECKING:
    from veilcam.store_node.archive import Archive

log = logging.getLogger("veilcam.archive")


@dataclass(frozen=True)
class Missing:
    """A segment object the index does not name."""

    camera: str
    name: str
    key: str
    size: int


@dataclass
class CameraCounts:
    segments: int = 0
    frames: int = 0
    envelopes: int = 0
    bytes: int = 0
    skipped: int = 0  # objects reported and left out


@dataclass
class RebuildReport:
    cameras: dict[str, CameraCounts] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def segments(self) -> int:
        return sum(c.segments for c in self.cameras.values())


def missing_objects(
    listed: Mapping[str, tuple[int, str | None]],
    prefix: str,
    known: Collection[tuple[str, str]],
    cameras: Collection[str] | None,
) -> dict[str, list[Missing]]:
    """By camera, oldest first: the segment objects of ``listed`` (key -> (size, _)) under
    ``prefix`` that ``known`` ((camera, name) pairs the index has) does not name, for
    ``cameras`` only (None: every camera)."""
    out: dict[str, list[Missing]] = {}
    for key, (size, _) in listed.items():
        parsed = parse_object_key(prefix, key)
        if parsed is None or parsed in known:
            continue
        camera, name = parsed
        if cameras is not None and camera not in cameras:
            continue
        out.setdefault(camera, []).append(Missing(camera, name, key, size))
    return {c: sorted(ms, key=lambda m: m.name) for c, ms in sorted(out.items())}


def content_problem(digest: bytes, state: ObjectState) -> str | None:
    """Why bytes with SHA-256 ``digest`` are not the object ``state`` describes, or None. The
    server's checksum is compared when it is a whole-object one (a multipart object's is a
    checksum of its parts' checksums); the uploader's metadata always."""
    if state.meta_sha256 is not None and state.meta_sha256 != digest.hex():
        return "its bytes are not the SHA-256 recorded at upload (altered or replaced)"
    checksum = state.checksum_sha256
    if checksum is not None and "-" not in checksum and checksum != sha256_b64(digest):
        return "its bytes do not match the object store's SHA-256 checksum"
    return None


def scan_whole(path: Path, camera: str) -> tuple[list[Record], str | None]:
    """Every record of a closed segment file, or the first reason it cannot be indexed whole
    (a closed segment has no torn tail: any problem means damage)."""
    try:
        with open(path, "rb") as fh:
            found, _ = read_segment_header(fh, path)
    except ArchiveError as exc:
        return [], str(exc).replace(f"{path}: ", "").replace(f"{path} ", "")
    if found != camera:
        return [], f"its header names camera {found!r}"
    records: list[Record] = []
    for item in scan_segment(path):
        if isinstance(item, ScanProblem):
            return [], f"{item.kind} record at offset {item.offset} ({item.detail})"
        records.append(item)
    return records, None


def _cameras_for(archive: Archive) -> frozenset[str] | None:
    """The cameras whose objects this store indexes (None: all)."""
    if archive.owned:
        return archive.owned
    if archive.index.shared:
        seg_root = archive.root / "segments"
        return frozenset(p.name for p in seg_root.iterdir() if p.is_dir())
    return None


def rebuild_from_bucket(archive: Archive, objects: ObjectStore) -> RebuildReport:
    """Index the segment objects of this store's cameras that the index does not name (see
    the module docstring). Raises ObjectStoreError when the bucket cannot be listed."""
    started = time.monotonic()
    report = RebuildReport()
    listed = objects.list_segments()
    known = {
        (str(c), str(n)) for c, n in archive.index.execute("SELECT camera, name FROM segments")
    }
    todo = missing_objects(listed, objects.prefix, known, _cameras_for(archive))
    for camera, items in todo.items():
        counts = report.cameras.setdefault(camera, CameraCounts())
        for item in items:
            problem = _index_object(archive, objects, item, counts)
            if problem is not None:
                counts.skipped += 1
                line = f"{item.key}: {problem}; not indexed (run 'veilcam verify')"
                report.problems.append(line)
                log.error("index rebuild: %s", line)
        log.info(
            "index rebuild: camera %s: %d segment(s) indexed from %s (%d frame(s), %d key "
            "envelope(s), %.1f MB read)%s",
            camera,
            counts.segments,
            objects.describe(),
            counts.frames,
            counts.envelopes,
            counts.bytes / 1e6,
            f", {counts.skipped} damaged object(s) left out" if counts.skipped else "",
        )
    report.seconds = time.monotonic() - started
    return report


def _index_object(
    archive: Archive, objects: ObjectStore, item: Missing, counts: CameraCounts
) -> str | None:
    """Read one object and index all of its records in one transaction; why not, or None."""
    fd, tmp_name = tempfile.mkstemp(prefix=".rebuild-", suffix=".tmp", dir=archive.root)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = objects.download(item.key, out)
        state = objects.head(item.key)
        counts.bytes += tmp.stat().st_size
        problem = content_problem(digest, state)
        records, scan_problem = scan_whole(tmp, item.camera)
        problem = problem or scan_problem
        if problem is not None:
            return problem
        stored = StoredObject(
            item.key,
            state.size,
            digest,
            state.version_id,
            state.lock_mode,
            int(state.retain_until.timestamp() * 1e6) if state.retain_until else None,
        )
        uploaded_us = int((state.last_modified.timestamp() if state.last_modified else 0) * 1e6)
        return _insert(archive, item, records, stored, uploaded_us or None, counts)
    except ObjectStoreError as exc:
        return str(exc)
    finally:
        tmp.unlink(missing_ok=True)


def _insert(
    archive: Archive,
    item: Missing,
    records: list[Record],
    stored: StoredObject,
    uploaded_us: int | None,
    counts: CameraCounts,
) -> str | None:
    """The segment row and its records' rows, committed together (nothing on a problem)."""
    messages = []
    for rec in records:
        try:
            messages.append((rec, decode_message_body(rec.kind, rec.parts)))
        except FormatError as exc:
            return f"record at offset {rec.offset} does not parse ({exc})"
    index = archive.index
    index.begin()
    try:
        seg_id = index.insert_segment(item.camera, item.name)
        archive.record_remote(seg_id, stored, uploaded_us)
        frames = envelopes = 0
        for rec, msg in messages:
            archive.index_record(item.camera, seg_id, rec, msg)
            frames += isinstance(msg, FrameMessage)
            envelopes += isinstance(msg, KeyEnvelope)
    except BaseException:
        index.rollback()
        raise
    index.commit()
    counts.segments += 1
    counts.frames += frames
    counts.envelopes += envelopes
    return None
