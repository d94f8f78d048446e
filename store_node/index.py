"""The archive's index behind one seam: SQLite (embedded, the default) or PostgreSQL (one
database shared by several store nodes, ``[archive] index = "postgres"``).

``store_node.archive`` writes its SQL once, in the dialect both engines read (``?``
placeholders, ``ON CONFLICT DO NOTHING``, ``"offset"`` quoted: a reserved word in PostgreSQL),
and runs it through an ``IndexDb``: ``SqliteIndex`` hands it to ``sqlite3`` as is,
``PostgresIndex`` turns the placeholders into psycopg's and every driver error into an
``IndexUnavailable`` (an ``ArchiveError``: one line, the DSN's password redacted). What differs
between the engines is only what this module says: the column types of the schema, where the
schema version is kept (``PRAGMA user_version`` in SQLite; the one row of ``veilcam_schema``
in PostgreSQL), how the columns of a table are listed, and the lock that keeps two stores
starting together from migrating the same database at once (``ensure_schema``, shared).

The schema is the same in both (docs/FORMAT.md, "The archive index"); version 2.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from veilcam.common.config import PostgresSection, StoreConfig
from veilcam.common.errors import ArchiveError, ConfigError
from veilcam.common.urls import redact_text
from veilcam.store_node.secretfile import read_secret_file

log = logging.getLogger("veilcam.archive")

# Version of the index schema: 0 is the unversioned first schema, whose ``frames`` table had
# no ``keyframe`` column; 1 adds it; 2 adds where each segment lives (``segments.location``
# and the object's key, version, size, SHA-256 and lock) (ensure_schema).
SCHEMA_VERSION = 2
# segments columns of schema 2, added by ensure_schema to indexes of every earlier version
SEGMENT_COLUMNS_V2 = (
    ("location", "{text} NOT NULL DEFAULT 'local'"),
    ("object_key", "{text}"),
    ("version_id", "{text}"),
    ("size", "{int}"),
    ("sha256", "{blob}"),
    ("lock_mode", "{text}"),
    ("retain_until_us", "{int}"),
    ("uploaded_us", "{int}"),
)
# the tables of schema 1 (version 2 adds columns to segments); {id} {int} {blob} {text}: the
# engine's types (SqliteIndex.TYPES, PostgresIndex.TYPES)
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS segments (
    id {id}, camera {text} NOT NULL, name {text} NOT NULL, UNIQUE(camera, name))""",
    """CREATE TABLE IF NOT EXISTS frames (
    camera {text} NOT NULL, seq {int} NOT NULL, capture_us {int} NOT NULL,
    epoch {blob} NOT NULL, digest {blob} NOT NULL, segment_id {int} NOT NULL,
    "offset" {int} NOT NULL, length {int} NOT NULL, keyframe INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (camera, seq))""",
    "CREATE INDEX IF NOT EXISTS frames_time ON frames (camera, capture_us)",
    """CREATE TABLE IF NOT EXISTS envelopes (
    camera {text} NOT NULL, epoch {blob} NOT NULL, created_us {int} NOT NULL,
    first_seq {int} NOT NULL, segment_id {int} NOT NULL, "offset" {int} NOT NULL,
    length {int} NOT NULL, PRIMARY KEY (camera, epoch, segment_id))""",
)
# after the migration (the column must exist first)
SCHEMA_INDEXES = (
    "CREATE INDEX IF NOT EXISTS frames_keyframe_time ON frames (camera, keyframe, capture_us, seq)",
    "CREATE INDEX IF NOT EXISTS frames_segment ON frames (segment_id)",
)


class IndexUnavailable(ArchiveError):
    """The index database failed a statement or cannot be reached (PostgreSQL); one line,
    nothing secret in it."""


class IndexDb:
    """One connection to the archive's index. ``execute`` takes the archive's SQL (``?``
    placeholders) and returns a cursor (``fetchone``, ``fetchall``, iteration, ``rowcount``).
    Transactions are explicit: ``begin`` ... ``commit`` (or ``rollback``); a statement outside
    one commits by itself."""

    dialect = ""
    TYPES: Mapping[str, str] = {}
    conn: Any  # the driver's connection (tests and benches read SQLite's directly)

    @property
    def where(self) -> str:
        """The index as it may be shown (a path, or the DSN with any password redacted)."""
        raise NotImplementedError

    @property
    def shared(self) -> bool:
        """True when other stores may write to the same index (their cameras' rows)."""
        return False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def begin(self) -> None:
        self.execute("BEGIN")

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()

    def insert_segment(self, camera_id: str, name: str) -> int:
        """Add a segment row; its id."""
        row = self.execute(
            "INSERT INTO segments (camera, name) VALUES (?, ?) RETURNING id", (camera_id, name)
        ).fetchone()
        return int(row[0])

    # schema bookkeeping (ensure_schema)
    def lock_schema(self) -> None:
        """Within the migration's transaction: keep other stores from migrating at once."""

    def schema_version(self) -> int:
        raise NotImplementedError

    def set_schema_version(self, version: int) -> None:
        raise NotImplementedError

    def columns(self, table: str) -> set[str]:
        raise NotImplementedError


class SqliteIndex(IndexDb):
    """``index.sqlite3`` in the archive folder: WAL, ``synchronous=FULL``; one store."""

    dialect = "sqlite"
    TYPES = {"id": "INTEGER PRIMARY KEY", "int": "INTEGER", "blob": "BLOB", "text": "TEXT"}

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")

    @property
    def where(self) -> str:
        return str(self.path)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, params)

    def insert_segment(self, camera_id: str, name: str) -> int:
        rowid = self.conn.execute(
            "INSERT INTO segments (camera, name) VALUES (?, ?)", (camera_id, name)
        ).lastrowid
        assert rowid is not None  # an INSERT sets it
        return int(rowid)

    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self.conn.execute(f"PRAGMA user_version = {int(version)}")

    def columns(self, table: str) -> set[str]:
        return {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}


# pg_advisory_xact_lock key of the schema migration ("veilcam" in ASCII, as a bigint)
_MIGRATION_LOCK = int.from_bytes(b"veilcam\0", "big") >> 1


class PostgresIndex(IndexDb):
    """A PostgreSQL database shared by several stores (psycopg 3, autocommit with explicit
    transactions). Text columns sort in the C collation, as SQLite's do."""

    dialect = "postgres"
    TYPES = {
        "id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "int": "BIGINT",
        "blob": "BYTEA",
        "text": 'TEXT COLLATE "C"',
    }

    def __init__(self, dsn: str, password: str | None = None, connect_timeout_s: float = 10):
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "archive index 'postgres' needs psycopg: pip install 'veilcam[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._dsn = dsn
        self._password = password
        self._sql: dict[str, str] = {}
        kwargs: dict[str, Any] = {"connect_timeout": max(1, round(connect_timeout_s))}
        if password:
            kwargs["password"] = password
        try:
            self.conn = psycopg.connect(dsn, autocommit=True, **kwargs)
        except psycopg.Error as exc:
            raise IndexUnavailable(
                f"cannot connect to the archive index {self.where}: {self._clean(exc)}"
            ) from None

    @property
    def where(self) -> str:
        return redact_text(self._dsn) or "(PostgreSQL from the environment)"

    @property
    def shared(self) -> bool:
        return True

    def _clean(self, exc: BaseException) -> str:
        """A driver error as one line, without the password (libpq never prints it; this
        makes sure)."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return redact_text(text)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        query = self._sql.get(sql)
        if query is None:
            query = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        try:
            return self.conn.execute(query, tuple(params))
        except self._psycopg.Error as exc:
            raise IndexUnavailable(f"archive index {self.where}: {self._clean(exc)}") from None

    def lock_schema(self) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))

    def schema_version(self) -> int:
        self.execute("CREATE TABLE IF NOT EXISTS veilcam_schema (version INTEGER NOT NULL)")
        row = self.execute("SELECT MAX(version) FROM veilcam_schema").fetchone()
        return int(row[0] or 0)

    def set_schema_version(self, version: int) -> None:
        self.execute("DELETE FROM veilcam_schema")
        self.execute("INSERT INTO veilcam_schema (version) VALUES (?)", (version,))

    def columns(self, table: str) -> set[str]:
        rows = self.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        ).fetchall()
        return {r[0] for r in rows}


def ensure_schema(db: IndexDb) -> None:
    """Create the tables, or bring an index written by an older veilcam to
    ``SCHEMA_VERSION``, in one transaction (the same steps on both engines). Version 0 -> 1:
    the ``keyframe`` column; every frame such an index holds is a version-1 frame, and every
    version-1 frame is a keyframe (default 1). 1 -> 2: where each segment lives; every
    segment so far is a local file. An index newer than this veilcam is refused."""
    types = db.TYPES
    db.begin()
    try:
        db.lock_schema()
        version = db.schema_version()
        if version > SCHEMA_VERSION:
            raise ArchiveError(
                f"archive index {db.where} has schema version {version}; this veilcam "
                f"knows up to {SCHEMA_VERSION} (upgrade veilcam, or move the index away to "
                "rebuild it from the segments)"
            )
        for statement in SCHEMA:
            db.execute(statement.format(**types))
        if version < SCHEMA_VERSION:
            if "keyframe" not in db.columns("frames"):
                db.execute("ALTER TABLE frames ADD COLUMN keyframe INTEGER NOT NULL DEFAULT 1")
                log.info("archive index: added the keyframe column (schema version 1)")
            present = db.columns("segments")
            for name, decl in SEGMENT_COLUMNS_V2:
                if name not in present:
                    db.execute(f"ALTER TABLE segments ADD COLUMN {name} {decl.format(**types)}")
            db.set_schema_version(SCHEMA_VERSION)
        for statement in SCHEMA_INDEXES:
            db.execute(statement)
    except BaseException:
        db.rollback()
        raise
    db.commit()


# --------------------------------------------------------------------------- opening


def postgres_password(
    pg: PostgresSection, home_root: Path, environ: Mapping[str, str] | None = None
) -> str | None:
    """The database password: the first line of ``pg.password_file`` (owner-only), else the
    environment variable ``pg.password_env``, else None (peer, certificate or ``.pgpass``
    authentication). A ``ConfigError`` names the file, never a value."""
    env = os.environ if environ is None else environ
    if pg.password_file:
        path, text = read_secret_file("archive.postgres.password_file", pg.password_file, home_root)
        lines = text.splitlines()
        password = lines[0].strip() if lines else ""
        if not password:
            raise ConfigError(f"archive.postgres.password_file {path} is empty")
        return password
    return env.get(pg.password_env) or None


def open_index(
    cfg: StoreConfig, archive_root: Path, home_root: Path, environ: Mapping[str, str] | None = None
) -> IndexDb:
    """The index the store config names, connected (the schema is not touched here)."""
    if cfg.archive.index == "postgres":
        pg = cfg.archive.postgres
        return PostgresIndex(
            pg.dsn, postgres_password(pg, home_root, environ), pg.connect_timeout_s
        )
    return SqliteIndex(Path(archive_root) / "index.sqlite3")


def index_for_home(home: Any) -> IndexDb | None:
    """The shared index a home's store config names (None: the archive's own SQLite file),
    connected and at the current schema, for ``veilcam verify`` of that home's archive."""
    from veilcam.common import deployment

    cfg = deployment.store_config(home)
    if cfg.archive.index != "postgres":
        return None
    db = open_index(cfg, deployment.archive_dir(home, cfg), home.root)
    try:
        ensure_schema(db)
    except BaseException:
        db.close()
        raise
    return db
