"""Offline notices (gap notice version 2, reason SOURCE_OFFLINE): the camera's signed word that
its source delivered nothing between two of its frames. Encoding and parsing, the store's checks
(signature, the span against the frames it names), and ``veilcam verify`` (reported with its
span; forged, altered or misplaced notices are problems). In-process: no sockets."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import pytest
from veilcam.camera_node.protect import (
    EncodeSettings,
    protect_frame,
    sign_gap_notice,
    sign_offline_notice,
)
from veilcam.camera_node.redact import make_redactor
from veilcam.camera_node.zones import Zone
from veilcam.common.errors import FormatError
from veilcam.common.format import (
    GAP_MAGIC,
    KIND_GAP,
    OFFLINE_ACK_BIT,
    Ack,
    AckStatus,
    FrameMessage,
    GapNotice,
    GapReason,
    ZoneClass,
    decode_message,
)
from veilcam.common.segments import encode_record
from veilcam.common.signing import RejectReason
from veilcam.store_node.archive import Archive
from veilcam.store_node.audit import audit_archive, format_report
from veilcam.store_node.ingest import Ingest

from tests.factory import Camera, textured

T0 = 1_700_000_000_000_000  # 2023-11-14 22:13:20 UTC
DOWN_US = 38_000_000  # the source was down 38 s between frames #4 and #5


def _frame(cam: Camera, capture_us: int) -> FrameMessage:
    """The camera's next frame, captured at ``capture_us``."""
    msg = protect_frame(
        textured(),
        [Zone(40, 30, 64, 80, ZoneClass.FACE)],
        camera_id=cam.camera_id,
        seq=cam.seq,
        capture_time_us=capture_us,
        epoch=cam.epoch,
        prev_digest=cam.prev,
        redactor=make_redactor("solid"),
        settings=EncodeSettings(),
        signing_key=cam.key,
    )
    cam.seq, cam.prev = cam.seq + 1, msg.digest
    return msg


def _outage(cam: Camera) -> tuple[list[FrameMessage], list[FrameMessage], GapNotice]:
    """Frames #0..#4, an outage of 38 s, frames #5..#9, and the camera's notice of it."""
    before = [_frame(cam, T0 + i * 33_333) for i in range(5)]
    resumed = T0 + 4 * 33_333 + DOWN_US
    after = [_frame(cam, resumed + i * 33_333) for i in range(5)]
    notice = sign_offline_notice(cam.key, "cam1", 4, before[-1].header.capture_time_us, resumed, 5)
    return before, after, notice


def test_offline_notice_round_trips_as_version_2_with_its_own_ack_key() -> None:
    cam = Camera()
    _, _, notice = _outage(cam)
    assert notice.body_bytes[:5] == GAP_MAGIC + b"\x02"
    parsed = decode_message(notice.to_parts())
    assert isinstance(parsed, GapNotice) and parsed == notice
    assert parsed.reason == GapReason.SOURCE_OFFLINE and parsed.offline
    assert (parsed.from_us, parsed.to_us) == (T0 + 4 * 33_333, T0 + 4 * 33_333 + DOWN_US)
    # a spool-full notice naming the same frame is another message: the keys differ
    spool = sign_gap_notice(cam.key, "cam1", 4, 4)
    assert spool.body_bytes[4] == 1 and spool.ack_key == (KIND_GAP, 4)
    assert notice.ack_key == (KIND_GAP, OFFLINE_ACK_BIT + 4) != spool.ack_key
    ack = Ack.from_parts(Ack.for_message(notice, AckStatus.STORED).to_parts())
    assert ack.key == notice.ack_key and ack.describe() == "offline notice cam1#4"
    assert parsed.describe().startswith("camera offline 22:13:20-22:13:58 UTC (38.0 s between")
    at_stop = sign_offline_notice(cam.key, "cam1", 9, T0, T0 + 5_000_000, None)
    assert decode_message(at_stop.to_parts()).last_seq == 9
    assert "until the camera stopped" in at_stop.describe()


def _body(version: int, first: int, last: int, reason: int, span: tuple[int, int] | None) -> bytes:
    body = GAP_MAGIC + bytes([version, 4]) + b"cam1" + struct.pack(">QQBQ", first, last, reason, T0)
    return body + (struct.pack(">QQ", *span) if span else b"")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (_body(3, 4, 5, 2, (T0, T0 + 1)), "version 3 is not supported"),
        (_body(1, 4, 5, 2, None), "version 1 cannot carry reason source_offline"),
        (_body(2, 4, 5, 1, (T0, T0 + 1)), "version 2 cannot carry reason spool_full"),
        (_body(2, 4, 5, 2, None), "truncated at field 'from_us'"),
        (_body(2, 4, 5, 2, (T0, T0 + 1)) + b"x", "1 trailing bytes"),
        (_body(2, 4, 5, 2, (T0 + 1, T0)), "ends .* before it starts"),
        (_body(2, 4, 7, 2, (T0, T0 + 1)), "must be the next one"),
        (_body(2, 4, 5, 2, (T0, 2**63)), "to time .* not below 2\\^63"),
    ],
)
def test_malformed_offline_notices_are_refused_naming_the_field(body: bytes, why: str) -> None:
    with pytest.raises(FormatError, match=why):
        GapNotice.from_body_parts([body, bytes(64)])


def _ingest(tmp_path: Path, cam: Camera) -> tuple[Ingest, Archive]:
    archive = Archive(tmp_path / "archive", 1 << 20)
    ingest = Ingest(archive, cam.trust, Counter())
    assert ingest.take(cam.envelope().to_parts(), "camera:cam1").reply_after_commit is not None
    return ingest, archive


def test_store_archives_a_genuine_notice_and_rejects_forged_altered_or_misplaced_ones(
    tmp_path: Path,
) -> None:
    cam = Camera()
    ingest, archive = _ingest(tmp_path, cam)
    before, after, notice = _outage(cam)
    for msg in before:
        assert ingest.take(msg.to_parts(), "camera:cam1").reply_after_commit is not None
    # forged: another key in cam1's name
    forged = sign_offline_notice(Camera().key, "cam1", 4, notice.from_us, notice.to_us, 5)
    out = ingest.take(forged.to_parts(), "camera:cam1")
    assert out.reply_now is not None and out.reply_now.status == AckStatus.REJECTED
    assert ingest.rejects[RejectReason.BAD_SIGNATURE] == 1
    # altered: the end moved 30 s earlier after signing
    parts = notice.to_parts()
    parts[1] = parts[1][:-8] + struct.pack(">Q", notice.to_us - 30_000_000)
    out = ingest.take(parts, "camera:cam1")
    assert out.reply_now is not None and ingest.rejects[RejectReason.BAD_SIGNATURE] == 2
    # signed by the camera but not where its frames are: its start is not frame #4's time
    misplaced = sign_offline_notice(cam.key, "cam1", 4, T0, notice.to_us, 5)
    out = ingest.take(misplaced.to_parts(), "camera:cam1")
    assert out.reply_now is not None and "capture time of frame #4" in out.reply_now.reason
    assert ingest.rejects[RejectReason.CHAIN_BREAK] == 1
    # the genuine one
    out = ingest.take(notice.to_parts(), "camera:cam1")
    assert out.reply_now is None and out.reply_after_commit is not None
    assert out.reply_after_commit.key == notice.ack_key and not out.relay
    for msg in after:
        assert ingest.take(msg.to_parts(), "camera:cam1").reply_after_commit is not None
    # sent again after a store restart, with frame #5 archived: its end is checked too
    late = sign_offline_notice(cam.key, "cam1", 4, notice.from_us, notice.to_us + 1, 5)
    out = ingest.take(late.to_parts(), "camera:cam1")
    assert out.reply_now is not None and "capture time of frame #5" in out.reply_now.reason
    assert ingest.accepted["gap_notice"] == 1
    archive.close()
    report = audit_archive(tmp_path / "archive", cam.trust)
    assert report.intact, report.problems
    offline = [n for n in report.notes if n.kind == "declared_offline"]
    assert len(offline) == 1 and offline[0].seq == 4
    assert report.cameras[0].offline_s == pytest.approx(38.0)
    text = format_report(report)
    assert (
        "camera cam1: camera offline 22:13:20-22:13:58 UTC (38.0 s between frames #4 and #5" in text
    )
    assert "offline 38.0 s in 1 declared outage(s)" in text and text.endswith(
        "INTACT: every record verified, chains complete"
    )


def _archive(tmp_path: Path, cam: Camera, records: list) -> Path:
    archive = Archive(tmp_path, 1 << 20)
    archive.append(cam.envelope())
    for msg in records:
        archive.append(msg)
    archive.commit()
    archive.close()
    return tmp_path


def test_verify_reports_declared_outages_and_the_notice_sent_at_a_stop(tmp_path: Path) -> None:
    cam = Camera()
    before, after, notice = _outage(cam)
    stop = sign_offline_notice(
        cam.key,
        "cam1",
        9,
        after[-1].header.capture_time_us,
        after[-1].header.capture_time_us + 7_000_000,
        None,
    )
    # the notice twice (resent after a store restart): one outage
    root = _archive(tmp_path, cam, [*before, notice, notice, *after, stop])
    report = audit_archive(root, cam.trust)
    assert report.intact, report.problems
    spans = [n.detail for n in report.notes if n.kind == "declared_offline"]
    assert len(spans) == 2 and "until the camera stopped" in spans[1]
    assert report.cameras[0].offline_spans == 2
    assert report.cameras[0].offline_s == pytest.approx(45.0)


def test_verify_finds_altered_foreign_or_mismatched_offline_notices(tmp_path: Path) -> None:
    cam = Camera()
    before, after, notice = _outage(cam)
    # signed by the camera, but its end is not the capture time of frame #5
    wrong_end = sign_offline_notice(
        cam.key, "cam1", 4, notice.from_us, notice.to_us - 20_000_000, 5
    )
    root = _archive(tmp_path / "mismatch", cam, [*before, wrong_end, *after])
    report = audit_archive(root, cam.trust)
    assert [p.kind for p in report.problems] == ["offline_notice_mismatch"]
    assert "capture time of frame #5" in report.problems[0].detail
    # altered in the archive: the end pushed out, the signature no longer verifies
    cam = Camera()
    before, after, notice = _outage(cam)
    altered = GapNotice.from_body_parts(
        [notice.body_bytes[:-8] + struct.pack(">Q", notice.to_us + 60_000_000), notice.signature]
    )
    root = _archive(tmp_path / "altered", cam, [*before, altered, *after])
    report = audit_archive(root, cam.trust)
    assert [p.kind for p in report.problems] == [RejectReason.BAD_SIGNATURE]
    assert not [n for n in report.notes if n.kind == "declared_offline"]
    # another camera's key in cam1's name
    forged = sign_offline_notice(Camera().key, "cam1", 4, notice.from_us, notice.to_us, 5)
    root = tmp_path / "forged"
    _archive(root, cam, [*before, *after])
    seg = next((root / "segments" / "cam1").iterdir())
    with seg.open("ab") as fh:
        fh.write(encode_record(KIND_GAP, forged.body_parts()))
    report = audit_archive(root, cam.trust)
    assert RejectReason.BAD_SIGNATURE in [p.kind for p in report.problems]


def test_verify_with_notices_checks_the_start_against_frame_before(tmp_path: Path) -> None:
    cam = Camera()
    before, after, notice = _outage(cam)
    early = sign_offline_notice(cam.key, "cam1", 4, notice.from_us - 1, notice.to_us, 5)
    report = audit_archive(_archive(tmp_path, cam, [*before, early, *after]), cam.trust)
    assert [p.kind for p in report.problems] == ["offline_notice_mismatch"]
    assert "its start" in report.problems[0].detail
