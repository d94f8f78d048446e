"""The pure parts of the object-storage backend (fast tier, no server): config validation, key
naming, lock dates, credentials and their redaction, record decoding, and the index's side of
uploads (schema, candidates, numbering, retention under a lock). The real S3 server runs in
tests/test_objectstore_e2e.py."""

from __future__ import annotations

import base64
import hashlib
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from veilcam.common.config import StoreConfig, load_config
from veilcam.common.errors import ArchiveError, ConfigError
from veilcam.common.segments import encode_record
from veilcam.store_node.archive import SCHEMA_VERSION, Archive, decode_record
from veilcam.store_node.audit import audit_archive, format_report
from veilcam.store_node.objectstore import (
    MIN_LOCK_AFTER_UPLOAD,
    Credentials,
    LockPolicy,
    ObjectMissing,
    ObjectState,
    ObjectStore,
    ObjectStoreError,
    StoredObject,
    composite_checksum,
    load_credentials,
    lock_policy,
    object_key,
    parse_object_key,
)
from veilcam.store_node.rebuild import content_problem, missing_objects
from veilcam.store_node.uploader import Uploader, backoff_delays

from tests.factory import Camera

SECRET = "s3cr3t-Value-never-shown"


def _store_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "store.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- config


def test_local_is_the_default_backend() -> None:
    cfg = StoreConfig()
    assert cfg.archive.backend == "local" and cfg.archive.s3.lock_mode == "off"


def test_s3_backend_needs_a_bucket(tmp_path: Path) -> None:
    path = _store_toml(tmp_path, '[archive]\nbackend = "s3"\n')
    with pytest.raises(ConfigError, match="needs archive.s3.bucket"):
        load_config(path, StoreConfig)


def test_bad_bucket_name_and_lock_mode_are_named(tmp_path: Path) -> None:
    path = _store_toml(
        tmp_path, '[archive]\nbackend = "s3"\n[archive.s3]\nbucket = "Bad_Name"\nlock_mode = "x"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, StoreConfig)
    assert "archive.s3.bucket" in str(err.value) and "archive.s3.lock_mode" in str(err.value)


def test_a_lock_needs_a_period(tmp_path: Path) -> None:
    path = _store_toml(
        tmp_path,
        '[archive]\nbackend = "s3"\n[archive.s3]\nbucket = "evidence"\nlock_mode = "compliance"\n'
        "[retention]\nmax_age_days = 0\n",
    )
    with pytest.raises(ConfigError, match="lock_days"):
        load_config(path, StoreConfig)


def test_lock_period_defaults_to_the_retention_age() -> None:
    cfg = StoreConfig.model_validate(
        {"archive": {"backend": "s3", "s3": {"bucket": "abc", "lock_mode": "governance"}}}
    )
    policy = lock_policy(cfg.archive.s3, cfg.retention.max_age_days)
    assert policy == LockPolicy("GOVERNANCE", 30)
    off = StoreConfig.model_validate({"archive": {"backend": "s3", "s3": {"bucket": "abc"}}})
    assert lock_policy(off.archive.s3, 30) is None


# --------------------------------------------------------------------------- naming, dates


def test_object_keys_mirror_segment_paths_and_parse_back() -> None:
    key = object_key("veilcam/", "cam-1.a", "00000042.vseg")
    assert key == "veilcam/cam-1.a/00000042.vseg"
    assert parse_object_key("veilcam/", key) == ("cam-1.a", "00000042.vseg")
    for junk in ("veilcam/cam1/x.vseg", "other/cam1/00000001.vseg", "veilcam/00000001.vseg"):
        assert parse_object_key("veilcam/", junk) is None


def test_retain_until_follows_the_newest_frame_with_a_floor_after_upload() -> None:
    policy = LockPolicy("COMPLIANCE", 30)
    now = datetime(2026, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)
    recent = int((now - timedelta(days=2)).timestamp() * 1e6)
    until = policy.retain_until(recent, now)
    assert until.microsecond == 0
    assert timedelta(0) < until - (now + timedelta(days=28)) <= timedelta(seconds=1)
    old = int((now - timedelta(days=400)).timestamp() * 1e6)  # a backlog uploaded late
    assert policy.retain_until(old, now) >= now + MIN_LOCK_AFTER_UPLOAD
    assert policy.retain_until(0, now) >= now + MIN_LOCK_AFTER_UPLOAD  # envelopes only


def test_composite_checksum_is_s3s_multipart_form() -> None:
    parts = [hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()]
    expected = base64.b64encode(hashlib.sha256(parts[0] + parts[1]).digest()).decode()
    assert composite_checksum(parts) == f"{expected}-2"


def test_backoff_doubles_up_to_the_cap() -> None:
    assert backoff_delays(10) == [1, 2, 4, 8, 10]
    assert backoff_delays(1) == [1]


# --------------------------------------------------------------------------- credentials


def _s3(**kw):
    return StoreConfig.model_validate(
        {"archive": {"backend": "s3", "s3": {"bucket": "abc", **kw}}}
    ).archive.s3


def test_credentials_from_an_owner_only_file(tmp_path: Path) -> None:
    creds = tmp_path / "s3.credentials"
    creds.write_text(f"# comment\naccess_key_id = AKID\nsecret_access_key = {SECRET}\n")
    creds.chmod(0o600)
    got = load_credentials(_s3(credentials_file="s3.credentials"), tmp_path, environ={})
    assert got == Credentials("AKID", SECRET)
    assert SECRET not in repr(got)


def test_a_credentials_file_others_can_read_is_refused(tmp_path: Path) -> None:
    creds = tmp_path / "s3.credentials"
    creds.write_text(f"access_key_id = AKID\nsecret_access_key = {SECRET}\n")
    creds.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600") as err:
        load_credentials(_s3(credentials_file=str(creds)), tmp_path, environ={})
    assert SECRET not in str(err.value)
    creds.chmod(0o600)
    creds.write_text("access_key_id = AKID\n")
    with pytest.raises(ConfigError, match="no secret_access_key line"):
        load_credentials(_s3(credentials_file=str(creds)), tmp_path, environ={})


def test_credentials_from_the_environment_and_a_clear_error_without(tmp_path: Path) -> None:
    env = {"MY_ID": "AKID", "MY_SECRET": SECRET}
    s3 = _s3(access_key_id_env="MY_ID", secret_access_key_env="MY_SECRET")
    assert load_credentials(s3, tmp_path, environ=env) == Credentials("AKID", SECRET)
    with pytest.raises(ConfigError, match="MY_SECRET") as err:
        load_credentials(s3, tmp_path, environ={"MY_ID": "AKID"})
    assert "AKID" not in str(err.value)


def test_endpoint_shown_redacted() -> None:
    pytest.importorskip("boto3")
    store = ObjectStore(
        _s3(endpoint_url=f"http://admin:{SECRET}@127.0.0.1:9/", key_prefix="p/"),
        Credentials("AKID", SECRET),
    )
    shown = store.describe()
    assert SECRET not in shown and "admin:***@127.0.0.1:9" in shown and "s3://abc/p/" in shown


# --------------------------------------------------------------------------- index side


def test_records_read_by_byte_range_are_crc_checked() -> None:
    data = encode_record(b"F", [b"head", b"sig", b"jpeg"])
    assert decode_record(data, "x") == (b"F", [b"head", b"sig", b"jpeg"])
    bad = bytearray(data)
    bad[-1] ^= 1
    with pytest.raises(ArchiveError, match="CRC"):
        decode_record(bytes(bad), "veilcam/cam1/00000001.vseg: record at 6")
    with pytest.raises(ArchiveError, match="cut short"):
        decode_record(data[:5], "x")


def _segments(root: Path, cam: Camera, frames: int = 30) -> Archive:
    archive = Archive(root, segment_max_bytes=2**16)
    archive.append_envelope(cam.envelope())
    for _ in range(frames):
        archive.append_frame(cam.frame())
    archive.commit()
    return archive


def _as_uploaded(archive: Archive, seg_id: int, until_us: int | None = None) -> Path | None:
    """Record a segment as uploaded (what the uploader does once a HEAD confirmed it)."""
    info = next(s for cam in ["cam1"] for s in archive.segments_of(cam) if s.segment_id == seg_id)
    data = info.path.read_bytes()
    stored = StoredObject(
        f"veilcam/cam1/{info.name}",
        len(data),
        hashlib.sha256(data).digest(),
        "v1",
        "GOVERNANCE" if until_us else None,
        until_us,
    )
    return archive.mark_uploaded(seg_id, stored, now_us=1)


def test_schema_2_records_where_segments_live(tmp_path: Path) -> None:
    archive = _segments(tmp_path, Camera())
    assert archive.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    columns = {r[1] for r in archive.db.execute("PRAGMA table_info(segments)")}
    assert {"location", "object_key", "version_id", "sha256", "retain_until_us"} <= columns
    assert {r[0] for r in archive.db.execute("SELECT location FROM segments")} == {"local"}
    archive.close()


def test_an_index_of_schema_1_is_migrated(tmp_path: Path) -> None:
    cam = Camera()
    _segments(tmp_path, cam, 5).close()
    db = sqlite3.connect(tmp_path / "index.sqlite3")
    db.execute("CREATE TABLE s2 AS SELECT id, camera, name FROM segments")
    db.execute("DROP TABLE segments")
    db.execute("ALTER TABLE s2 RENAME TO segments")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    archive = Archive(tmp_path, segment_max_bytes=2**16)
    assert archive.db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert all(s.location == "local" for s in archive.segments_of("cam1"))
    assert len(archive.frames_from("cam1", 0, None, 10)) == 5
    archive.close()


def test_upload_candidates_are_closed_segments_oldest_first_never_the_newest(
    tmp_path: Path,
) -> None:
    archive = _segments(tmp_path, Camera())
    segs = archive.segments_of("cam1")
    assert len(segs) >= 4
    candidates = archive.upload_candidates()
    assert [c.name for c in candidates] == [s.name for s in segs[:-1]]
    path = _as_uploaded(archive, candidates[0].segment_id)
    assert path is not None and not path.exists()  # the local copy goes once recorded
    assert [c.name for c in archive.upload_candidates()] == [s.name for s in segs[1:-1]]
    # the uploader's backlog figures (a real client; nothing is sent by poll)
    uploader = Uploader(
        archive, ObjectStore(_s3(endpoint_url="http://127.0.0.1:9"), Credentials("a", "b")),
        None, 1,
    )  # fmt: skip
    uploader.poll()
    assert uploader.backlog_segments == len(segs) - 2
    assert uploader.backlog_bytes == sum(s.size for s in segs[1:-1]) and uploader.lag_s >= 0
    archive.close()


def test_numbering_goes_on_past_uploaded_segments_and_reads_need_the_bucket(
    tmp_path: Path,
) -> None:
    cam = Camera()
    archive = _segments(tmp_path, cam)
    names = [s.name for s in archive.segments_of("cam1")]
    for seg in archive.upload_candidates():
        _as_uploaded(archive, seg.segment_id)
    archive.close()
    local = sorted(p.name for p in (tmp_path / "segments" / "cam1").glob("*.vseg"))
    assert local == names[-1:]
    # a stop between recording an upload and removing the file: the next start removes it
    (tmp_path / "segments" / "cam1" / names[0]).write_bytes(b"stale copy")
    archive = Archive(tmp_path, segment_max_bytes=2**16)
    assert not (tmp_path / "segments" / "cam1" / names[0]).exists()
    for _ in range(30):
        archive.append_frame(cam.frame())
    archive.commit()
    after = [s.name for s in archive.segments_of("cam1")]
    assert after[: len(names)] == names and len(after) > len(names)  # no number used twice
    assert len(set(after)) == len(after)
    with pytest.raises(ArchiveError, match="archive.backend is not 's3'"):
        archive.frames_from("cam1", 0, None, 5)  # the first frames live in the bucket
    archive.close()


def test_retention_waits_for_the_lock_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive = _segments(tmp_path, Camera())
    until = 10**17
    first = archive.upload_candidates()[0]
    _as_uploaded(archive, first.segment_id, until_us=until)
    caplog.set_level(logging.INFO, "veilcam.archive")
    for _ in range(3):
        assert archive.apply_retention(1, 0, 0, now_us=until - 1) == []
    assert caplog.text.count("is due but locked until") == 1
    assert archive.segments_of("cam1")[0].segment_id == first.segment_id  # still indexed
    archive.close()


def test_verify_without_the_bucket_says_which_segments_it_could_not_read(
    tmp_path: Path,
) -> None:
    cam = Camera()
    archive = _segments(tmp_path, cam)
    first = archive.upload_candidates()[0]
    _as_uploaded(archive, first.segment_id)
    archive.close()
    report = audit_archive(tmp_path, cam.trust)
    assert not report.intact
    assert [(p.segment, p.kind) for p in report.problems][0] == (first.name, "object_unreadable")
    assert report.objects[0].status == "unreadable"
    assert f"object cam1/{first.name} (veilcam/cam1/{first.name}): unreadable" in format_report(
        report
    )


# --------------------------------------------------------------------------- index rebuild


class _Bucket:
    """An in-memory stand-in for ``ObjectStore``: what the index rebuild calls of it."""

    prefix = "veilcam/"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.meta: dict[str, str] = {}  # key -> SHA-256 hex, as the uploader writes it

    def put(self, key: str, data: bytes, meta: bool = True) -> None:
        self.objects[key] = data
        self.meta.pop(key, None)
        if meta:
            self.meta[key] = hashlib.sha256(data).hexdigest()

    def describe(self) -> str:
        return "s3://test/veilcam/"

    def list_segments(self) -> dict[str, tuple[int, str | None]]:
        return {k: (len(v), None) for k, v in self.objects.items()}

    def download(self, key: str, out, version_id: str | None = None) -> bytes:
        out.write(self.objects[key])
        return hashlib.sha256(self.objects[key]).digest()

    def head(self, key: str, version_id: str | None = None) -> ObjectState:
        data = self.objects[key]
        return ObjectState(
            len(data), None, self.meta.get(key), "v-" + key[-9:-5], "GOVERNANCE",
            datetime(2100, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC),
        )  # fmt: skip

    def read_range(self, key: str, offset: int, length: int, version_id: str | None = None):
        return self.objects[key][offset : offset + length]


def _uploaded_then_index_lost(tmp_path: Path, cam: Camera) -> tuple[_Bucket, list[str], list]:
    """A camera's closed segments in a bucket, the newest kept local; the index then lost."""
    old = tmp_path / "old"
    archive = _segments(old, cam)
    frames = archive.frames_from("cam1", 0, None, 100)
    bucket = _Bucket()
    names = [s.name for s in archive.segments_of("cam1")]
    for seg in archive.upload_candidates():
        bucket.put(f"veilcam/cam1/{seg.name}", seg.path.read_bytes())
        _as_uploaded(archive, seg.segment_id)
    archive.close()
    (old / "index.sqlite3").rename(old / "index.sqlite3.corrupt")
    return bucket, names, frames


def test_missing_objects_are_those_the_index_does_not_name_for_owned_cameras() -> None:
    listed = {
        "veilcam/cam1/00000002.vseg": (10, None),
        "veilcam/cam1/00000001.vseg": (20, None),
        "veilcam/cam2/00000001.vseg": (30, None),
        "veilcam/cam1/notes.txt": (1, None),
        "other/cam1/00000003.vseg": (1, None),
    }
    todo = missing_objects(listed, "veilcam/", {("cam1", "00000002.vseg")}, None)
    assert {c: [m.name for m in ms] for c, ms in todo.items()} == {
        "cam1": ["00000001.vseg"],
        "cam2": ["00000001.vseg"],
    }
    assert list(missing_objects(listed, "veilcam/", set(), {"cam2"})) == ["cam2"]


def test_content_problem_checks_metadata_and_whole_object_checksums() -> None:
    digest = hashlib.sha256(b"segment").digest()

    def state(checksum: str | None, meta: str | None) -> ObjectState:
        return ObjectState(7, checksum, meta, None, None, None)

    assert content_problem(digest, state(base64.b64encode(digest).decode(), digest.hex())) is None
    assert content_problem(digest, state("whatever-3", None)) is None  # multipart: parts' sums
    assert "recorded at upload" in (content_problem(digest, state(None, "00" * 32)) or "")
    assert "checksum" in (content_problem(digest, state("AAAA", None)) or "")


def test_a_lost_index_is_rebuilt_from_the_bucket_once_and_numbering_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cam = Camera()
    bucket, names, frames = _uploaded_then_index_lost(tmp_path, cam)
    caplog.set_level(logging.INFO, "veilcam.archive")
    archive = Archive(tmp_path / "old", segment_max_bytes=2**16, objects=bucket)  # type: ignore[arg-type]
    assert [s.name for s in archive.segments_of("cam1")] == names
    remote = [s for s in archive.segments_of("cam1") if s.location == "s3"]
    assert len(remote) == len(names) - 1
    first = remote[0]
    assert first.object_key == f"veilcam/cam1/{first.name}" and first.retain_until_us
    row = archive.db.execute(
        "SELECT sha256, lock_mode, version_id FROM segments WHERE id=?", (first.segment_id,)
    ).fetchone()
    data = bucket.objects[first.object_key]
    assert row == (hashlib.sha256(data).digest(), "GOVERNANCE", "v-" + first.name[4:8])
    assert archive.frames_from("cam1", 0, None, 100) == frames
    assert f"camera cam1: {len(names) - 1} segment(s) indexed" in caplog.text
    archive.close()
    # a second start finds nothing to do; new segments are numbered after the bucket's
    caplog.clear()
    archive = Archive(tmp_path / "old", segment_max_bytes=2**16, objects=bucket)  # type: ignore[arg-type]
    assert "index rebuild" not in caplog.text
    for _ in range(30):
        archive.append_frame(cam.frame())
    archive.commit()
    after = [s.name for s in archive.segments_of("cam1")]
    assert after[: len(names)] == names and len(after) > len(names) == len(set(names))
    assert len(set(after)) == len(after)
    archive.close()


def test_a_fresh_store_rebuilds_and_a_damaged_object_is_left_out_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cam = Camera()
    bucket, names, frames = _uploaded_then_index_lost(tmp_path, cam)
    keys = sorted(bucket.objects)
    flipped = bytearray(bucket.objects[keys[1]])
    flipped[-10] ^= 0xFF
    bucket.put(keys[1], bytes(flipped), meta=False)  # altered, no metadata: only the CRC says
    bucket.put(keys[2], b"garbage" * 100, meta=False)
    caplog.set_level(logging.INFO, "veilcam.archive")
    # a new machine: no local segments at all
    archive = Archive(tmp_path / "new", segment_max_bytes=2**16, objects=bucket)  # type: ignore[arg-type]
    indexed = [s.name for s in archive.segments_of("cam1")]
    left_out = {keys[1].rsplit("/", 1)[1], keys[2].rsplit("/", 1)[1]}
    assert left_out.isdisjoint(indexed) and keys[0].rsplit("/", 1)[1] in indexed
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
    assert any(keys[1] in e and "corrupt record" in e for e in errors)
    assert any(keys[2] in e and "not a veilcam segment" in e for e in errors)
    assert "2 damaged object(s) left out" in caplog.text
    # no frame of a damaged segment is indexed; the others' are, as they were
    got = archive.frames_from("cam1", 0, None, 100)
    assert all(f in frames for f in got) and 0 < len(got) <= len(frames) - 2
    rebuilt = archive.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
    assert len(got) == rebuilt and f"({rebuilt} frame(s)" in caplog.text
    archive.close()


def test_the_uploader_never_replaces_another_segment_at_its_key(tmp_path: Path) -> None:
    """A store that could not rebuild its lost index (bucket unreachable at start) numbers new
    segments from 1: their upload must not replace the bucket's segments of those names."""
    archive = _segments(tmp_path, Camera(), 5)
    seg = archive.upload_candidates()[0]
    data = seg.path.read_bytes()
    bucket = _Bucket()
    uploader = Uploader(archive, bucket, None, 1)  # type: ignore[arg-type]
    digest, size = hashlib.sha256(data).digest(), len(data)
    key = f"veilcam/cam1/{seg.name}"

    def head(k: str, version_id: str | None = None) -> ObjectState:
        if k not in bucket.objects:
            raise ObjectMissing(f"{k}: 404")
        return _Bucket.head(bucket, k)

    bucket.head = head  # type: ignore[method-assign]
    uploader._refuse_overwrite(key, digest, size)  # nothing there yet
    bucket.put(key, data)
    uploader._refuse_overwrite(key, digest, size)  # the same bytes again: a retried upload
    for other, meta in ((data[:-1] + b"x", True), (b"older evidence", False)):
        bucket.put(key, other, meta=meta)
        with pytest.raises(ObjectStoreError, match="already holds another segment"):
            uploader._refuse_overwrite(key, digest, size)
    assert bucket.objects[key] == b"older evidence"
    archive.close()


def test_a_store_rebuilds_only_the_cameras_it_owns(tmp_path: Path) -> None:
    bucket, names, _ = _uploaded_then_index_lost(tmp_path, Camera())
    archive = Archive(tmp_path / "b", segment_max_bytes=2**16, objects=bucket, cameras={"cam2"})  # type: ignore[arg-type]
    assert archive.segments_of("cam1") == []  # another store's camera: its rows are its own
    archive.close()
    archive = Archive(tmp_path / "a", segment_max_bytes=2**16, objects=bucket, cameras={"cam1"})  # type: ignore[arg-type]
    assert [s.name for s in archive.segments_of("cam1")] == names[:-1]
    archive.close()
