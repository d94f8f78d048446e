"""Closed segments in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, SeaweedFS), through
boto3: the one place that speaks S3.

What the rest of the store sees: ``ObjectStore.upload`` (a segment file to an object, checked by
the server against our SHA-256 and confirmed by a HEAD before anyone drops the local copy),
``read_range`` (records by byte range, for playback, RANGE, LIVE and export), ``download`` (the
whole object, for ``veilcam verify``), ``delete`` (retention; refused while an Object Lock
holds) and ``lock_state``. Every failure is an ``ObjectStoreError`` with a one-line message that
names the bucket and key and never a secret; ``ObjectStoreUnreachable`` marks the ones worth
retrying (no connection, timeouts, 5xx).

Segment bytes are uploaded unchanged: an object is byte for byte the segment file it was made
from (docs/FORMAT.md), so every offset the index holds is valid in the object too.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from veilcam.common.config import S3Section
from veilcam.common.errors import ArchiveError, ConfigError
from veilcam.common.home import Home
from veilcam.common.urls import redact_text, redact_url
from veilcam.store_node.secretfile import read_secret_file

log = logging.getLogger("veilcam.objectstore")

# A segment's lock lasts at least this long after its upload, even when its frames are older
# than the lock period already (a backlog uploaded late): S3 refuses a retain-until date in
# the past, and evidence should not go out unlocked.
MIN_LOCK_AFTER_UPLOAD = timedelta(days=1)
READ_CHUNK = 1 << 20
FAIL_FAST_S = 5.0
META_SHA256 = "veilcam-sha256"  # x-amz-meta-veilcam-sha256: the segment's SHA-256, hex

_UNREACHABLE_CODES = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
}
_MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}


class ObjectStoreError(ArchiveError):
    """A request to the object store failed; the message is safe to log."""


class ObjectStoreUnreachable(ObjectStoreError):
    """No answer (connection refused, timeout) or a server error: try again later."""


class ObjectMissing(ObjectStoreError):
    """The object (or the version the index names) does not exist."""


class ObjectLocked(ObjectStoreError):
    """The object store refused to delete an object (an Object Lock still holds it)."""


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class LockPolicy:
    """Object Lock of uploaded segments: ``mode`` GOVERNANCE or COMPLIANCE, for ``days``."""

    mode: str
    days: float

    def retain_until(self, newest_capture_us: int, now: datetime) -> datetime:
        """Until when a segment whose newest frame was captured at ``newest_capture_us`` is
        locked: that frame's capture time plus the lock period (when retention may delete it),
        but never less than ``MIN_LOCK_AFTER_UPLOAD`` from ``now``. Whole seconds (S3 dates)."""
        until = now + MIN_LOCK_AFTER_UPLOAD
        if newest_capture_us > 0:
            by_age = datetime.fromtimestamp(newest_capture_us / 1e6, UTC) + timedelta(
                days=self.days
            )
            until = max(until, by_age)
        return until.replace(microsecond=0) + timedelta(seconds=1)


def lock_policy(s3: S3Section, retention_max_age_days: float) -> LockPolicy | None:
    """The lock the config asks for (None: off)."""
    if s3.lock_mode == "off":
        return None
    return LockPolicy(s3.lock_mode.upper(), s3.lock_days or retention_max_age_days)


@dataclass(frozen=True)
class StoredObject:
    """A segment as uploaded and confirmed: what the index records."""

    key: str
    size: int
    sha256: bytes
    version_id: str | None
    lock_mode: str | None
    retain_until_us: int | None


@dataclass(frozen=True)
class ObjectState:
    """What a HEAD says about an object."""

    size: int
    checksum_sha256: str | None  # as the server reports it (base64; "...-N" for multipart)
    meta_sha256: str | None  # hex, from our metadata
    version_id: str | None
    lock_mode: str | None
    retain_until: datetime | None
    last_modified: datetime | None = None  # when the object was written (an index rebuild)


def object_key(prefix: str, camera_id: str, segment_name: str) -> str:
    """The key of a camera's segment: ``PREFIX`` + ``CAMERA/NAME`` (``veilcam/cam1/00000003.vseg``):
    the same relative path as the segment file on disk, so keys sort like segments."""
    return f"{prefix}{camera_id}/{segment_name}"


_KEY_TAIL = re.compile(r"^(?P<camera>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})/(?P<name>\d{8,}\.vseg)$")


def parse_object_key(prefix: str, key: str) -> tuple[str, str] | None:
    """(camera, segment name) of a segment's key under ``prefix``; None for anything else."""
    if not key.startswith(prefix):
        return None
    m = _KEY_TAIL.match(key[len(prefix) :])
    return (m["camera"], m["name"]) if m else None


def sha256_b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def composite_checksum(part_digests: list[bytes]) -> str:
    """S3's checksum of a multipart object: SHA-256 of the parts' digests, then ``-N``."""
    return f"{sha256_b64(hashlib.sha256(b''.join(part_digests)).digest())}-{len(part_digests)}"


def file_sha256(path: Path) -> tuple[bytes, int]:
    """SHA-256 digest and size of a file."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(READ_CHUNK), b""):
            digest.update(block)
            size += len(block)
    return digest.digest(), size


def load_credentials(
    s3: S3Section, home_root: Path, environ: Mapping[str, str] | None = None
) -> Credentials:
    """The access key pair from ``s3.credentials_file`` (``access_key_id = ...`` and
    ``secret_access_key = ...`` lines; must not be readable by group or others) or else from
    the environment variables the config names. A ``ConfigError`` names what is missing,
    never a value."""
    env = os.environ if environ is None else environ
    if s3.credentials_file:
        path, text = read_secret_file("archive.s3.credentials_file", s3.credentials_file, home_root)
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                values[key.strip()] = value.strip().strip('"')
        missing = [k for k in ("access_key_id", "secret_access_key") if not values.get(k)]
        if missing:
            raise ConfigError(
                f"archive.s3.credentials_file {path}: no {' and no '.join(missing)} line"
            )
        return Credentials(values["access_key_id"], values["secret_access_key"])
    key_id, secret = env.get(s3.access_key_id_env, ""), env.get(s3.secret_access_key_env, "")
    if not (key_id and secret):
        unset = [
            n
            for n, v in ((s3.access_key_id_env, key_id), (s3.secret_access_key_env, secret))
            if not v
        ]
        raise ConfigError(
            "archive backend 's3' needs credentials: set archive.s3.credentials_file, or the "
            f"environment variable(s) {', '.join(unset)}"
        )
    return Credentials(key_id, secret)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or str(
        response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


class ObjectStore:
    """One bucket (and key prefix) of an S3-compatible object store."""

    def __init__(self, s3: S3Section, credentials: Credentials) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = s3.bucket
        self.prefix = s3.key_prefix
        self.endpoint = s3.endpoint_url
        self.part_size = s3.multipart_mb * 2**20
        self._unreachable_at = 0.0  # monotonic time of the last "no answer" (0: none since)
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=s3.endpoint_url or None,
            region_name=s3.region,
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            config=Config(
                connect_timeout=s3.timeout_s,
                read_timeout=s3.timeout_s,
                retries={"max_attempts": 1},  # the uploader retries, with its own backoff
                s3={"addressing_style": "path" if s3.endpoint_url else "auto"},
                # checksums we choose (SHA-256), not the SDK's default CRC trailers that
                # several S3-compatible servers do not take
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def describe(self) -> str:
        where = redact_url(self.endpoint) if self.endpoint else "AWS S3"
        return f"s3://{self.bucket}/{self.prefix} at {where}"

    def key(self, camera_id: str, segment_name: str) -> str:
        return object_key(self.prefix, camera_id, segment_name)

    # ------------------------------------------------------------------ errors
    def _fail(self, exc: Exception, what: str) -> ObjectStoreError:
        """``exc`` from boto3 as one of our errors, its text redacted."""
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = _error_code(exc)
            message = redact_text(str(exc.response.get("Error", {}).get("Message", "")) or code)
            text = f"object store {self.describe()}: {what}: {code}: {message}"
            if code in _MISSING_CODES:
                return ObjectMissing(text)
            if code in _UNREACHABLE_CODES:
                return ObjectStoreUnreachable(text)
            return ObjectStoreError(text)
        if isinstance(exc, BotoCoreError):
            return ObjectStoreUnreachable(
                f"object store {self.describe()} unreachable: {what}: {redact_text(str(exc))}"
            )
        return ObjectStoreError(f"object store {self.describe()}: {what}: {redact_text(str(exc))}")

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = fn(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            err = self._fail(exc, what)
            if isinstance(err, ObjectStoreUnreachable):
                self._unreachable_at = time.monotonic()
            raise err from None
        self._unreachable_at = 0.0
        return reply

    # ------------------------------------------------------------------ bucket
    def check_bucket(self, lock_required: bool) -> None:
        """The bucket exists and takes our credentials; with ``lock_required``, it has Object
        Lock enabled (which S3 allows only at bucket creation). Raises ObjectStoreError with
        what to fix; ObjectStoreUnreachable when no answer came."""
        self._call("checking the bucket", self.client.head_bucket)
        if not lock_required:
            return
        try:
            conf = self._call(
                "reading the bucket's Object Lock configuration",
                self.client.get_object_lock_configuration,
            )
        except ObjectStoreUnreachable:
            raise
        except ObjectStoreError as exc:
            raise ObjectStoreError(
                f"bucket {self.bucket!r} has no Object Lock, but archive.s3.lock_mode asks for "
                f"it: create the bucket with Object Lock enabled ({exc})"
            ) from None
        enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise ObjectStoreError(
                f"bucket {self.bucket!r} has no Object Lock enabled, but archive.s3.lock_mode "
                "asks for it: create the bucket with Object Lock enabled"
            )

    # ------------------------------------------------------------------ writing
    def upload(
        self,
        path: Path,
        key: str,
        sha256: bytes,
        size: int,
        lock: tuple[str, datetime] | None = None,
    ) -> StoredObject:
        """Upload the file at ``path`` (``size`` bytes, SHA-256 ``sha256``) to ``key``, with
        the server checking a SHA-256 checksum of every request body; multipart past the part
        size. Returns once a HEAD confirms the object's size and checksum (raises otherwise)."""
        extra: dict[str, Any] = {"Metadata": {META_SHA256: sha256.hex()}}
        if lock is not None:
            extra["ObjectLockMode"], extra["ObjectLockRetainUntilDate"] = lock
        if size > self.part_size:
            expected, version = self._upload_parts(path, key, size, extra)
        else:
            with open(path, "rb") as fh:
                reply = self._call(
                    f"uploading {key}",
                    self.client.put_object,
                    Key=key,
                    Body=fh,
                    ContentLength=size,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=sha256_b64(sha256),
                    **extra,
                )
            expected, version = sha256_b64(sha256), reply.get("VersionId")
        state = self.head(key, version)
        if state.size != size:
            raise ObjectStoreError(f"{key}: uploaded {size} bytes, the object holds {state.size}")
        if state.checksum_sha256 is not None and state.checksum_sha256 != expected:
            raise ObjectStoreError(f"{key}: the object's SHA-256 is not the segment's")
        if state.meta_sha256 is not None and state.meta_sha256 != sha256.hex():
            raise ObjectStoreError(f"{key}: the object's recorded SHA-256 is not the segment's")
        until_us = (
            int(state.retain_until.timestamp() * 1e6)
            if state.retain_until is not None
            else (int(lock[1].timestamp() * 1e6) if lock is not None else None)
        )
        return StoredObject(
            key,
            size,
            sha256,
            version or state.version_id,
            state.lock_mode or (lock[0] if lock else None),
            until_us,
        )

    def _upload_parts(
        self, path: Path, key: str, size: int, extra: dict[str, Any]
    ) -> tuple[str, str | None]:
        """A multipart upload, each part with its SHA-256 checked by the server; aborted on
        failure so no half-made upload is left to bill. Returns (composite checksum, version)."""
        upload_id = self._call(
            f"starting the multipart upload of {key}",
            self.client.create_multipart_upload,
            Key=key,
            ChecksumAlgorithm="SHA256",
            **extra,
        )["UploadId"]
        parts: list[dict[str, Any]] = []
        digests: list[bytes] = []
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(self.part_size):
                    digest = hashlib.sha256(chunk).digest()
                    number = len(parts) + 1
                    reply = self._call(
                        f"uploading part {number} of {key}",
                        self.client.upload_part,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=sha256_b64(digest),
                    )
                    parts.append(
                        {
                            "PartNumber": number,
                            "ETag": reply["ETag"],
                            "ChecksumSHA256": sha256_b64(digest),
                        }
                    )
                    digests.append(digest)
            reply = self._call(
                f"completing the multipart upload of {key}",
                self.client.complete_multipart_upload,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the original failure is what matters
                pass
            raise
        return composite_checksum(digests), reply.get("VersionId")

    def delete(self, key: str, version_id: str | None) -> None:
        """Delete the object version the index names (in a versioned bucket, deleting the key
        alone would only hide it behind a delete marker). Raises ObjectLocked when refused;
        an object already gone counts as deleted."""
        kwargs: dict[str, Any] = {"Key": key}
        if version_id and version_id != "null":
            kwargs["VersionId"] = version_id
        try:
            self._call(f"deleting {key}", self.client.delete_object, **kwargs)
        except ObjectMissing:
            return
        except ObjectStoreUnreachable:
            raise
        except ObjectStoreError as exc:
            raise ObjectLocked(str(exc)) from None

    # ------------------------------------------------------------------ reading
    def head(self, key: str, version_id: str | None = None) -> ObjectState:
        kwargs: dict[str, Any] = {"Key": key, "ChecksumMode": "ENABLED"}
        if version_id and version_id != "null":
            kwargs["VersionId"] = version_id
        h = self._call(f"reading the state of {key}", self.client.head_object, **kwargs)
        return ObjectState(
            size=int(h.get("ContentLength", 0)),
            checksum_sha256=h.get("ChecksumSHA256"),
            meta_sha256=(h.get("Metadata") or {}).get(META_SHA256),
            version_id=h.get("VersionId"),
            lock_mode=h.get("ObjectLockMode"),
            retain_until=h.get("ObjectLockRetainUntilDate"),
            last_modified=h.get("LastModified"),
        )

    def read_range(
        self, key: str, offset: int, length: int, version_id: str | None = None
    ) -> bytes:
        """``length`` bytes of the object from ``offset`` (one ``Range: bytes=a-b`` GET).
        Reads run in the store's loop: for ``FAIL_FAST_S`` after the object store last failed
        to answer (any request, uploads included), they fail at once instead of waiting for a
        timeout again, so a viewer asking for old video cannot stall ingest."""
        since = time.monotonic() - self._unreachable_at
        if self._unreachable_at and since < FAIL_FAST_S:
            raise ObjectStoreUnreachable(
                f"object store {self.describe()} did not answer {since:.0f} s ago; {key} is not "
                "on local disk (try again shortly)"
            )
        kwargs: dict[str, Any] = {"Key": key, "Range": f"bytes={offset}-{offset + length - 1}"}
        if version_id and version_id != "null":
            kwargs["VersionId"] = version_id
        reply = self._call(f"reading {key} at {offset}", self.client.get_object, **kwargs)
        try:
            data = reply["Body"].read()
        except Exception as exc:  # noqa: BLE001 - a connection lost mid-body
            raise self._fail(exc, f"reading {key} at {offset}") from None
        if len(data) != length:
            raise ObjectStoreError(
                f"{key}: {length} bytes asked at offset {offset}, {len(data)} received"
            )
        return bytes(data)

    def download(self, key: str, out: BinaryIO, version_id: str | None = None) -> bytes:
        """The whole object into ``out``; returns its SHA-256 digest."""
        kwargs: dict[str, Any] = {"Key": key}
        if version_id and version_id != "null":
            kwargs["VersionId"] = version_id
        reply = self._call(f"reading {key}", self.client.get_object, **kwargs)
        digest = hashlib.sha256()
        try:
            for block in iter(lambda: reply["Body"].read(READ_CHUNK), b""):
                digest.update(block)
                out.write(block)
        except Exception as exc:  # noqa: BLE001 - a connection lost mid-body
            raise self._fail(exc, f"reading {key}") from None
        return digest.digest()

    def list_segments(self) -> dict[str, tuple[int, str | None]]:
        """Every segment object under the prefix: key -> (size, None). Bounded by the bucket's
        size; used by ``veilcam verify`` to find objects the index does not name."""
        out: dict[str, tuple[int, str | None]] = {}
        token: dict[str, str] = {}
        while True:
            page = self._call(
                "listing segments", self.client.list_objects_v2, Prefix=self.prefix, **token
            )
            for item in page.get("Contents", []):
                if parse_object_key(self.prefix, item["Key"]) is not None:
                    out[item["Key"]] = (int(item.get("Size", 0)), None)
            if not page.get("IsTruncated"):
                return out
            token = {"ContinuationToken": page["NextContinuationToken"]}


def open_object_store(s3: S3Section, home_root: Path) -> ObjectStore:
    """An ``ObjectStore`` for the config (credentials resolved now). Needs boto3 (the ``s3``
    extra): its absence is a clear ConfigError."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise ConfigError("archive backend 's3' needs boto3: pip install 'veilcam[s3]'") from None
    return ObjectStore(s3, load_credentials(s3, home_root))


def objects_for_home(home: Home) -> ObjectStore | None:
    """The object store a home's store config names (None: ``archive.backend = "local"``),
    for ``veilcam verify`` of that home's archive."""
    from veilcam.common import deployment

    cfg = deployment.store_config(home)
    if cfg.archive.backend != "s3":
        return None
    return open_object_store(cfg.archive.s3, home.root)
