"""The camera's spool in-process (camera_node/spool.py): order, acknowledgements, the drop
policy and what survives a restart, with no socket and no store."""

from __future__ import annotations

from pathlib import Path

from veilcam.camera_node.spool import Spool
from veilcam.common.format import Ack, AckStatus

from tests.factory import Camera


def test_messages_stay_pending_in_order_until_acknowledged(tmp_path: Path) -> None:
    cam = Camera()
    spool = Spool(tmp_path, memory_window=2)
    env = cam.envelope()
    frames = [cam.frame() for _ in range(4)]
    for msg in [env, *frames]:
        assert spool.add(msg) == []
    assert [k for k, _ in spool.unsent()] == [m.ack_key for m in [env, *frames]]
    assert spool.in_memory == 2 and spool.spooled == 3  # the window, then disk
    spooled = [e for e in spool.pending.values() if e.path is not None]
    assert spool.parts(spooled[0]) == frames[1].to_parts()  # read back byte for byte
    assert spool.settle(Ack.for_message(frames[0], AckStatus.STORED))
    assert not spool.settle(Ack.for_message(frames[0], AckStatus.DUPLICATE))  # settled
    assert spool.settle(Ack.for_message(frames[1], AckStatus.REJECTED, "bad"))
    assert (spool.acked, spool.acked_frames, spool.rejected) == (1, 1, 1)
    assert len(spool) == 3 and not (tmp_path / spooled[0].name).exists()


def test_a_full_spool_drops_the_oldest_frames_never_envelopes(tmp_path: Path) -> None:
    cam = Camera()
    env = cam.envelope()
    frames = [cam.frame() for _ in range(5)]
    one = sum(len(p) for p in frames[0].to_parts())
    spool = Spool(tmp_path, memory_window=1, max_bytes=3 * one, drop_policy="oldest")
    dropped: list[int] = []
    for msg in [env, *frames]:
        dropped += spool.add(msg)
    assert dropped and dropped == sorted(dropped) and dropped[0] == 0
    assert env.ack_key in spool.pending and spool.pending_bytes <= 3 * one
    assert spool.dropped_spool_full == len(dropped)
    newest = Spool(tmp_path / "newest", memory_window=1, max_bytes=one, drop_policy="newest")
    newest.add(frames[0])
    assert not newest.has_room  # the camera drops the next capture before signing it


def test_what_is_pending_at_stop_is_sent_first_by_the_next_run(tmp_path: Path) -> None:
    cam = Camera()
    first = Spool(tmp_path, memory_window=10)
    msgs = [cam.envelope(), *(cam.frame() for _ in range(3))]
    for msg in msgs:
        first.add(msg)
    assert first.keep_all() == 4
    (tmp_path / "000000000099-F-garbage.msg").write_bytes(b"not a message")
    second = Spool(tmp_path)
    assert second.recovered == 4
    assert [k for k, _ in second.unsent()] == [m.ack_key for m in msgs]
    assert (tmp_path / "000000000099-F-garbage.bad").exists()  # set aside, not lost silently
    later = cam.frame()
    second.add(later)
    assert list(second.pending)[-1] == later.ack_key  # new messages after the recovered ones
