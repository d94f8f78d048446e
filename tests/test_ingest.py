"""The store's ingest decisions in-process (store_node/ingest.py): no sockets, no processes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from veilcam.common.format import AckStatus
from veilcam.common.signing import RejectReason
from veilcam.store_node.archive import Archive
from veilcam.store_node.ingest import HOLE_WAIT_S, Ingest

from tests.factory import Camera


def _ingest(tmp_path: Path, cam: Camera, clock=lambda: 0.0) -> tuple[Ingest, Archive]:
    archive = Archive(tmp_path / "archive", 1 << 20)
    return Ingest(archive, cam.trust, Counter(), clock=clock), archive


def test_a_good_frame_is_archived_relayed_and_acknowledged_after_commit(tmp_path: Path) -> None:
    cam = Camera()
    ingest, archive = _ingest(tmp_path, cam)
    env = cam.envelope()
    frame = cam.frame()
    out_env = ingest.take(env.to_parts(), "camera:cam1")
    out = ingest.take(frame.to_parts(), "camera:cam1")
    assert out_env.relay and out_env.reply_after_commit.status == AckStatus.STORED
    assert out.reply_now is None and out.relay
    assert out.reply_after_commit.status == AckStatus.STORED
    assert out.reply_after_commit.key == frame.ack_key
    archive.commit()
    assert archive.frame_digest("cam1", 0) == frame.digest
    assert ingest.accepted == Counter({"frame": 1, "envelope": 1})
    # the same frame again: a duplicate, acknowledged, not archived twice nor relayed
    again = ingest.take(frame.to_parts(), "camera:cam1")
    assert again.reply_after_commit.status == AckStatus.DUPLICATE and not again.relay
    assert ingest.accepted["frame"] == 1
    archive.close()


def test_forged_replayed_and_misnamed_messages_are_rejected_at_once(tmp_path: Path) -> None:
    cam = Camera()
    ingest, archive = _ingest(tmp_path, cam)
    first, second = cam.frame(), cam.frame()
    assert ingest.take(first.to_parts(), "camera:cam1").reply_after_commit is not None
    assert ingest.take(second.to_parts(), "camera:cam1").reply_after_commit is not None
    archive.commit()
    forged = cam.frame().to_parts()
    forged[2] = bytes(len(forged[2]))  # the signature zeroed
    out = ingest.take(forged, "camera:cam1")
    assert out.reply_now is not None and out.reply_now.status == AckStatus.REJECTED
    assert not out.relay and out.reply_after_commit is None
    other = Camera("cam1")  # a key the store does not trust, in the name of cam1
    out = ingest.take(other.frame().to_parts(), "camera:cam1")
    assert out.reply_now is not None and out.reply_now.status == AckStatus.REJECTED
    out = ingest.take(cam.frame().to_parts(), "camera:cam2")
    assert out.reply_now.status == AckStatus.REJECTED
    assert ingest.rejects[RejectReason.WRONG_CAMERA_IDENTITY] == 1
    assert ingest.take([b"garbage"], "camera:cam1").reply_now is None  # nothing to name
    assert ingest.rejects[RejectReason.MALFORMED] == 1
    assert ingest.accepted["frame"] == 2
    archive.close()


def test_a_frame_that_could_not_be_written_holds_back_later_ones_until_the_clock_says(
    tmp_path: Path,
) -> None:
    cam = Camera()
    now = [100.0]
    ingest, archive = _ingest(tmp_path, cam, clock=lambda: now[0])
    ingest.take(cam.frame().to_parts(), "camera:cam1")
    lost, later = cam.frame(), cam.frame()
    real_append = archive.append

    def full_disk(msg) -> None:
        from veilcam.common.errors import ArchiveError

        raise ArchiveError("disk full")

    archive.append = full_disk  # type: ignore[method-assign]
    out = ingest.take(lost.to_parts(), "camera:cam1")
    assert out.reply_now is None and out.reply_after_commit is None  # kept by the camera
    assert ingest.rejects[RejectReason.STORAGE_ERROR] == 1
    archive.append = real_append  # type: ignore[method-assign]
    held = ingest.take(later.to_parts(), "camera:cam1")
    assert held.reply_after_commit is None and not held.relay  # waits for #1
    now[0] += HOLE_WAIT_S + 1
    ingest.take(later.to_parts(), "camera:cam1")  # the camera never resent #1: go on
    assert ingest.accepted["frame"] == 2
    archive.close()


def test_h264_access_units_tampered_dropped_or_reordered_are_caught(tmp_path: Path) -> None:
    """Version 2: the store refuses a tampered public or zone-stream access unit and a
    reordered frame, archives a frame after a dropped one as a gap, and `veilcam verify`'s
    audit reports the hole."""
    from veilcam.store_node.audit import audit_archive

    from tests.factory import H264Camera

    cam = H264Camera(gop=4)
    archive = Archive(tmp_path / "archive", 1 << 20)
    ingest = Ingest(archive, cam.trust, Counter())
    assert ingest.take(cam.epoch.envelope(cam.key, "cam1", 0, []).to_parts()).relay
    frames = [cam.frame()[0] for _ in range(8)]
    assert frames[0].version == 2 and frames[0].is_keyframe and frames[0].streams
    for msg in frames[:3]:
        assert ingest.take(msg.to_parts(), "camera:cam1").reply_after_commit is not None
    bad_public = frames[3].to_parts()
    bad_public[3] = bad_public[3][:-1] + bytes([bad_public[3][-1] ^ 1])
    out = ingest.take(bad_public, "camera:cam1")
    assert out.reply_now is not None and "public image" in out.reply_now.reason
    bad_zone = frames[3].to_parts()
    bad_zone[4] = bytes([bad_zone[4][0] ^ 1]) + bad_zone[4][1:]
    assert ingest.take(bad_zone, "camera:cam1").reply_now is not None
    assert ingest.rejects[RejectReason.IMAGE_HASH_MISMATCH] == 1
    assert ingest.rejects[RejectReason.ZONE_HASH_MISMATCH] == 1
    # frame #3 never arrives: #4 and on are archived after a gap
    for msg in frames[4:]:
        assert ingest.take(msg.to_parts(), "camera:cam1").reply_after_commit is not None
    reordered = ingest.take(frames[2].to_parts(), "camera:cam1")  # again, out of order
    assert reordered.reply_after_commit.status == AckStatus.DUPLICATE  # same bytes: no harm
    forged_order = frames[3].to_parts()  # the missing one, late: older than the newest
    out = ingest.take(forged_order, "camera:cam1")
    assert out.reply_now is not None and out.reply_now.status == AckStatus.REJECTED
    archive.commit()
    archive.close()
    report = audit_archive(tmp_path / "archive", cam.trust)
    kinds = [(p.kind, p.seq) for p in report.problems]
    assert ("gap", 4) in kinds, kinds
    assert not report.intact
