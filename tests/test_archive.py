"""Archive: durable appends, crash recovery, and `verify` finding every kind of tampering."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from veilcam.common.format import KIND_ENVELOPE, KIND_FRAME
from veilcam.common.segments import (
    RECORD_HEAD,
    encode_record,
    list_segments,
    scan_segment,
    segment_header,
)
from veilcam.store_node.archive import Archive
from veilcam.store_node.audit import audit_archive

from tests.factory import Camera


def _fill(root: Path, cam: Camera, n: int = 6) -> Archive:
    archive = Archive(root)
    archive.append_envelope(cam.envelope())
    for _ in range(n):
        archive.append_frame(cam.frame())
    archive.commit()
    return archive


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out = []
    for rec in scan_segment(path):
        out.append(data[rec.offset : rec.offset + rec.length])
    return out


def _rewrite(path: Path, records: list[bytes]) -> None:
    path.write_bytes(segment_header("cam1") + b"".join(records))


def _segment(root: Path) -> Path:
    return list_segments(root / "segments" / "cam1")[0]


def _kinds(report) -> list[tuple[str, int | None]]:
    return [(p.kind, p.seq) for p in report.problems]


def test_intact_archive_verifies(tmp_path: Path) -> None:
    cam = Camera()
    _fill(tmp_path, cam).close()
    report = audit_archive(tmp_path, cam.trust)
    assert report.intact, report.problems
    assert report.cameras[0].frames == 6 and report.cameras[0].envelopes == 1


def test_deleted_frame_reported_as_gap(tmp_path: Path) -> None:
    cam = Camera()
    _fill(tmp_path, cam).close()
    seg = _segment(tmp_path)
    recs = _records(seg)
    del recs[3]  # envelope is record 0: this is frame #2
    _rewrite(seg, recs)
    assert _kinds(audit_archive(tmp_path, cam.trust)) == [("gap", 3), ("missing_frames", 2)]


def test_swapped_frames_reported(tmp_path: Path) -> None:
    cam = Camera()
    _fill(tmp_path, cam).close()
    seg = _segment(tmp_path)
    recs = _records(seg)
    recs[2], recs[3] = recs[3], recs[2]
    _rewrite(seg, recs)
    kinds = _kinds(audit_archive(tmp_path, cam.trust))
    assert ("gap", 2) in kinds and ("reordered", 1) in kinds


def test_frame_inserted_from_another_run_reported(tmp_path: Path) -> None:
    cam = Camera()
    _fill(tmp_path, cam).close()
    other_run = Camera()
    other_run.key, other_run.trust = cam.key, cam.trust  # same camera, another chain
    other_run.seq, other_run.prev = 3, bytes(32 * [7])
    intruder = encode_record(KIND_FRAME, other_run.frame().body_parts())
    seg = _segment(tmp_path)
    recs = _records(seg)
    recs.insert(4, intruder)  # where frame #3 was
    del recs[5]
    _rewrite(seg, recs)
    kinds = _kinds(audit_archive(tmp_path, cam.trust))
    assert ("chain_break", 3) in kinds


def test_flipped_byte_reported_as_corrupt_record(tmp_path: Path) -> None:
    cam = Camera()
    _fill(tmp_path, cam).close()
    seg = _segment(tmp_path)
    recs = _records(seg)
    data = bytearray(seg.read_bytes())
    offset = len(segment_header("cam1")) + sum(map(len, recs[:2])) + 200
    data[offset] ^= 0x40
    seg.write_bytes(bytes(data))
    report = audit_archive(tmp_path, cam.trust)
    assert [p.kind for p in report.problems][:1] == ["corrupt_record"]
    assert report.problems[0].offset == len(segment_header("cam1")) + sum(map(len, recs[:2]))


def test_forger_who_fixes_the_crc_is_caught_by_the_signature(tmp_path: Path) -> None:
    cam = Camera()
    _fill(tmp_path, cam).close()
    seg = _segment(tmp_path)
    recs = _records(seg)
    rec = bytearray(recs[2])
    rec[-5] ^= 0x01  # last bytes of the last zone ciphertext
    body = bytes(rec[RECORD_HEAD.size :])
    recs[2] = RECORD_HEAD.pack(len(body), zlib.crc32(body)) + body
    _rewrite(seg, recs)
    assert _kinds(audit_archive(tmp_path, cam.trust)) == [("zone_hash_mismatch", 1)]


def test_truncated_segment_reported(tmp_path: Path) -> None:
    cam = Camera()
    _fill(tmp_path, cam).close()
    seg = _segment(tmp_path)
    seg.write_bytes(seg.read_bytes()[:-100])
    assert _kinds(audit_archive(tmp_path, cam.trust)) == [
        ("truncated_segment", None),
        ("missing_frames", 5),
    ]


def test_missing_key_envelope_reported(tmp_path: Path) -> None:
    cam = Camera()
    _fill(tmp_path, cam).close()
    seg = _segment(tmp_path)
    _rewrite(seg, _records(seg)[1:])
    assert [p.kind for p in audit_archive(tmp_path, cam.trust).problems] == ["missing_envelope"]


def test_torn_tail_truncated_and_unindexed_records_recovered(tmp_path: Path) -> None:
    """A crash mid-write: complete records written before it are kept, the torn one dropped."""
    cam = Camera()
    archive = _fill(tmp_path, cam, n=3)
    archive.append_frame(cam.frame())  # written, index not committed: simulates a crash
    archive._open["cam1"].fh.flush()
    seg = archive._open["cam1"].path
    with open(seg, "ab") as fh:
        fh.write(encode_record(KIND_FRAME, cam.frame().body_parts())[:50])  # torn write
    archive.db.rollback() if archive.db.in_transaction else None
    archive.db.close()
    reopened = Archive(tmp_path)
    assert reopened.last_frame("cam1")[0] == 3
    assert audit_archive(tmp_path, cam.trust).intact
    assert reopened.envelope_parts("cam1", cam.epoch.epoch_id) is not None
    reopened.close()


def test_index_rebuilt_from_segments(tmp_path: Path) -> None:
    cam = Camera()
    _fill(tmp_path, cam).close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"index.sqlite3{suffix}").unlink(missing_ok=True)
    archive = Archive(tmp_path)
    assert archive.last_frame("cam1")[0] == 5
    assert archive.frame_parts("cam1", 2) is not None
    archive.close()


def test_segments_roll_over_at_size_limit(tmp_path: Path) -> None:
    cam = Camera()
    archive = Archive(tmp_path, segment_max_bytes=2**16)
    archive.append_envelope(cam.envelope())
    for _ in range(30):
        archive.append_frame(cam.frame())
    archive.commit()
    archive.close()
    assert len(list_segments(tmp_path / "segments" / "cam1")) > 1
    assert audit_archive(tmp_path, cam.trust).intact


@pytest.mark.parametrize("kind", [KIND_FRAME, KIND_ENVELOPE])
def test_record_codec_round_trip(kind: bytes) -> None:
    from veilcam.common.segments import decode_body

    parts = [b"a", b"", b"xyz" * 100]
    rec = encode_record(kind, parts)
    assert decode_body(rec[RECORD_HEAD.size :]) == (kind, parts)


def test_frames_cut_at_the_ends_are_found_through_the_index(tmp_path: Path) -> None:
    """Removing whole records at the start or end leaves a valid chain: the index tells."""
    cam = Camera()
    _fill(tmp_path, cam).close()
    seg = _segment(tmp_path)
    recs = _records(seg)
    _rewrite(seg, [recs[0], *recs[2:-2]])  # drop frame #0 and frames #4, #5
    kinds = _kinds(audit_archive(tmp_path, cam.trust))
    assert kinds == [("missing_frames", 0)]
    problem = audit_archive(tmp_path, cam.trust).problems[0]
    assert "#0" in problem.detail and "#4..#5" in problem.detail


def _many_segments(root: Path, cam: Camera, frames: int = 60) -> Archive:
    archive = Archive(root, segment_max_bytes=2**16)
    for i in range(frames):
        if i % 25 == 0:  # a new epoch now and then, whose frames span segments
            from veilcam.camera_node.protect import Epoch

            cam.epoch = Epoch.new()
            archive.append_envelope(cam.envelope())
        archive.append_frame(cam.frame())
    archive.commit()
    return archive


def test_retention_by_size_deletes_oldest_closed_segments_and_keeps_verify_intact(
    tmp_path: Path,
) -> None:
    cam = Camera()
    archive = _many_segments(tmp_path, cam)
    before = archive.segment_usage("cam1")
    assert len(before) >= 5
    limit = 3 * 2**16
    deleted = archive.apply_retention(0, limit, 0, now_us=0)
    after = archive.segment_usage("cam1")
    assert deleted == [p for _, p, _, _ in before[: len(deleted)]] and deleted
    assert sum(u[2] for u in after) <= limit and after[-1][1] == before[-1][1]
    assert archive.last_frame("cam1")[0] == 59
    archive.close()
    report = audit_archive(tmp_path, cam.trust)
    assert report.intact, report.problems  # envelopes travel with their frames; no orphans
    assert report.cameras[0].last_seq == 59 and report.cameras[0].first_seq > 0


def test_retention_by_age_never_deletes_the_open_segment(tmp_path: Path) -> None:
    cam = Camera()
    archive = _many_segments(tmp_path, cam)
    far_future = 10**18
    archive.apply_retention(60, 0, 0, now_us=far_future)
    remaining = archive.segment_usage("cam1")
    assert len(remaining) == 1  # only the open one
    archive.append_frame(cam.frame())  # and it still takes frames
    archive.close()
    assert audit_archive(tmp_path, cam.trust).intact


def _gap_archive(tmp_path: Path, declare: tuple[int, int] | None) -> Camera:
    from veilcam.camera_node.protect import sign_gap_notice

    cam = Camera()
    archive = Archive(tmp_path)
    archive.append_envelope(cam.envelope())
    for _ in range(10):
        msg = cam.frame()
        if not 3 <= msg.header.seq <= 5:  # frames the camera's spool dropped
            archive.append_frame(msg)
    if declare:
        archive.append_gap(sign_gap_notice(cam.key, "cam1", *declare))
    archive.commit()
    archive.close()
    return cam


def test_gap_declared_by_the_camera_is_a_note_not_a_problem(tmp_path: Path) -> None:
    cam = _gap_archive(tmp_path, (3, 5))
    report = audit_archive(tmp_path, cam.trust)
    assert report.intact, report.problems
    assert [(n.kind, n.seq) for n in report.notes] == [("declared_gap", 6)]


def test_undeclared_or_partly_declared_gap_is_a_problem(tmp_path: Path) -> None:
    cam = _gap_archive(tmp_path / "none", None)
    assert _kinds(audit_archive(tmp_path / "none", cam.trust)) == [("gap", 6)]
    cam = _gap_archive(tmp_path / "part", (3, 4))
    report = audit_archive(tmp_path / "part", cam.trust)
    assert _kinds(report) == [("gap", 6)] and "2 of them declared" in report.problems[0].detail


def test_frames_a_running_store_adds_during_verify_are_not_missing(
    tmp_path: Path, monkeypatch
) -> None:
    """The store appends and indexes while verify reads the segments: the index read after
    the scan lists frames the scan could not see, which are not missing."""
    import veilcam.store_node.audit as audit

    cam = Camera()
    archive = _fill(tmp_path, cam)
    scan = audit._audit_camera

    def scan_while_the_store_writes(*args, **kwargs):
        result = scan(*args, **kwargs)
        for _ in range(3):
            archive.append_frame(cam.frame())
        archive.commit()
        return result

    monkeypatch.setattr(audit, "_audit_camera", scan_while_the_store_writes)
    report = audit_archive(tmp_path, cam.trust)
    archive.close()
    assert report.intact, report.problems


def test_a_segment_removed_while_verify_reads_is_a_note_not_a_crash(tmp_path: Path) -> None:
    """A running store's retention (or its uploader, with no bucket to read instead) can
    remove a segment between verify listing it and opening it: verify says so and goes on."""
    cam = Camera()
    archive = Archive(tmp_path, segment_max_bytes=4096)
    archive.append_envelope(cam.envelope())
    for _ in range(12):
        archive.append_frame(cam.frame())
    archive.commit()
    archive.close()
    segments = list_segments(tmp_path / "segments" / "cam1")
    assert len(segments) >= 3
    last = segments[-1]

    def remove_last_once(done: int, total: int, records: int) -> None:
        last.unlink(missing_ok=True)

    report = audit_archive(tmp_path, cam.trust, remove_last_once)
    notes = [n for n in report.notes if n.kind == "segment_removed"]
    assert [n.segment for n in notes] == [last.name], report.notes
    assert report.cameras[0].frames > 0
