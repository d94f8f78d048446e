"""The background uploader: closed segments to the object store, in order, then off local disk.

Two halves, so the SQLite index stays in the store's main thread:

- the **thread** (``_run``) does only object-store I/O: it takes the oldest queued segment,
  hashes it, uploads it (the server checks the SHA-256; multipart when large; Object Lock when
  configured) and confirms it with a HEAD. A failure keeps that same segment at the head of the
  queue and waits 1, 2, 4 ... s up to ``archive.s3.retry_max_s``: uploads never skip ahead, so
  they stay in order. Nothing here blocks ingest: the open segment is written and acknowledged
  as with a local archive, and closed segments simply wait on local disk (the free-disk rules of
  retention still apply to them).
- ``poll`` (called from the store's loop) records confirmed uploads in the index (the segment's
  ``location``, key, version, size, SHA-256 and lock), then removes the local file, and queues
  segments that closed since.

One log line per state change (unreachable, reachable again), one per segment uploaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from veilcam.store_node.archive import Archive, SegmentInfo
from veilcam.store_node.objectstore import (
    LockPolicy,
    ObjectMissing,
    ObjectStore,
    ObjectStoreError,
    StoredObject,
    file_sha256,
    sha256_b64,
)

log = logging.getLogger("veilcam.uploader")

FIRST_RETRY_S = 1.0


@dataclass(frozen=True)
class UploadJob:
    segment: SegmentInfo
    newest_us: int  # newest capture time in it (0: none), for the lock's retain-until date


def backoff_delays(cap_s: float) -> list[float]:
    """The waits between attempts: 1, 2, 4 ... seconds, then ``cap_s`` for good (listed up to
    the first capped one)."""
    delays, d = [], FIRST_RETRY_S
    while d < cap_s:
        delays.append(d)
        d *= 2
    return [*delays, cap_s]


class Uploader:
    """Uploads an archive's closed segments to one bucket (see the module docstring)."""

    def __init__(
        self,
        archive: Archive,
        objects: ObjectStore,
        lock: LockPolicy | None,
        retry_max_s: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.archive = archive
        self.objects = objects
        self.lock = lock
        self.delays = backoff_delays(retry_max_s)
        self.wall_clock = wall_clock
        self._cond = threading.Condition()
        self._jobs: deque[UploadJob] = deque()  # guarded by _cond
        self._done: deque[tuple[UploadJob, StoredObject]] = deque()  # guarded by _cond
        self._queued: set[int] = set()  # main thread only
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # metrics (read by the metrics thread; plain values)
        self.uploads_total = 0
        self.errors_total = 0
        self.up: bool | None = None  # None: not tried yet
        self.backlog_segments = 0
        self.backlog_bytes = 0
        self.lag_s = 0.0
        self._down_since = 0.0
        self._bucket_checked = False

    # ------------------------------------------------------------------ main thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="veilcam-uploader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` s. An upload cut short leaves
        its segment local; the next start uploads it again."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def has_results(self) -> bool:
        with self._cond:
            return bool(self._done)

    def poll(self) -> None:
        """Record finished uploads, queue newly closed segments, update the backlog figures.
        Call from the thread that owns the archive, after committing pending appends."""
        with self._cond:
            done = list(self._done)
            self._done.clear()
        for job, stored in done:
            self._record(job, stored)
        waiting = self.archive.upload_candidates()
        new = [s for s in waiting if s.segment_id not in self._queued]
        jobs = [UploadJob(s, self.archive.newest_capture(s.segment_id)) for s in new]
        if jobs:
            with self._cond:
                self._jobs.extend(jobs)
                self._cond.notify_all()
            self._queued.update(s.segment_id for s in new)
        self.backlog_segments = len(waiting)
        self.backlog_bytes = sum(s.size for s in waiting)
        oldest = min((_mtime(s) for s in waiting), default=None)
        self.lag_s = max(0.0, self.wall_clock() - oldest) if oldest is not None else 0.0

    def _record(self, job: UploadJob, stored: StoredObject) -> None:
        seg = job.segment
        self._queued.discard(seg.segment_id)
        path = self.archive.mark_uploaded(seg.segment_id, stored, int(self.wall_clock() * 1e6))
        where = f"{seg.camera}/{seg.name}"
        if path is None:
            log.warning(
                "%s was deleted by retention while it was uploaded; its object %s stays in "
                "the bucket (not in the index)",
                where,
                stored.key,
            )
            return
        lock = ""
        if stored.lock_mode and stored.retain_until_us:
            until = datetime.fromtimestamp(stored.retain_until_us / 1e6, UTC)
            lock = f", locked {stored.lock_mode} until {until:%Y-%m-%d %H:%M:%S} UTC"
        log.info(
            "uploaded %s to %s (%d bytes, sha256 %s%s); local copy removed",
            where,
            stored.key,
            stored.size,
            stored.sha256.hex()[:16],
            lock,
        )

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            with self._cond:
                while not self._jobs and not self._stopping.is_set():
                    self._cond.wait(1.0)
                if self._stopping.is_set():
                    return
                job = self._jobs[0]
            try:
                stored = self._upload(job)
            except (ObjectStoreError, OSError) as exc:
                self.errors_total += 1
                self._went_down(exc)
                delay = self.delays[min(attempt, len(self.delays) - 1)]
                attempt += 1
                self._stopping.wait(delay)
                continue
            attempt = 0
            self._came_up()
            self.uploads_total += 1
            with self._cond:
                self._jobs.popleft()
                self._done.append((job, stored))

    def _upload(self, job: UploadJob) -> StoredObject:
        if not self._bucket_checked:
            self.objects.check_bucket(lock_required=self.lock is not None)
            self._bucket_checked = True
        seg = job.segment
        digest, size = file_sha256(seg.path)
        lock = None
        if self.lock is not None:
            now = datetime.fromtimestamp(self.wall_clock(), UTC)
            lock = (self.lock.mode, self.lock.retain_until(job.newest_us, now))
        key = self.objects.key(seg.camera, seg.name)
        self._refuse_overwrite(key, digest, size)
        return self.objects.upload(seg.path, key, digest, size, lock)

    def _refuse_overwrite(self, key: str, digest: bytes, size: int) -> None:
        """Raise when the bucket already holds another segment at ``key`` (one HEAD): a store
        whose index was lost and could not be rebuilt from the bucket at start (object store
        unreachable then) numbers its new segments from 1 again, and uploading them would
        replace evidence. The segment stays on local disk, the queue waits, and the error says
        where to read what to do. The same bytes again (a stop between an upload and its
        recording) pass."""
        try:
            state = self.objects.head(key)
        except ObjectMissing:
            return
        same = (
            state.size == size
            and (state.meta_sha256 or digest.hex()) == digest.hex()
            and (
                state.checksum_sha256 is None
                or "-" in state.checksum_sha256
                or state.checksum_sha256 == sha256_b64(digest)
            )
        )
        if not same:
            raise ObjectStoreError(
                f"{key} already holds another segment: not overwritten, this one stays on local "
                "disk (an index lost and not rebuilt from the bucket at start, which was "
                "unreachable then?): docs/GUIDE.md section 19, 'A lost index'"
            )

    def _went_down(self, exc: Exception) -> None:
        if self.up is False:
            return
        self.up = False
        self._down_since = time.monotonic()
        log.warning(
            "object store %s: upload failed (%s); closed segments stay on local disk, "
            "retrying every %g s at most",
            self.objects.describe(),
            exc,
            self.delays[-1],
        )

    def _came_up(self) -> None:
        if self.up is False:
            log.info(
                "object store %s reachable again after %.0f s; uploading the backlog in order",
                self.objects.describe(),
                time.monotonic() - self._down_since,
            )
        self.up = True


def _mtime(seg: SegmentInfo) -> float:
    """When a segment was last written (closed), for the upload lag."""
    try:
        return seg.path.stat().st_mtime
    except OSError:
        return time.time()
