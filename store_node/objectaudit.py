"""``veilcam verify`` for segments held in an object store (``archive.backend = "s3"``).

Which segments to read from the bucket (those the index places there, plus segment objects under
the key prefix that neither the index nor the local disk knows: an archive whose index was
lost), and each one fetched whole into a temporary file, so ``store_node.audit`` checks it
record by record exactly like a local segment. On the way: its SHA-256 against the one recorded
at upload, and its Object Lock state (mode, retain-until) from a HEAD.

Problem kinds added: missing_segment_object (the index names an object the bucket does not
have), object_checksum_mismatch (the object's SHA-256 is not the one recorded at upload: altered
or replaced), object_unreadable (the object store did not answer, or none is configured: those
segments could not be checked).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

from veilcam.common.errors import ArchiveError
from veilcam.store_node.objectstore import (
    ObjectMissing,
    ObjectStore,
    ObjectStoreError,
    parse_object_key,
)

if TYPE_CHECKING:
    from veilcam.store_node.index import IndexDb

# add_problem(kind, detail) for the segment at hand
ProblemSink = Callable[[str, str], None]


@dataclass
class ObjectReport:
    """A segment held in the object store, as verify found it."""

    camera: str
    segment: str
    key: str
    size: int | None
    status: str = "ok"  # ok | missing | checksum_mismatch | unreadable
    lock_mode: str | None = None
    retain_until: str | None = None  # ISO 8601, UTC
    indexed: bool = True

    def describe(self) -> str:
        if self.status in ("missing", "unreadable"):
            return f"object {self.camera}/{self.segment} ({self.key}): {self.status}"
        lock = (
            f"locked {self.lock_mode} until {self.retain_until}"
            if self.lock_mode and self.retain_until
            else "not locked"
        )
        extra = "" if self.indexed else ", not in the index"
        status = "" if self.status == "ok" else f", {self.status.replace('_', ' ')}"
        return (
            f"object {self.camera}/{self.segment} ({self.key}): {self.size} bytes, "
            f"{lock}{status}{extra}"
        )


@dataclass(frozen=True)
class RemoteSegment:
    """A segment to read from the object store."""

    camera: str
    name: str
    key: str
    version_id: str | None
    size: int | None
    sha256: bytes | None  # recorded at upload (None: not in the index)
    indexed: bool


REMOTES_SQL = (
    "SELECT camera, name, object_key, version_id, size, sha256 FROM segments "
    "WHERE location != 'local' ORDER BY camera, name"
)


def indexed_remotes(index: Path | IndexDb) -> list[RemoteSegment]:
    """Segments the index (an SQLite file, or a shared ``IndexDb``) places in the object
    store (none for an index before schema 2, or one that cannot be read: the audit reports
    that itself)."""
    if not isinstance(index, Path):
        try:
            rows = index.execute(REMOTES_SQL).fetchall()
        except ArchiveError:
            return []
        return [
            RemoteSegment(c, n, k, v, z, bytes(h) if h is not None else None, True)
            for c, n, k, v, z, h in rows
        ]
    if not index.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
        try:
            columns = {r[1] for r in db.execute("PRAGMA table_info(segments)")}
            if "location" not in columns:
                return []
            rows = db.execute(REMOTES_SQL).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []
    return [
        RemoteSegment(c, n, k, v, z, bytes(h) if h is not None else None, True)
        for c, n, k, v, z, h in rows
    ]


def remote_segments(
    seg_root: Path, index: Path | IndexDb, objects: ObjectStore | None, add_problem: ProblemSink
) -> dict[str, list[RemoteSegment]]:
    """By camera: the segments to read from the bucket. A local file always wins over an
    object of the same name (a copy not yet removed after its upload)."""
    remotes = [r for r in indexed_remotes(index) if not (seg_root / r.camera / r.name).exists()]
    if objects is not None:
        try:
            listed = objects.list_segments()
        except ObjectStoreError as exc:
            add_problem("object_unreadable", str(exc))
            listed = {}
        known = {r.key for r in remotes}
        for key, (size, _) in sorted(listed.items()):
            parsed = parse_object_key(objects.prefix, key)
            if parsed and key not in known and not (seg_root / parsed[0] / parsed[1]).exists():
                remotes.append(RemoteSegment(parsed[0], parsed[1], key, None, size, None, False))
    out: dict[str, list[RemoteSegment]] = {}
    for r in remotes:
        out.setdefault(r.camera, []).append(r)
    return out


@contextmanager
def fetched(
    remote: RemoteSegment,
    objects: ObjectStore | None,
    entry: ObjectReport,
    add_problem: ProblemSink,
) -> Iterator[Path | None]:
    """The object downloaded to a temporary file (removed afterwards) with ``entry`` filled in
    (size, lock, status); None when it cannot be read. A checksum mismatch is reported and the
    file still yielded: its records are checked one by one all the same."""

    def problem(kind: str, status: str, detail: str) -> None:
        entry.status = status
        add_problem(kind, detail)

    if objects is None:
        problem("object_unreadable", "unreadable", f"{remote.key}: no object store configured")
        yield None
        return
    fd, tmp_name = tempfile.mkstemp(prefix="veilcam-verify-", suffix=".vseg")
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                digest = objects.download(remote.key, out, remote.version_id)
            state = objects.head(remote.key, remote.version_id)
        except ObjectMissing as exc:
            problem("missing_segment_object", "missing", f"the index names it, but {exc}")
            yield None
            return
        except ObjectStoreError as exc:
            problem("object_unreadable", "unreadable", str(exc))
            yield None
            return
        entry.size = state.size
        entry.lock_mode = state.lock_mode
        if state.retain_until is not None:
            entry.retain_until = state.retain_until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if remote.sha256 is not None and digest != remote.sha256:
            problem(
                "object_checksum_mismatch",
                "checksum_mismatch",
                f"{remote.key}: SHA-256 {digest.hex()[:16]}... is not the "
                f"{remote.sha256.hex()[:16]}... recorded at upload",
            )
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
