"""Keyframes in the store (H.264 groups of pictures): the archive index's ``keyframe`` column
and its migration, segments that rotate only at a keyframe (with a hard ceiling), playback
(``RANGE``) from the keyframe at or before the asked time, the ``LIVE`` query (a camera's
current group of pictures), and the viewer's live join (``RelayClient``: the group first,
then the relay, no duplicates). Version-1 frames are all keyframes; frames that are not are
made here by patching ``FrameMessage.is_keyframe`` / ``gop_seq`` (every 5th frame a keyframe).
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
import zmq
from veilcam.camera_node.protect import Epoch
from veilcam.common import deployment
from veilcam.common.errors import ArchiveError
from veilcam.common.format import KIND_FRAME, FrameMessage, unpack_parts
from veilcam.common.home import Home
from veilcam.common.query import Command, LiveReply, LiveRequest, RangeRequest
from veilcam.common.queryclient import StoreQueryClient
from veilcam.common.segments import list_segments, scan_segment
from veilcam.common.signing import TrustedCameras, load_signing_key
from veilcam.common.transport import curve_pair
from veilcam.store_node.accounts import AccountStore
from veilcam.store_node.archive import SCHEMA_VERSION, SEGMENT_CEILING_FACTOR, Archive
from veilcam.store_node.audit import audit_archive
from veilcam.store_node.queries import Caller, StoreQueries
from veilcam.viewer.client import RelayClient
from veilcam.viewer.playback import ArchiveReader

from tests.conftest import SAMPLE_CLIP, make_home
from tests.factory import Camera
from tests.security.tamperlib import frame_now

GOP = 5


@pytest.fixture
def gop5(monkeypatch):
    """Every 5th frame (seq 0, 5, 10, ...) a keyframe, the others not."""
    monkeypatch.setattr(FrameMessage, "is_keyframe", property(lambda m: m.header.seq % GOP == 0))
    monkeypatch.setattr(FrameMessage, "gop_seq", property(lambda m: m.header.seq // GOP * GOP))


def _seqs(frames: list[list[bytes]]) -> list[int]:
    return [FrameMessage.from_body_parts(parts).header.seq for parts in frames]


def _archive(root: Path, cam: Camera, n: int, **kwargs) -> Archive:
    archive = Archive(root, **kwargs)
    archive.append_envelope(cam.envelope())
    for _ in range(n):
        archive.append_frame(cam.frame())
    archive.commit()
    return archive


def _keyframe_column(archive: Archive) -> dict[int, int]:
    return dict(archive.db.execute("SELECT seq, keyframe FROM frames WHERE camera='cam1'"))


# --------------------------------------------------------------------------- the index


def test_the_index_records_which_frames_are_keyframes(tmp_path: Path, gop5) -> None:
    archive = _archive(tmp_path, Camera(), 12)
    assert _keyframe_column(archive) == {s: int(s % GOP == 0) for s in range(12)}
    assert archive.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    archive.close()
    # the recovery path (the index rebuilt from the segments) fills it too
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"index.sqlite3{suffix}").unlink(missing_ok=True)
    rebuilt = Archive(tmp_path)
    assert _keyframe_column(rebuilt) == {s: int(s % GOP == 0) for s in range(12)}
    rebuilt.close()


def test_version_1_frames_are_keyframes(tmp_path: Path) -> None:
    archive = _archive(tmp_path, Camera(), 3)
    assert _keyframe_column(archive) == {0: 1, 1: 1, 2: 1}
    archive.close()


# the frames table as veilcam wrote it before the keyframe column (schema version 0)
OLD_FRAMES = """CREATE TABLE frames (
    camera TEXT NOT NULL, seq INTEGER NOT NULL, capture_us INTEGER NOT NULL,
    epoch BLOB NOT NULL, digest BLOB NOT NULL, segment_id INTEGER NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, PRIMARY KEY (camera, seq))"""


def _make_old_index(root: Path) -> None:
    """Turn an archive's index into the unversioned schema of earlier releases."""
    db = sqlite3.connect(root / "index.sqlite3", isolation_level=None)
    db.executescript(
        "BEGIN;"
        "DROP INDEX frames_keyframe_time; DROP INDEX frames_time;"
        "ALTER TABLE frames RENAME TO frames_new;"
        f"{OLD_FRAMES};"
        "INSERT INTO frames SELECT camera, seq, capture_us, epoch, digest, segment_id, "
        "offset, length FROM frames_new;"
        "DROP TABLE frames_new;"
        "CREATE INDEX frames_time ON frames (camera, capture_us);"
        "PRAGMA user_version = 0;"
        "COMMIT;"
    )
    db.close()


def test_an_archive_of_an_earlier_release_is_migrated(tmp_path: Path) -> None:
    cam = Camera()
    _archive(tmp_path, cam, 4).close()
    _make_old_index(tmp_path)
    db = sqlite3.connect(tmp_path / "index.sqlite3")
    assert "keyframe" not in {r[1] for r in db.execute("PRAGMA table_info(frames)")}
    db.close()
    archive = Archive(tmp_path)
    assert archive.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert _keyframe_column(archive) == {0: 1, 1: 1, 2: 1, 3: 1}  # v1 frames: keyframes
    archive.append_frame(cam.frame())  # and it goes on taking frames
    archive.commit()
    assert _keyframe_column(archive)[4] == 1
    assert _seqs(archive.frames_from("cam1", 0, None, 10)) == [0, 1, 2, 3, 4]
    archive.close()
    reopened = Archive(tmp_path)  # migrated once: opening again changes nothing
    assert len(_keyframe_column(reopened)) == 5
    reopened.close()
    assert audit_archive(tmp_path, cam.trust).intact


def test_an_index_newer_than_this_veilcam_is_refused(tmp_path: Path) -> None:
    _archive(tmp_path, Camera(), 1).close()
    db = sqlite3.connect(tmp_path / "index.sqlite3")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(ArchiveError, match="schema version"):
        Archive(tmp_path)


# --------------------------------------------------------------------------- rotation


def _segment_frames(root: Path) -> list[list[int]]:
    """The frame sequence numbers in each of cam1's segments, in order."""
    out = []
    for path in list_segments(root / "segments" / "cam1"):
        out.append(
            [
                FrameMessage.from_body_parts(rec.parts).header.seq
                for rec in scan_segment(path)
                if rec.kind == KIND_FRAME
            ]
        )
    return out


def test_segments_rotate_only_at_a_keyframe(tmp_path: Path, gop5) -> None:
    cam = Camera()
    limit = 200_000  # about three frames of tests.factory
    archive = _archive(tmp_path, cam, 23, segment_max_bytes=limit)
    archive.close()
    segments = _segment_frames(tmp_path)
    assert len(segments) >= 4
    assert [s for seg in segments for s in seg] == list(range(23))
    for seg in segments:
        assert seg[0] % GOP == 0, segments  # each segment starts with a keyframe
    # past the limit they waited for the keyframe: whole groups of pictures per segment
    assert segments[:-1] == [list(range(i, i + GOP)) for i in range(0, 5 * len(segments[:-1]), 5)]
    for path in list_segments(tmp_path / "segments" / "cam1"):
        assert path.stat().st_size <= SEGMENT_CEILING_FACTOR * limit
    assert audit_archive(tmp_path, cam.trust).intact


def test_a_stream_without_keyframes_is_cut_at_the_ceiling(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(FrameMessage, "is_keyframe", property(lambda m: m.header.seq == 0))
    cam = Camera()
    limit = 100_000
    archive = _archive(tmp_path, cam, 20, segment_max_bytes=limit)
    archive.close()
    paths = list_segments(tmp_path / "segments" / "cam1")
    assert len(paths) >= 3
    for path in paths:
        assert path.stat().st_size <= SEGMENT_CEILING_FACTOR * limit
    assert paths[0].stat().st_size > 2 * limit  # it did wait past the limit first
    assert [s for seg in _segment_frames(tmp_path) for s in seg] == list(range(20))
    assert audit_archive(tmp_path, cam.trust).intact


def test_after_a_restart_the_last_segment_still_waits_for_a_keyframe(tmp_path: Path, gop5) -> None:
    cam = Camera()
    limit = 200_000
    _archive(tmp_path, cam, 4, segment_max_bytes=limit).close()  # past the limit, mid-GOP
    archive = Archive(tmp_path, segment_max_bytes=limit)
    for _ in range(4):
        archive.append_frame(cam.frame())
    archive.commit()
    archive.close()
    assert _segment_frames(tmp_path) == [[0, 1, 2, 3, 4], [5, 6, 7]]


# --------------------------------------------------------------------------- RANGE and LIVE


@pytest.fixture
def queries(tmp_path: Path):
    home = Home(make_home(tmp_path, SAMPLE_CLIP, users=()))
    archive = Archive(home.resolve(deployment.store_config(home).archive.path))
    accounts = AccountStore(home.accounts_path, deployment.account_secret(home))
    q = StoreQueries(home, archive, accounts, rejects=Counter(), clock=lambda: 42)
    yield q
    accounts.close()
    archive.close()


def _fill(q: StoreQueries, n: int) -> list[FrameMessage]:
    cam = Camera()
    q.archive.append_envelope(cam.envelope())
    frames = [cam.frame() for _ in range(n)]
    for msg in frames:
        q.archive.append_frame(msg)
    q.archive.commit()
    return frames


VIEWER = Caller("viewer:viewer")


def _range(q: StoreQueries, from_us: int, after: int | None = None) -> list[int]:
    reply = q.handlers[Command.RANGE](RangeRequest("cam1", from_us, after, 64), VIEWER)
    return _seqs(reply.frames)


def test_playback_from_a_time_starts_at_the_keyframe_at_or_before_it(queries, gop5) -> None:
    frames = _fill(queries, 13)
    t = [f.header.capture_time_us for f in frames]
    assert _range(queries, t[7]) == list(range(5, 13))  # 7 is mid-GOP: from keyframe 5
    assert _range(queries, t[7] + 1) == list(range(5, 13))
    assert _range(queries, t[10]) == list(range(10, 13))  # a keyframe itself
    assert _range(queries, t[4]) == list(range(0, 13))
    assert _range(queries, 0) == list(range(13))  # before everything: the first frame on
    assert _range(queries, t[12] + 10**9) == [10, 11, 12]  # after the end: the last GOP
    assert _range(queries, t[7], after=8) == [9, 10, 11, 12]  # continuing: unchanged
    # the wire: after_seq -1
    reply = queries.answer([b"RANGE", b"cam1", str(t[7]).encode(), b"-1", b"3"], VIEWER.peer)
    assert reply[0] == b"OK" and [unpack_parts(f)[0] for f in reply[1:]] == [KIND_FRAME] * 3
    assert _seqs([unpack_parts(f)[1] for f in reply[1:]]) == [5, 6, 7]


def test_playback_of_version_1_frames_starts_at_the_frame_at_or_before_the_time(
    queries,
) -> None:
    frames = _fill(queries, 4)
    t = [f.header.capture_time_us for f in frames]
    assert _range(queries, t[2]) == [2, 3]
    assert _range(queries, t[2] - 1) == [1, 2, 3]  # decoded from #1, shown from #2


def test_playback_from_before_the_first_keyframe_starts_at_the_first_frame_after(
    tmp_path: Path, monkeypatch
) -> None:
    """Retention cut the archive mid-GOP (at the ceiling): no keyframe before the time."""
    monkeypatch.setattr(FrameMessage, "is_keyframe", property(lambda m: m.header.seq == 3))
    cam = Camera()
    archive = _archive(tmp_path, cam, 6)
    t1 = archive.frames_from("cam1", 0, 0, 1)  # frame #1
    when = FrameMessage.from_body_parts(t1[0]).header.capture_time_us
    assert _seqs(archive.frames_from("cam1", when, None, 10)) == [1, 2, 3, 4, 5]
    assert archive.playback_start("cam1", when + 10**9) == 3
    assert archive.playback_start("cam2", 0) is None
    archive.close()


def test_live_answers_the_current_group_of_pictures(queries, gop5) -> None:
    live = queries.handlers[Command.LIVE]
    assert live(LiveRequest("cam1"), VIEWER) == LiveReply([])  # nothing archived yet
    _fill(queries, 13)
    assert _seqs(live(LiveRequest("cam1"), VIEWER).frames) == [10, 11, 12]
    assert _seqs(queries.archive.current_gop("cam1", 3)) == [10, 11, 12]
    assert queries.archive.current_gop("cam1", 2) == []  # no keyframe among the newest 2
    assert live(LiveRequest("cam2"), VIEWER) == LiveReply([])
    # on the wire, for a viewer; a camera is refused before anything is read
    reply = queries.answer([b"LIVE", b"cam1"], "viewer:viewer")
    assert reply[0] == b"OK" and len(reply) == 4
    reply = queries.answer([b"LIVE", b"cam1"], "camera:cam1")
    assert reply == [b"ERR", b"LIVE is not allowed for a camera certificate"]
    assert queries.rejects["query_wrong_role"] == 1
    reply = queries.answer([b"LIVE", b"bad id!"], "viewer:viewer")
    assert reply[0] == b"ERR" and b"invalid camera id" in reply[1]


def test_live_of_version_1_frames_is_the_newest_frame(queries) -> None:
    _fill(queries, 4)
    reply = queries.handlers[Command.LIVE](LiveRequest("cam1"), VIEWER)
    assert _seqs(reply.frames) == [3]


# --------------------------------------------------------------------------- the viewer


class _QueriesLink:
    """A query link answered in-process by the store's handlers."""

    def __init__(self, q: StoreQueries) -> None:
        self.q = q
        self.asked: list[bytes] = []

    def request(self, parts: list[bytes], timeout_s: float = 10.0) -> list[bytes]:
        self.asked.append(parts[0])
        return self.q.answer(parts, "viewer:viewer")


def _home_camera(home: Home) -> Camera:
    cam = Camera("cam1")
    cam.key = load_signing_key(home.camera_key_path("cam1"))
    cam.trust = TrustedCameras({"cam1": cam.key.public_key()})
    cam.epoch = Epoch.new()
    return cam


def test_a_live_viewer_gets_the_current_gop_then_the_relay_without_duplicates(
    queries, gop5
) -> None:
    home = queries.home
    cam = _home_camera(home)
    env = cam.envelope()
    frames = [frame_now(cam) for _ in range(14)]
    queries.archive.append_envelope(env)
    for msg in frames[:12]:  # #0..#11 archived: the current GOP is #10, #11
        queries.archive.append_frame(msg)
    queries.archive.commit()

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.curve_server = True
    pub.curve_publickey, pub.curve_secretkey = curve_pair(
        deployment.transport_key(home, "store", "store")
    )
    pub.bind(deployment.viewer_config(home).viewer.relay)
    client = RelayClient(home, ["cam1"])
    link = _QueriesLink(queries)
    client.query.close()
    client.query = StoreQueryClient(link)
    try:
        got = []
        deadline = time.monotonic() + 20
        while (env.camera_id, env.body.epoch_id) not in client.envelopes:
            assert time.monotonic() < deadline, "the viewer never subscribed"
            pub.send_multipart(env.to_parts())
            frame = client.receive(timeout_ms=100)
            if frame is not None:
                got.append(frame)
        assert link.asked == [b"LIVE"]  # asked once, at the first receive
        # the relay, which the viewer joined late: older frames, the GOP again, then new ones
        for msg in frames[8:14]:
            pub.send_multipart(msg.to_parts())
        while not got or got[-1].msg.header.seq != 13:
            assert time.monotonic() < deadline, [g.msg.header.seq for g in got]
            frame = client.receive(timeout_ms=200)
            if frame is not None:
                got.append(frame)
        assert [g.msg.header.seq for g in got] == [10, 11, 12, 13]
        assert all(g.verified for g in got), [g.problem for g in got]
        assert client.rejected == 0 and link.asked == [b"LIVE"]
        # after the join, a replayed frame is a replay again, as without it
        pub.send_multipart(frames[11].to_parts())
        deadline = time.monotonic() + 20
        frame = None
        while frame is None:
            assert time.monotonic() < deadline
            frame = client.receive(timeout_ms=200)
        assert not frame.verified and frame.problem.startswith("replay:")
    finally:
        client.close()
        pub.close()
        ctx.term()


def test_a_live_join_verifies_what_the_store_sends(queries, gop5) -> None:
    """A frame of another camera, a tampered one: refused or unverified, never taken."""
    home = queries.home
    cam = _home_camera(home)
    frames = [frame_now(cam) for _ in range(3)]
    bad = frames[1].body_parts()
    bad[1] = bytes(64)  # zeroed signature
    other = Camera("cam2").frame().body_parts()

    class _Link:
        def request(self, parts: list[bytes], timeout_s: float = 10.0) -> list[bytes]:
            return LiveReply(
                [frames[0].body_parts(), other, bad, frames[2].body_parts()]
            ).to_frames()

    client = RelayClient(home, ["cam1"])
    client.query.close()
    client.query = StoreQueryClient(_Link())
    try:
        assert client.join_live("cam1") == 3
        got = [client.receive(timeout_ms=0) for _ in range(3)]
        assert [(g.msg.header.seq, g.verified) for g in got] == [(0, True), (1, False), (2, True)]
        assert got[1].problem.startswith("bad_signature:")
        assert client.rejected == 2
    finally:
        client.close()


def test_playback_decodes_from_the_keyframe_and_shows_from_the_time(queries, gop5) -> None:
    """ArchiveReader: the frames before the asked time (from the keyframe on) are verified
    and chained; they come out flagged ``preroll`` only to a caller that decodes."""
    home = queries.home
    cam = _home_camera(home)
    frames = [frame_now(cam) for _ in range(9)]
    queries.archive.append_envelope(cam.envelope())
    for msg in frames:
        queries.archive.append_frame(msg)
    queries.archive.commit()

    def play(from_us: int, preroll: bool) -> list[tuple[int, bool, bool]]:
        reader = ArchiveReader(home, "cam1", from_us)
        reader.client.close()
        reader.client = StoreQueryClient(_QueriesLink(queries))
        try:
            return [(g.msg.header.seq, g.verified, g.preroll) for g in reader.frames(preroll)]
        finally:
            reader.close()

    t7 = frames[7].header.capture_time_us
    assert play(t7, False) == [(7, True, False), (8, True, False)]  # as with version 1
    assert play(t7, True) == [
        (5, True, True),
        (6, True, True),
        (7, True, False),
        (8, True, False),
    ]
    assert play(0, True) == [(s, True, False) for s in range(9)]


def test_a_store_without_live_only_delays_the_first_picture(queries) -> None:
    """A store older than LIVE answers 'unknown query': no frame, nothing counted, and the
    client does not ask again at every receive."""

    class _OldStore:
        asked = 0

        def request(self, parts: list[bytes], timeout_s: float = 10.0) -> list[bytes]:
            _OldStore.asked += 1
            return [b"ERR", b"unknown query"]

    client = RelayClient(queries.home, ["cam1"])
    client.query.close()
    client.query = StoreQueryClient(_OldStore())
    try:
        assert client.receive(timeout_ms=0) is None
        assert client.receive(timeout_ms=0) is None
        assert _OldStore.asked == 1 and client.rejected == 0
    finally:
        client.close()


def test_playback_refuses_another_cameras_frames_from_the_store(queries) -> None:
    """A store answering RANGE for cam1 with cam2's validly signed frames: playback and export
    would show (and file) another camera's footage under cam1's name. Refused."""
    from veilcam.common.errors import VeilcamError
    from veilcam.common.query import RangeReply

    home = queries.home
    cam = _home_camera(home)
    frames = [frame_now(cam) for _ in range(2)]

    class _OtherCamera:
        def request(self, parts: list[bytes], timeout_s: float = 10.0) -> list[bytes]:
            if parts[0] == b"RANGE":
                return RangeReply([frames[0].body_parts()]).to_frames()
            return queries.answer(parts, "viewer:viewer")

    reader = ArchiveReader(home, "cam2", 0)
    reader.client.close()
    reader.client = StoreQueryClient(_OtherCamera())
    try:
        with pytest.raises(VeilcamError, match="frames of camera 'cam1' when asked for 'cam2'"):
            list(reader.frames(True))
    finally:
        reader.close()
