"""``veilcam verify``: re-check an archive from its segment files alone, for an auditor.

The index is not trusted: segments are read record by record, every frame and key envelope
is verified against the trusted camera keys, and each camera's sequence numbers and hash
chain are followed. Each problem is reported with its camera, segment, byte offset, sequence
number and kind, so "what is wrong and where" needs no further digging.

Problem kinds: corrupt_record, truncated_segment, malformed, wrong_camera (a frame, key
envelope or gap notice of another camera in this camera's folder: not counted for it),
bad_signature,
image_hash_mismatch, zone_hash_mismatch, unknown_camera, certificate_expired (no certificate of the camera covered
the capture time), chain_break (a frame does not link to the one before it: altered, inserted
or swapped), reordered (sequence number not increasing), gap (sequence numbers missing:
deleted or never delivered), missing_envelope (frames of an epoch whose key envelope is not
archived), missing_frames (frames the index lists that the segments no longer hold: cut from
the start or end, or whole segments removed).
Informational: chain_start (the camera declared a new chain after a restart without state),
declared_gap (frames the camera itself dropped and declared in a signed gap notice, e.g. when
its spool overflowed; the notices must be this camera's and end where the gap ends),
declared_offline (the camera's signed word that its source delivered nothing between two of
its frames, or from its last frame until it stopped: "camera offline 12:01:03-12:01:41").
A problem of its own: offline_notice_mismatch (an offline notice whose span is not the capture
times of the frames it names).
Segments in an object store (``archive.backend = "s3"``) are read whole from the bucket and
checked the same way (store_node/objectaudit.py: its problem kinds, and ``objects``, each
segment's key, size and Object Lock state).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from veilcam.common.errors import ArchiveError, FormatError, VerificationError
from veilcam.common.format import FrameMessage, GapNotice, KeyEnvelope, decode_message_body
from veilcam.common.segments import ScanProblem, list_segments, scan_segment
from veilcam.common.signing import ChainLink, ChainTracker, TrustedCameras
from veilcam.store_node.objectaudit import ObjectReport, RemoteSegment, fetched, remote_segments

if TYPE_CHECKING:
    from veilcam.store_node.index import IndexDb
    from veilcam.store_node.objectstore import ObjectStore

log = logging.getLogger("veilcam.verify")

# progress(bytes checked, bytes in all segments, records checked)
ProgressCallback = Callable[[int, int, int], None]


@dataclass
class Finding:
    camera: str
    segment: str
    offset: int
    seq: int | None
    kind: str
    detail: str


@dataclass
class CameraReport:
    camera: str
    frames: int = 0
    envelopes: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_time_us: int | None = None
    last_time_us: int | None = None
    chain_starts: int = 0
    offline_s: float = 0.0  # declared by the camera: its source delivered nothing
    offline_spans: int = 0


@dataclass
class AuditReport:
    archive: str
    cameras: list[CameraReport] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    objects: list[ObjectReport] = field(default_factory=list)  # segments in the bucket

    @property
    def intact(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "archive": self.archive,
            "intact": self.intact,
            "cameras": [asdict(c) for c in self.cameras],
            "problems": [asdict(p) for p in self.problems],
            "notes": [asdict(n) for n in self.notes],
            "objects": [asdict(o) for o in self.objects],
        }


class _Tally:
    """Turns (segment, offset) of each record checked into progress over all segments."""

    def __init__(self, camera_dirs: list[Path], progress: ProgressCallback | None) -> None:
        self.progress = progress
        self.sizes: dict[Path, int] = {}
        if progress is not None:
            for camera_dir in camera_dirs:
                for seg in list_segments(camera_dir):
                    try:
                        self.sizes[seg] = seg.stat().st_size
                    except OSError:
                        pass
        self.total = sum(self.sizes.values())
        self.base = 0
        self.segment: Path | None = None
        self.records = 0

    def record(self, seg: Path, offset: int) -> None:
        if self.progress is None:
            return
        if seg != self.segment:
            if self.segment is not None:
                self.base += self.sizes.get(self.segment, 0)
            self.segment = seg
        self.records += 1
        self.progress(min(self.base + offset, self.total), self.total, self.records)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.total, self.total, self.records)


def audit_archive(
    archive_dir: Path,
    trust: TrustedCameras,
    progress: ProgressCallback | None = None,
    objects: ObjectStore | None = None,
    index: IndexDb | None = None,
) -> AuditReport:
    """``objects``: the bucket the archive's closed segments were uploaded to, if any;
    ``index``: the index shared by several stores (PostgreSQL), None: the archive's own
    ``index.sqlite3``. With a shared index, every camera's uploaded segments are checked
    from the bucket; frames still in segments on another store's disk are not (a note)."""
    seg_root = Path(archive_dir) / "segments"
    if not seg_root.is_dir():
        raise ArchiveError(f"{archive_dir} holds no veilcam archive (no segments/ folder)")
    report = AuditReport(str(archive_dir))
    seen: dict[str, set[int]] = {}
    index_file = Path(archive_dir) / "index.sqlite3"

    def read_index() -> dict[str, set[int]] | None:
        if index is not None:
            return _read_shared_index(index, seg_root, report)
        return _read_index(index_file, report)

    indexed_before = read_index()  # a running store appends while we read
    remotes = remote_segments(
        seg_root,
        index if index is not None else index_file,
        objects,
        lambda kind, detail: report.problems.append(Finding("", "", 0, None, kind, detail)),
    )
    camera_dirs = sorted(
        {p for p in seg_root.iterdir() if p.is_dir()} | {seg_root / cam for cam in remotes}
    )
    tally = _Tally(camera_dirs, progress)
    tally.total += sum(r.size or 0 for rs in remotes.values() for r in rs)

    def moved(camera: str, name: str) -> RemoteSegment | None:
        """Where a local segment went while we read (a running store uploaded it and
        removed its copy): the bucket, looked up again, else None."""
        now = remote_segments(
            seg_root, index if index is not None else index_file, objects, lambda *_: None
        )
        return next((r for r in now.get(camera, []) if r.name == name), None)

    for camera_dir in camera_dirs:
        report.cameras.append(
            _audit_camera(
                camera_dir,
                trust,
                report,
                seen,
                tally,
                remotes.get(camera_dir.name),
                objects,
                moved,
            )
        )
    tally.finish()
    _cross_check_index(indexed_before, read_index(), seen, report)
    return report


def _segment_problem(audit: _CameraAudit, segment: str, kind: str, detail: str) -> None:
    audit.problem(segment, 0, None, kind, detail)


def _audit_segment(seg: Path, name: str, audit: _CameraAudit, tally: _Tally) -> None:
    """Every record of one segment file (``name``: the segment's name in findings)."""
    try:
        items = list(scan_segment(seg))
    except ArchiveError as exc:
        audit.problem(name, 0, None, "corrupt_record", str(exc))
        return
    log.debug("checking %s/%s: %d record(s)", audit.cam.camera, name, len(items))
    for item in items:
        tally.record(seg, item.offset)
        if isinstance(item, ScanProblem):
            kind = "truncated_segment" if item.kind == "truncated" else "corrupt_record"
            audit.problem(name, item.offset, None, kind, item.detail)
            continue
        try:
            msg = decode_message_body(item.kind, item.parts)
        except FormatError as exc:
            audit.problem(name, item.offset, None, "malformed", str(exc))
            continue
        if isinstance(msg, FrameMessage):
            audit.frame(name, item.offset, msg)
        elif isinstance(msg, GapNotice):
            audit.gap_notice(name, item.offset, msg)
        else:
            audit.envelope(name, item.offset, msg)


def _ranges(seqs: list[int]) -> str:
    """``#1..#3, #7`` for 1, 2, 3, 7 (the first ten runs)."""
    runs: list[list[int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    out = [f"#{lo}" if lo == hi else f"#{lo}..#{hi}" for lo, hi in runs]
    return ", ".join(out[:10]) + (" ..." if len(out) > 10 else "")


def _read_index(index: Path, report: AuditReport) -> dict[str, set[int]] | None:
    """The frames the store's index lists, by camera (None without a readable index)."""
    if not index.exists():
        return None
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
        rows = db.execute("SELECT camera, seq FROM frames").fetchall()
        db.close()
    except sqlite3.Error as exc:
        if not any(n.kind == "index_unreadable" for n in report.notes):
            report.notes.append(Finding("", index.name, 0, None, "index_unreadable", str(exc)))
        return None
    indexed: dict[str, set[int]] = {}
    for camera, seq in rows:
        indexed.setdefault(camera, set()).add(seq)
    return indexed


def _read_shared_index(
    index: IndexDb, seg_root: Path, report: AuditReport
) -> dict[str, set[int]] | None:
    """The frames a shared index lists, by camera, but for those in segments still on the
    disk of another store (a camera with no folder here whose segment is not uploaded):
    this home cannot check those, and says so once per camera (``frames_elsewhere``)."""
    try:
        rows = index.execute(
            "SELECT f.camera, f.seq, s.location FROM frames f "
            "JOIN segments s ON s.id = f.segment_id"
        ).fetchall()
    except ArchiveError as exc:
        if not any(n.kind == "index_unreadable" for n in report.notes):
            report.notes.append(Finding("", index.where, 0, None, "index_unreadable", str(exc)))
        return None
    here = {p.name for p in seg_root.iterdir() if p.is_dir()}
    indexed: dict[str, set[int]] = {}
    elsewhere: dict[str, int] = {}
    for camera, seq, location in rows:
        if location == "local" and camera not in here:
            elsewhere[camera] = elsewhere.get(camera, 0) + 1
            continue
        indexed.setdefault(camera, set()).add(seq)
    noted = {n.camera for n in report.notes if n.kind == "frames_elsewhere"}
    for camera, count in sorted(elsewhere.items()):
        if camera not in noted:
            report.notes.append(
                Finding(
                    camera,
                    "",
                    0,
                    None,
                    "frames_elsewhere",
                    f"{count} frame(s) are in segments on the disk of the store that owns "
                    f"{camera} (not uploaded yet): verify them on that store's home",
                )
            )
    return indexed


def _cross_check_index(
    before: dict[str, set[int]] | None,
    after: dict[str, set[int]] | None,
    seen: dict[str, set[int]],
    report: AuditReport,
) -> None:
    """Frames the store indexed but the segments no longer hold: removed at the start or end
    of a camera's records, whole segments, or a whole camera (which the chain alone cannot
    show). An index deleted along with them hides this; docs/SECURITY.md says so.

    The index is read before and after the segments: a frame counts as missing only if both
    list it, so a running store is not blamed for frames it appended (listed only after) or
    segments its retention deleted (listed only before) while the segments were read."""
    if before is None or after is None:
        return
    for camera, seqs in sorted(before.items()):
        missing = sorted(
            s for s in seqs & after.get(camera, set()) if s not in seen.get(camera, set())
        )
        if missing:
            report.problems.append(
                Finding(
                    camera,
                    "",
                    0,
                    min(missing),
                    "missing_frames",
                    f"{len(missing)} frame(s) the store indexed are not "
                    f"in the segments: {_ranges(missing)}",
                )
            )


def _audit_camera(
    camera_dir: Path,
    trust: TrustedCameras,
    report: AuditReport,
    seen: dict[str, set[int]],
    tally: _Tally,
    remotes: list[RemoteSegment] | None = None,
    objects: ObjectStore | None = None,
    moved: Callable[[str, str], RemoteSegment | None] | None = None,
) -> CameraReport:
    """A camera's segments in name order: local files, and objects fetched from the bucket.
    A local file gone before it was opened was uploaded meanwhile (read from the bucket,
    ``moved``) or deleted by retention (a note: the index cross-check judges its frames)."""
    audit = _CameraAudit(camera_dir.name, trust, report, seen.setdefault(camera_dir.name, set()))
    local: list[Path] = list_segments(camera_dir) if camera_dir.is_dir() else []
    entries: list[Path | RemoteSegment] = [*local, *(remotes or [])]
    for entry in sorted(entries, key=lambda e: e.name):
        if isinstance(entry, Path):
            try:
                _audit_segment(entry, entry.name, audit, tally)
                continue
            except FileNotFoundError:
                remote = moved(camera_dir.name, entry.name) if moved is not None else None
                if remote is None:
                    report.notes.append(
                        Finding(
                            camera_dir.name,
                            entry.name,
                            0,
                            None,
                            "segment_removed",
                            f"{entry.name} was removed while verify read the archive "
                            "(retention) and is not in the object store",
                        )
                    )
                    continue
                entry = remote
        found = ObjectReport(entry.camera, entry.name, entry.key, entry.size)
        found.indexed = entry.indexed
        report.objects.append(found)
        sink = partial(_segment_problem, audit, entry.name)
        with fetched(entry, objects, found, sink) as path:
            if path is not None:
                _audit_segment(path, entry.name, audit, tally)
    audit.judge_gaps()
    audit.offline.finish()
    audit.check_envelopes()
    return audit.cam


class _CameraAudit:
    """What one camera's records, read in order, say: counts, findings, its hash chain
    (followed with the store's own ``ChainTracker``), the gaps in it and the gaps it declared."""

    def __init__(
        self, camera: str, trust: TrustedCameras, report: AuditReport, seen_seqs: set[int]
    ) -> None:
        self.cam = CameraReport(camera)
        self.trust, self.report, self.seen_seqs = trust, report, seen_seqs
        self.chain = ChainTracker()
        self.epochs_used: dict[bytes, tuple[str, int, int]] = {}  # epoch -> first frame's place
        self.envelopes: set[bytes] = set()
        self.declared: list[tuple[int, int, str]] = []  # (first, last, reason) of gap notices
        self.gaps: list[tuple[str, int, int, int, int]] = []  # (segment, offset, seq, first, last)
        self.offline = _OfflineCheck(self)

    def problem(self, seg: str, offset: int, seq: int | None, kind: str, detail: str) -> None:
        self.report.problems.append(Finding(self.cam.camera, seg, offset, seq, kind, detail))

    def gap_notice(self, seg: str, offset: int, notice: GapNotice) -> None:
        if notice.camera_id != self.cam.camera:  # it would hide frames of this camera
            self.problem(
                seg,
                offset,
                notice.first_seq,
                "wrong_camera",
                f"gap notice of camera {notice.camera_id!r} "
                f"(#{notice.first_seq}..#{notice.last_seq}) in the folder of "
                f"{self.cam.camera!r}: not counted",
            )
            return
        try:
            self.trust.verify_gap(notice, at_creation_time=True)
        except VerificationError as exc:
            self.problem(seg, offset, notice.first_seq, exc.reason, str(exc))
            return
        if notice.offline:
            self.offline.notice(seg, offset, notice)
            return
        self.declared.append((notice.first_seq, notice.last_seq, notice.reason.name.lower()))

    def envelope(self, seg: str, offset: int, env: KeyEnvelope) -> None:
        if env.camera_id != self.cam.camera:
            self.problem(
                seg,
                offset,
                None,
                "wrong_camera",
                f"key envelope of camera {env.camera_id!r} (epoch "
                f"{env.body.epoch_id.hex()[:8]}) in the folder of {self.cam.camera!r}: "
                "not counted",
            )
            return
        try:
            self.trust.verify_envelope(env, at_creation_time=True)
        except VerificationError as exc:
            self.problem(seg, offset, None, exc.reason, str(exc))
            return
        self.cam.envelopes += 1
        self.envelopes.add(env.body.epoch_id)

    def frame(self, seg: str, offset: int, msg: FrameMessage) -> None:
        h = msg.header
        if msg.camera_id != self.cam.camera:
            self.problem(
                seg,
                offset,
                h.seq,
                "wrong_camera",
                f"frame of camera {msg.camera_id!r} in the folder of {self.cam.camera!r}",
            )
            return
        last = self.chain.last(msg.camera_id)
        last_seq = -1 if last is None else last.seq  # -1: no frame before this one
        try:
            self.trust.verify_frame(msg, at_capture_time=True)
        except VerificationError as exc:
            self.problem(seg, offset, h.seq, exc.reason, str(exc))
            self.seen_seqs.add(h.seq)  # present, if bad: reported once, as what it is
            if last is not None and h.seq == last_seq + 1:
                # keep following the chain past it, so one bad frame is one finding
                self.chain.accept(msg)
            return
        link = self.chain.classify(msg)
        if link is ChainLink.REPLAY:
            self.problem(
                seg,
                offset,
                h.seq,
                "reordered",
                f"frame #{h.seq} follows #{last_seq} (duplicate, swapped or inserted)",
            )
            return
        if link is ChainLink.CHAIN_START:
            self.cam.chain_starts += 1
            self.report.notes.append(
                Finding(
                    self.cam.camera,
                    seg,
                    offset,
                    h.seq,
                    ChainLink.CHAIN_START,
                    "camera declared a new chain",
                )
            )
        elif link is ChainLink.CHAIN_BREAK:  # reported, and followed on: one finding each
            self.problem(
                seg,
                offset,
                h.seq,
                ChainLink.CHAIN_BREAK,
                f"frame #{h.seq} does not link to #{last_seq}",
            )
        elif link is ChainLink.GAP:
            self.gaps.append((seg, offset, h.seq, last_seq + 1, h.seq - 1))
        self.chain.accept(msg)
        self._count(seg, offset, msg)

    def _count(self, seg: str, offset: int, msg: FrameMessage) -> None:
        h, cam = msg.header, self.cam
        self.seen_seqs.add(h.seq)
        cam.frames += 1
        cam.first_seq = h.seq if cam.first_seq is None else cam.first_seq
        cam.last_seq = h.seq
        cam.first_time_us = cam.first_time_us or h.capture_time_us
        cam.last_time_us = h.capture_time_us
        self.epochs_used.setdefault(h.epoch_id, (seg, offset, h.seq))
        self.offline.frame(h.seq, h.capture_time_us)

    def judge_gaps(self) -> None:
        """Each gap in the chain is a problem unless signed gap notices declare all of it."""
        for seg, offset, seq, first, last in self.gaps:
            missing = set(range(first, last + 1))
            for lo, hi, _ in self.declared:
                missing -= set(range(lo, hi + 1))
            # A declared gap is tied to its place in the chain: the frame after it (#seq) must
            # start where the camera's notices end. The camera drops its oldest unacknowledged
            # frames, so some of a notice's first frames may have reached the store before they
            # were dropped, but never frames after the gap: a notice that reaches past the frame
            # that follows the gap is not about this gap.
            overhang = [(lo, hi) for lo, hi, _ in self.declared if lo <= last < hi]
            if not missing and overhang:
                lo, hi = overhang[0]
                self.problem(
                    seg,
                    offset,
                    seq,
                    ChainLink.GAP,
                    f"frames #{first}..#{last} are missing; the gap "
                    f"notice #{lo}..#{hi} covering them reaches past frame #{seq}, which is "
                    "archived: it does not declare this gap",
                )
            elif missing:
                declared = last - first + 1 - len(missing)
                self.problem(
                    seg,
                    offset,
                    seq,
                    ChainLink.GAP,
                    f"frames #{first}..#{last} are missing"
                    + (f" ({declared} of them declared dropped by the camera)" if declared else ""),
                )
            else:
                self.report.notes.append(
                    Finding(
                        self.cam.camera,
                        seg,
                        offset,
                        seq,
                        "declared_gap",
                        f"frames #{first}..#{last} were dropped by the camera "
                        "itself (signed gap notice)",
                    )
                )

    def check_envelopes(self) -> None:
        """Every epoch a frame was encrypted in needs its key envelope in the archive."""
        for epoch, (seg, offset, seq) in self.epochs_used.items():
            if epoch not in self.envelopes:
                self.problem(
                    seg,
                    offset,
                    seq,
                    "missing_envelope",
                    f"no key envelope for epoch {epoch.hex()[:8]}",
                )


class _OfflineCheck:
    """A camera's offline notices against the frames they name, read in archive order: a
    notice follows the frame before the outage (kept among the last OFFLINE_WINDOW frames) and
    precedes the frame after it (checked when it comes)."""

    OFFLINE_WINDOW = 1024

    def __init__(self, audit: _CameraAudit) -> None:
        self.audit = audit
        self.recent: OrderedDict[int, int] = OrderedDict()  # seq -> capture µs
        self.seen: set[bytes] = set()  # notice bodies (a resent notice counts once)
        self.waiting: dict[int, list[tuple[str, int, GapNotice]]] = {}  # seq after -> notices

    def frame(self, seq: int, capture_us: int) -> None:
        self.recent[seq] = capture_us
        if len(self.recent) > self.OFFLINE_WINDOW:
            self.recent.popitem(last=False)
        for seg, offset, notice in self.waiting.pop(seq, []):
            self._judge(seg, offset, notice, seq, capture_us, notice.to_us, "end")

    def notice(self, seg: str, offset: int, notice: GapNotice) -> None:
        if notice.body_bytes in self.seen:
            return
        self.seen.add(notice.body_bytes)
        cam = self.audit.cam
        start = self.recent.get(notice.first_seq)
        if start is not None:
            if not self._judge(
                seg, offset, notice, notice.first_seq, start, notice.from_us, "start"
            ):
                return
        if notice.last_seq != notice.first_seq:
            end = self.recent.get(notice.last_seq)
            if end is None:
                self.waiting.setdefault(notice.last_seq, []).append((seg, offset, notice))
            elif not self._judge(seg, offset, notice, notice.last_seq, end, notice.to_us, "end"):
                return
        cam.offline_spans += 1
        cam.offline_s += (notice.to_us - notice.from_us) / 1e6
        self.audit.report.notes.append(
            Finding(
                cam.camera, seg, offset, notice.first_seq, "declared_offline", notice.describe()
            )
        )

    def _judge(
        self,
        seg: str,
        offset: int,
        notice: GapNotice,
        seq: int,
        captured: int,
        said: int,
        what: str,
    ) -> bool:
        if captured == said:
            return True
        self.audit.problem(
            seg,
            offset,
            notice.first_seq,
            "offline_notice_mismatch",
            f"offline notice after frame #{notice.first_seq}: its {what} ({said} us) is not the "
            f"capture time of frame #{seq} ({captured} us)",
        )
        return False

    def finish(self) -> None:
        """Nothing to do for notices whose frame after never came (cut off by the end of the
        archive, or dropped by the camera's spool): their start was checked."""
        self.waiting.clear()


def format_report(report: AuditReport, verdict: bool = True) -> str:
    """The report as text; ``verdict``: end with the INTACT / NOT INTACT line (the CLI leaves
    it out when it prints one verdict covering more, e.g. an evidence bundle's files)."""
    lines = [f"archive {report.archive}"]
    for cam in report.cameras:
        span = ""
        if cam.first_time_us is not None and cam.last_time_us is not None:
            span = f", {(cam.last_time_us - cam.first_time_us) / 1e6:.1f} s of video"
        lines.append(
            f"  camera {cam.camera}: {cam.frames} frame(s) #{cam.first_seq}..#"
            f"{cam.last_seq}, {cam.envelopes} key envelope(s){span}"
            + (f", {cam.chain_starts} declared restart(s)" if cam.chain_starts else "")
            + (
                f", offline {cam.offline_s:.1f} s in {cam.offline_spans} declared outage(s)"
                if cam.offline_spans
                else ""
            )
        )
    for n in report.notes:
        if n.kind == "declared_offline":
            lines.append(f"  camera {n.camera}: {n.detail}")
    lines += [f"  {o.describe()}" for o in report.objects]
    for p in report.problems:
        seq = f" #{p.seq}" if p.seq is not None else ""
        lines.append(
            f"  PROBLEM {p.kind}: camera {p.camera} segment {p.segment} offset "
            f"{p.offset}{seq}: {p.detail}"
        )
    if verdict:
        lines.append(
            "INTACT: every record verified, chains complete"
            if report.intact
            else f"NOT INTACT: {len(report.problems)} problem(s)"
        )
    return "\n".join(lines)
