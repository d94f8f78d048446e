"""The index seam (store_node/index.py) and several stores on one index, in-process: config
validation of ``[archive] index`` / ``[archive.postgres]`` / ``[store] cameras``, the database
password and its redaction, the schema and its migration through the seam on SQLite, and what a
store does with the cameras it does not own (refused at ingest, never retained, not readable
while on the other store's disk). PostgreSQL itself: tests/test_multistore_e2e.py."""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from veilcam.common.config import StoreConfig, load_config
from veilcam.common.errors import ArchiveError, ConfigError
from veilcam.common.format import AckStatus
from veilcam.store_node.archive import Archive, SegmentElsewhere
from veilcam.store_node.index import (
    SCHEMA_VERSION,
    IndexUnavailable,
    PostgresIndex,
    SqliteIndex,
    ensure_schema,
    open_index,
    postgres_password,
)
from veilcam.store_node.ingest import CAMERA_NOT_OWNED, Ingest

from tests.factory import Camera

SECRET = "hunter2-very-secret"


def _store_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "store.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- config


def test_postgres_index_needs_a_dsn(tmp_path: Path) -> None:
    path = _store_toml(tmp_path, '[archive]\nindex = "postgres"\n')
    with pytest.raises(ConfigError, match="index 'postgres' needs archive.postgres.dsn"):
        load_config(path, StoreConfig)


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://veilcam:{SECRET}@db.example/veilcam",
        f"host=db.example user=veilcam password={SECRET}",
        f"postgresql://veilcam@db.example/veilcam?sslmode=require&password={SECRET}",
    ],
)
def test_a_password_in_the_dsn_is_refused_without_being_shown(tmp_path: Path, dsn: str) -> None:
    path = _store_toml(
        tmp_path, f'[archive]\nindex = "postgres"\n\n[archive.postgres]\ndsn = "{dsn}"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, StoreConfig)
    message = str(err.value)
    assert "archive.postgres.dsn" in message and "holds a password" in message
    assert SECRET not in message and len(message.splitlines()) == 1


def test_store_cameras_are_camera_ids_listed_once(tmp_path: Path) -> None:
    ok = load_config(_store_toml(tmp_path, '[store]\ncameras = ["cam1", "door.2"]\n'), StoreConfig)
    assert ok.store.cameras == ["cam1", "door.2"]
    assert load_config(_store_toml(tmp_path, ""), StoreConfig).store.cameras == []
    for bad, why in (('["cam 1"]', "not a camera id"), ('["cam1", "cam1"]', "listed twice")):
        with pytest.raises(ConfigError, match=why):
            load_config(_store_toml(tmp_path, f"[store]\ncameras = {bad}\n"), StoreConfig)


# --------------------------------------------------------------------------- the password


def _pg_config(**postgres: str) -> StoreConfig:
    section = {"dsn": "postgresql://veilcam@127.0.0.1:1/veilcam", **postgres}
    return StoreConfig.model_validate({"archive": {"index": "postgres", "postgres": section}})


def test_the_password_comes_from_an_owner_only_file_or_the_environment(tmp_path: Path) -> None:
    pw = tmp_path / "pg.password"
    pw.write_text(SECRET + "\n")
    pw.chmod(0o600)
    pg = _pg_config(password_file="pg.password").archive.postgres
    assert postgres_password(pg, tmp_path, {}) == SECRET
    pw.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others") as err:
        postgres_password(pg, tmp_path, {})
    assert SECRET not in str(err.value)
    pw.chmod(0o600)
    pw.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        postgres_password(pg, tmp_path, {})
    env_pg = _pg_config(password_env="MY_PG_PW").archive.postgres
    assert postgres_password(env_pg, tmp_path, {"MY_PG_PW": SECRET}) == SECRET
    assert postgres_password(env_pg, tmp_path, {}) is None  # peer/certificate/.pgpass


def test_an_unreachable_database_is_one_line_naming_it_without_the_password(
    tmp_path: Path,
) -> None:
    pytest.importorskip("psycopg")
    cfg = _pg_config(connect_timeout_s="2")  # port 1 on loopback: refused at once
    with pytest.raises(IndexUnavailable) as err:
        open_index(cfg, tmp_path, tmp_path, {"VEILCAM_PG_PASSWORD": SECRET})
    message = str(err.value)
    assert message.startswith(
        "cannot connect to the archive index postgresql://veilcam@127.0.0.1:1"
    )
    assert SECRET not in message and "\n" not in message
    assert isinstance(err.value, ArchiveError)  # the store and the CLI show it as one line


def test_a_dsn_is_shown_redacted(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    # even a DSN that carries a password (not from our config: the environment's libpq
    # variables or a hand-built one) is never shown with it
    with pytest.raises(IndexUnavailable) as err:
        PostgresIndex(f"postgresql://veilcam:{SECRET}@127.0.0.1:1/veilcam", None, 2)
    assert SECRET not in str(err.value) and "veilcam:***@127.0.0.1:1" in str(err.value)


# --------------------------------------------------------------------------- the seam (SQLite)


def test_the_schema_through_the_seam_is_versioned_and_idempotent(tmp_path: Path) -> None:
    db = SqliteIndex(tmp_path / "index.sqlite3")
    ensure_schema(db)
    ensure_schema(db)  # a second start: nothing to do, nothing broken
    assert db.schema_version() == SCHEMA_VERSION == 2
    assert {"location", "object_key", "sha256", "retain_until_us"} <= db.columns("segments")
    assert "keyframe" in db.columns("frames")
    assert not db.shared and db.where == str(tmp_path / "index.sqlite3")
    seg = db.insert_segment("cam1", "00000001.vseg")
    assert db.insert_segment("cam1", "00000002.vseg") == seg + 1
    db.set_schema_version(SCHEMA_VERSION + 1)
    with pytest.raises(ArchiveError, match=f"schema version {SCHEMA_VERSION + 1}"):
        ensure_schema(db)
    db.close()


def test_a_schema_0_index_is_migrated_through_the_seam(tmp_path: Path) -> None:
    raw = sqlite3.connect(tmp_path / "index.sqlite3")
    raw.executescript(
        "CREATE TABLE segments (id INTEGER PRIMARY KEY, camera TEXT NOT NULL, "
        "name TEXT NOT NULL, UNIQUE(camera, name));"
        "CREATE TABLE frames (camera TEXT NOT NULL, seq INTEGER NOT NULL, capture_us INTEGER "
        "NOT NULL, epoch BLOB NOT NULL, digest BLOB NOT NULL, segment_id INTEGER NOT NULL, "
        "offset INTEGER NOT NULL, length INTEGER NOT NULL, PRIMARY KEY (camera, seq));"
        "INSERT INTO segments VALUES (1, 'cam1', '00000001.vseg');"
        "INSERT INTO frames VALUES ('cam1', 0, 5, x'00', x'01', 1, 10, 20);"
    )
    raw.close()
    db = SqliteIndex(tmp_path / "index.sqlite3")
    ensure_schema(db)
    assert db.schema_version() == SCHEMA_VERSION
    assert db.execute("SELECT keyframe FROM frames").fetchall() == [(1,)]
    assert db.execute("SELECT location FROM segments").fetchall() == [("local",)]
    db.close()


# --------------------------------------------------------------------------- several stores


def _two_stores(tmp_path: Path, **kw) -> tuple[Archive, Archive]:
    """Two stores' archives on one index (an SQLite file standing for the shared database:
    the same SQL through the same seam), A owning cam1, B owning cam3."""
    shared = tmp_path / "shared.sqlite3"

    class SharedSqlite(SqliteIndex):
        @property
        def shared(self) -> bool:
            return True

    a = Archive(tmp_path / "a", index=SharedSqlite(shared), cameras=["cam1"], **kw)
    b = Archive(tmp_path / "b", index=SharedSqlite(shared), cameras=["cam3"], **kw)
    return a, b


def _record(archive: Archive, cam: Camera, frames: int) -> None:
    archive.append_envelope(cam.envelope())
    for _ in range(frames):
        archive.append_frame(cam.frame())
    archive.commit()


def test_a_store_refuses_frames_of_a_camera_it_does_not_own(tmp_path: Path) -> None:
    cam = Camera("cam3")
    archive = Archive(tmp_path / "a", cameras=["cam1"])
    rejects: Counter[str] = Counter()
    reason = "this store does not own camera 'cam3'"
    ingest = Ingest(archive, cam.trust, rejects, owns=lambda c: None if c == "cam1" else reason)
    out = ingest.take(cam.frame().to_parts(), "camera:cam3")
    assert out.reply_now is not None and out.reply_now.status == AckStatus.REJECTED
    assert reason in out.reply_now.reason and not out.relay
    assert rejects == Counter({CAMERA_NOT_OWNED: 1})
    assert (
        archive.last_frame("cam3") is None and not (tmp_path / "a" / "segments" / "cam3").exists()
    )
    archive.close()


def test_any_store_reads_the_index_of_every_camera(tmp_path: Path) -> None:
    a, b = _two_stores(tmp_path)
    cam1, cam3 = Camera("cam1"), Camera("cam3")
    _record(a, cam1, 4)
    _record(b, cam3, 6)
    # coverage and span come from the shared index: any store answers them
    assert a.time_range("cam3")[2] == 6 and b.time_range("cam1")[2] == 4
    assert sum(a.coverage("cam3", 0, 2**62, 3)) == 6
    assert set(a.last_frames()) == {"cam1", "cam3"}
    # cam3's segment is on B's disk, not uploaded: A says so instead of failing obscurely
    with pytest.raises(SegmentElsewhere, match="on the disk of the store that owns camera cam3"):
        a.frames_from("cam3", 0, None, 10)
    assert len(b.frames_from("cam3", 0, None, 10)) == 6
    a.close()
    b.close()


def test_retention_and_uploads_touch_only_the_cameras_a_store_owns(tmp_path: Path) -> None:
    a, b = _two_stores(tmp_path, segment_max_bytes=2**16)
    cam1, cam3 = Camera("cam1"), Camera("cam3")
    _record(a, cam1, 6)
    _record(b, cam3, 6)
    b_segments = [s.name for s in b.segments_of("cam3")]
    assert len(b_segments) >= 3  # closed segments a careless store would retain or upload
    assert {s.camera for s in a.upload_candidates()} == {"cam1"}
    deleted = a.apply_retention(1e-9, 0, 0, 2**62)  # everything past its age
    assert deleted and all(p.parent.name == "cam1" for p in deleted)
    assert [s.name for s in b.segments_of("cam3")] == b_segments
    assert all(s.path.exists() for s in b.segments_of("cam3"))
    a.close()
    b.close()


def test_without_a_camera_list_a_shared_store_manages_what_is_on_its_disk(tmp_path: Path) -> None:
    a, b = _two_stores(tmp_path, segment_max_bytes=2**16)
    a.owned = frozenset()  # default: every camera, which with a shared index means its own
    _record(a, Camera("cam1"), 3)
    _record(b, Camera("cam3"), 3)
    assert a._all_cameras() == ["cam1"]
    assert os.path.isdir(tmp_path / "b" / "segments" / "cam3")
    a.close()
    b.close()
