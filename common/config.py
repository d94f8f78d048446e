"""Config files: one typed schema per node, validated on load.

Each section is a pydantic model with ``extra="forbid"``, so an unknown key is an error, and a
description per field, from which docs/CONFIG.md is generated (``veilcam config-docs``).
``load_config`` turns every problem into one ConfigError naming the file, the key and why.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from veilcam.common.errors import ConfigError
from veilcam.common.format import CAMERA_ID_RE, ZoneClass

# a tcp port is 1..65535 (libzmq silently wraps a larger number onto another port)
ZMQ_ENDPOINT_PATTERN = (
    r"^(tcp://[^\s]+:([1-9]\d{0,3}|[1-5]\d{4}|6[0-4]\d{3}|65[0-4]\d{2}"
    r"|655[0-2]\d|6553[0-5])|ipc://[^\s]+|inproc://[^\s]+)$"
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricsSection(Section):
    host: str = Field(
        "127.0.0.1",
        description="Address the Prometheus endpoint listens on. "
        "Keep it on loopback or a management network: it names cameras and "
        "users' counts, not secrets.",
    )
    port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the Prometheus text endpoint "
        "(http://HOST:PORT/metrics); 0 turns it off. Also --metrics-port.",
    )


# --------------------------------------------------------------------------- camera


class CameraSection(Section):
    id: str = Field("cam1", description="Camera id: 1-64 letters, digits, '_', '.', '-'.")
    source: str = Field(
        ...,
        description="What to capture: a device index ('0'), a video file "
        "path (relative to the deployment home), or an rtsp:// or http(s):// URL.",
    )
    loop: bool = Field(False, description="Restart a file source at its end instead of stopping.")
    pace: bool = Field(
        True,
        description="Play file sources at their own frame rate, like a live "
        "camera. Off: as fast as the pipeline goes (tests, batch redaction).",
    )
    fps: float = Field(
        0.0, ge=0, le=240, description="Frame rate to pace a file at; 0 uses the file's own rate."
    )
    max_width: int = Field(
        0,
        ge=0,
        le=7680,
        description="Downscale frames wider than this "
        "before anything else; 0 keeps the source size.",
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp",
        description="How an rtsp:// or rtsps:// camera sends its video: 'tcp' (interleaved in "
        "the RTSP connection: no loss, passes NAT and firewalls) or 'udp' (RTP over UDP: lower "
        "latency on a clean LAN, frames break up when packets are lost).",
    )
    open_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="An RTSP camera that has not answered the connection and the stream set-up "
        "within this many seconds is treated as down (and retried).",
    )
    read_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="An RTSP camera that sends nothing for this many seconds while streaming "
        "is treated as lost (and reconnected).",
    )
    reconnect_max_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="Longest wait between reconnection attempts to a lost RTSP camera; "
        "the wait starts at 1 s and doubles up to this.",
    )
    detect_source: str = Field(
        "",
        description="Optional second, low-resolution stream of the same camera (an rtsp:// URL, "
        "or a video file of the same clip) on which faces are detected instead of the main "
        "frames; zones are scaled to the main frame. Empty: detect on the main frames.",
    )
    detect_tolerance_ms: float = Field(
        50.0,
        ge=0,
        le=1000,
        description="A main frame is detected on the newest detect_source frame captured at or "
        "before it and at most this much earlier; with none, on the main frame itself.",
    )

    @field_validator("id")
    @classmethod
    def _camera_id(cls, value: str) -> str:
        if not CAMERA_ID_RE.match(value):
            raise ValueError(
                "must be 1-64 letters, digits, '_', '.', '-', starting with a letter or digit"
            )
        return value


class StoreLinkSection(Section):
    ingest: str = Field(
        "tcp://127.0.0.1:7700",
        pattern=ZMQ_ENDPOINT_PATTERN,
        description="ZeroMQ endpoint of the store's ingest socket.",
    )
    query: str = Field(
        "tcp://127.0.0.1:7702",
        pattern=ZMQ_ENDPOINT_PATTERN,
        description="ZeroMQ endpoint of the store's query socket (grants).",
    )
    grants_poll_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="How often to ask the store "
        "for grant changes; a change starts a new key epoch.",
    )
    drain_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="At the end of a file "
        "source, how long to wait for the store to acknowledge "
        "every frame before giving up (and exiting non-zero).",
    )
    max_in_flight: int = Field(
        300,
        ge=1,
        le=100000,
        description="Unacknowledged messages kept in memory; more go to the on-disk spool.",
    )
    spool_max_mb: float = Field(
        2048,
        ge=1,
        le=10**6,
        description="Bound of the on-disk spool "
        "(state/spool-CAMERA) that holds frames while the store is "
        "unreachable.",
    )
    drop_policy: Literal["newest", "oldest"] = Field(
        "newest",
        description="When the spool is full: 'newest' drops new frames before they "
        "are signed (the chain stays whole); 'oldest' deletes the oldest spooled ones.",
    )


X264Preset = Literal[
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
]


class EncodingSection(Section):
    video: Literal["jpeg", "h264"] = Field(
        "jpeg",
        description="How frames travel and are archived. 'jpeg' (default): every frame a "
        "JPEG and one encrypted crop per zone (format version 1). 'h264': the public frame as "
        "one H.264 access unit per frame (libx264, no B-frames, a keyframe every keyframe_s) "
        "and one encrypted H.264 stream per zone class (format version 2), about a tenth of "
        "the bytes; every frame is still signed.",
    )
    keyframe_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="H.264: seconds between keyframes (round(keyframe_s * fps) frames). "
        "Decoding, playback and a new live viewer start at a keyframe; a lost frame hides the "
        "picture until the next one.",
    )
    h264_crf: int = Field(
        23,
        ge=0,
        le=51,
        description="H.264: quality of the public stream (x264 CRF; lower is better and larger).",
    )
    h264_max_kbps: int = Field(
        6000,
        ge=0,
        le=1_000_000,
        description="H.264: bitrate cap of the public stream in kbit/s (x264 VBV maxrate and "
        "bufsize); 0: no cap.",
    )
    h264_preset: X264Preset = Field(
        "veryfast",
        description="H.264: x264 speed preset of the public stream (slower presets give fewer "
        "bytes for more CPU).",
    )
    zone_preset: X264Preset = Field(
        "superfast",
        description="H.264: x264 speed preset of the zone streams; they carry every covered "
        "pixel at zone quality, so on a busy scene they cost more CPU than the public stream: "
        "superfast holds 720p30 on 2 cores with a viewer beside it for 5 % more bytes than "
        "veryfast (docs/PERFORMANCE.md).",
    )
    h264_threads: int = Field(
        1,
        ge=1,
        le=16,
        description="H.264: encoder threads per stream. 1 on a 2-core camera (the detector "
        "thread has the other core); more where cores are spare.",
    )
    zone_crf: int = Field(
        19,
        ge=0,
        le=51,
        description="H.264: quality of the zone streams (x264 CRF; the streams are 4:4:4 "
        "without adaptive quantization or psychovisual tuning): 19 keeps 40 dB PSNR or more "
        "inside zones after unlocking (end to end, small moving faces included: 42.0 dB "
        "minimum, tests/test_e2e.py; 1080p crowd, zones of a real run replayed: 40.2 dB "
        "minimum; 20: 41.4 / 39.3 dB for 14 % fewer zone bytes).",
    )
    jpeg_quality: int = Field(90, ge=30, le=100, description="JPEG quality of the public frame.")
    zone_codec: Literal["png", "jpeg", "raw"] = Field(
        "jpeg",
        description="How original zone pixels are encoded before encryption: 'jpeg' "
        "(default: quality 95 without chroma subsampling, about 42-50 dB PSNR, 0.7 ms for a "
        "450x500 zone; zones of 48x48 px or less go as PNG, lossless), 'png' "
        "(lossless, but ~10 ms per such zone: too slow for 1080p30 on 2 cores), 'raw' (BGR "
        "bytes: fastest, largest).",
    )
    zone_jpeg_quality: int = Field(
        95, ge=30, le=100, description="JPEG quality when zone_codec is 'jpeg'."
    )


class KeysSection(Section):
    rotate_seconds: float = Field(
        60.0,
        ge=1,
        le=86400,
        description="Content keys rotate at "
        "every start, on every grant change, and after this many "
        "seconds.",
    )
    post_quantum: bool = Field(
        False,
        description="Wrap epoch keys with the hybrid "
        "ML-KEM-768+X25519 HPKE suite, for archives that must stay "
        "secret against future quantum computers (larger envelopes).",
    )


class RedactionSection(Section):
    style: Literal["solid", "pixelate", "blur", "noise"] = Field(
        "solid",
        description="How zones are made unreadable in the public frame. 'solid' "
        "(default: a flat dark grey) and 'noise' (random pixels) leak nothing. 'pixelate' and "
        "'blur' keep a coarse version of what they cover and can be partly undone: zone "
        "rectangles are public, so frames of a moving face can be aligned and fused into "
        "more detail than one frame shows (tests/test_redaction.py measures it for "
        "pixelate).",
    )
    pixelate_blocks: int = Field(
        8,
        ge=2,
        le=32,
        description="Blocks across the longer side of a zone when pixelating (fewer is coarser).",
    )


class FacesSection(Section):
    enabled: bool = Field(True, description="Detect faces and redact them.")
    backend: Literal["auto", "yunet", "haar"] = Field(
        "auto",
        description="'auto' (or 'yunet'): YuNet, whose model ships with veilcam. "
        "'haar': OpenCV's Haar cascades, which miss more faces; used only when set here, never "
        "as a fallback. If YuNet cannot run, the camera covers whole frames and logs an error.",
    )
    model: str = Field(
        "",
        description="Path of a YuNet ONNX model; a missing or unloadable "
        "file stops the camera. Empty: the model cache ($XDG_CACHE_HOME/veilcam/"
        "models, filled by 'veilcam models fetch'), else the copy shipped with "
        "veilcam (used only if its sha256 is the pinned one).",
    )
    detect_width: int = Field(
        640,
        ge=160,
        le=3840,
        description="Frames are downscaled to this width (INTER_LINEAR) for detection.",
    )
    score_threshold: float = Field(
        0.6, gt=0, lt=1, description="YuNet confidence threshold of the whole-frame pass."
    )
    fine_score_threshold: float = Field(
        0.45,
        gt=0,
        lt=1,
        description="YuNet confidence threshold of the native-resolution passes over changed "
        "cells. Lower than the whole-frame one: they look for small faces, whose score "
        "swings from frame to frame (a 12x15 px face at 1080p: 0.39-0.74 on the same face, "
        "0.56 on the frame it was missed at 0.6 and stayed readable, bench/leaks.py "
        "small1080), and a wrong small box covers little.",
    )
    margin: float = Field(
        0.25,
        ge=0,
        le=2,
        description="Grow each detected box by this share "
        "of its size on every side, to cover hair, ears and box jitter.",
    )
    hold_frames: int = Field(
        15,
        ge=0,
        le=600,
        description="Keep covering a face this many "
        "detections after the detector last saw it (fail closed against "
        "missed detections).",
    )
    max_lag_ms: float = Field(
        400.0,
        ge=10,
        le=10000,
        description="Detection runs in its own "
        "thread; if its latest result is older than this (stalled, "
        "crashed or too slow), whole frames are redacted until it "
        "catches up.",
    )
    small_faces: bool = Field(
        True,
        description="Also scan the frame at native resolution "
        "(YuNet only), cell by cell within the time budget, for faces too "
        "small for the detect_width pass (down to ~10 px). Cells that "
        "changed since their last scan and could not be rescanned in time "
        "are covered whole.",
    )
    detect_share: float = Field(
        0.75,
        gt=0,
        le=4,
        description="Time the detector may spend on "
        "each frame, as a share of the frame interval (coarse pass "
        "included); native-resolution scans use what the coarse pass "
        "leaves. More than 1 only helps with spare cores.",
    )


class StaticZoneSection(Section):
    name: str = Field("", description="A label for logs.")
    rect: tuple[float, float, float, float] = Field(..., description="x, y, width, height.")
    units: Literal["px", "fraction"] = Field(
        "px", description="'px', or 'fraction' of the frame's width and height."
    )
    zone_class: str = Field(
        "static", alias="class", description="Zone class for grants: static, face, person or plate."
    )

    @field_validator("zone_class")
    @classmethod
    def _zone_class(cls, value: str) -> str:
        ZoneClass.from_label(value)
        return value

    @model_validator(mode="after")
    def _rect(self) -> StaticZoneSection:
        x, y, w, h = self.rect
        if not all(math.isfinite(v) for v in self.rect):
            raise ValueError("rect values must be finite numbers")
        if w <= 0 or h <= 0 or x < 0 or y < 0:
            raise ValueError("rect needs x, y >= 0 and width, height > 0")
        if self.units == "fraction" and (x + w > 1 or y + h > 1):
            raise ValueError("a fractional rect must lie within 0..1")
        return self


class CameraConfig(Section):
    camera: CameraSection
    store: StoreLinkSection = StoreLinkSection()
    encoding: EncodingSection = EncodingSection()
    keys: KeysSection = KeysSection()
    redaction: RedactionSection = RedactionSection()
    faces: FacesSection = FacesSection()
    zones: list[StaticZoneSection] = Field(
        default_factory=list, description="Static privacy zones ([[zones]] tables)."
    )
    metrics: MetricsSection = MetricsSection()


# --------------------------------------------------------------------------- store


class StoreSection(Section):
    ingest_bind: str = Field(
        "tcp://127.0.0.1:7700",
        pattern=ZMQ_ENDPOINT_PATTERN,
        description="Where cameras send frames (ROUTER; acknowledged).",
    )
    relay_bind: str = Field(
        "tcp://127.0.0.1:7701",
        pattern=ZMQ_ENDPOINT_PATTERN,
        description="Where viewers subscribe to verified frames (PUB).",
    )
    query_bind: str = Field(
        "tcp://127.0.0.1:7702",
        pattern=ZMQ_ENDPOINT_PATTERN,
        description="Where viewers ask for key envelopes and archive ranges (ROUTER).",
    )
    cameras: list[str] = Field(
        default_factory=list,
        description="Cameras this store owns: it archives only their frames (others are "
        "refused with a reason) and applies retention and uploads to their segments only. "
        "Empty: every camera. Several stores sharing a PostgreSQL index each list their own "
        "(docs/GUIDE.md); any of them answers playback and export for every camera.",
    )

    @field_validator("cameras")
    @classmethod
    def _camera_ids(cls, value: list[str]) -> list[str]:
        for cam in value:
            if not CAMERA_ID_RE.fullmatch(cam):
                raise ValueError(f"{cam!r} is not a camera id (1-64 letters, digits, _ . -)")
        if len(set(value)) != len(value):
            raise ValueError("a camera is listed twice")
        return value


class S3Section(Section):
    endpoint_url: str = Field(
        "",
        description="S3 endpoint (http(s)://HOST:PORT of MinIO, Ceph RGW, SeaweedFS ...); "
        "empty: AWS S3 of the region. Shown with any password redacted.",
    )
    bucket: str = Field(
        "",
        pattern=r"^([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])?$",
        description="Bucket that receives closed segments (required with backend 's3').",
    )
    region: str = Field("us-east-1", description="Region of the bucket (signing).")
    key_prefix: str = Field(
        "veilcam/",
        pattern=r"^([A-Za-z0-9!_.*'()/-]{0,200})$",
        description="Object keys are KEY_PREFIX + CAMERA/SEGMENT (docs/FORMAT.md).",
    )
    credentials_file: str = Field(
        "",
        description="File (relative to the home, owner-only) with two lines: "
        "'access_key_id = ...' and 'secret_access_key = ...'. Empty: the environment "
        "variables below.",
    )
    access_key_id_env: str = Field(
        "VEILCAM_S3_ACCESS_KEY_ID",
        description="Environment variable holding the access key id.",
    )
    secret_access_key_env: str = Field(
        "VEILCAM_S3_SECRET_ACCESS_KEY",
        description="Environment variable holding the secret access key (never logged).",
    )
    lock_mode: Literal["off", "governance", "compliance"] = Field(
        "off",
        description="Object Lock of every uploaded segment: 'governance' (users with the "
        "bypass permission can still delete early), 'compliance' (nobody can, not even the "
        "bucket's root account), or 'off'. The bucket must have Object Lock enabled.",
    )
    lock_days: float = Field(
        0,
        ge=0,
        le=36500,
        description="Lock each segment until its newest frame is this many days old (at "
        "least one day after its upload); 0: retention.max_age_days.",
    )
    multipart_mb: int = Field(
        64,
        ge=5,
        le=5000,
        description="Segments larger than this are uploaded in parts of this size.",
    )
    retry_max_s: float = Field(
        60,
        ge=1,
        le=3600,
        description="Upload retries back off 1, 2, 4 ... seconds up to this.",
    )
    timeout_s: float = Field(
        10,
        gt=0,
        le=300,
        description="Connect and read timeout of each request to the object store.",
    )


# a password written into the DSN itself (URL user info, or a password= key or parameter)
_DSN_PASSWORD = re.compile(r"://[^/@\s:]*:[^/@\s]*@|(^|[\s?&])password\s*=", re.IGNORECASE)


class PostgresSection(Section):
    dsn: str = Field(
        "",
        description="libpq connection URL or key=value string of the shared index, without "
        "a password (e.g. 'postgresql://veilcam@db.example:5432/veilcam?sslmode=verify-full'); "
        "required with index 'postgres'. Shown with any password redacted.",
    )
    password_file: str = Field(
        "",
        description="File (relative to the home, owner-only) holding the database password "
        "on its first line. Empty: the environment variable below (or none: peer, "
        "certificate or .pgpass authentication).",
    )
    password_env: str = Field(
        "VEILCAM_PG_PASSWORD",
        description="Environment variable holding the database password (never logged).",
    )
    connect_timeout_s: float = Field(
        10, gt=0, le=300, description="Timeout of connecting to the database."
    )

    @field_validator("dsn")
    @classmethod
    def _no_password(cls, value: str) -> str:
        if _DSN_PASSWORD.search(value):
            raise ValueError(
                "holds a password: keep it out of the config (archive.postgres.password_file "
                "or the environment variable archive.postgres.password_env names)"
            )
        return value


class ArchiveSection(Section):
    path: str = Field("archive", description="Archive folder, relative to the home.")
    backend: Literal["local", "s3"] = Field(
        "local",
        description="Where closed segments live: 'local' (the archive folder) or 's3' "
        "([archive.s3]: uploaded in the background, then removed locally; the open segment "
        "and the index stay local).",
    )
    segment_max_bytes: int = Field(
        256 * 2**20,
        ge=2**16,
        le=2**40,
        description="A segment file is closed past this size, at the next keyframe (so segments, and retention, hold whole groups of pictures; every JPEG frame is a keyframe), or past 4x this size whatever comes.",
    )
    fsync_max_records: int = Field(
        30, ge=1, le=10000, description="fsync (and acknowledge) after at most this many records..."
    )
    fsync_max_delay_ms: float = Field(
        50.0, gt=0, le=10000, description="...or after this long, whichever comes first."
    )
    index: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="The archive's index: 'sqlite' (index.sqlite3 in the archive folder, "
        "embedded) or 'postgres' ([archive.postgres]: one database shared by several stores, "
        "each owning some cameras, store.cameras).",
    )
    s3: S3Section = S3Section()
    postgres: PostgresSection = PostgresSection()

    @model_validator(mode="after")
    def _s3(self) -> ArchiveSection:
        if self.backend == "s3" and not self.s3.bucket:
            raise ValueError("backend 's3' needs archive.s3.bucket")
        if self.index == "postgres" and not self.postgres.dsn:
            raise ValueError("index 'postgres' needs archive.postgres.dsn")
        return self


class RetentionSection(Section):
    max_age_days: float = Field(
        30,
        ge=0,
        le=36500,
        description="Delete a camera's closed "
        "segments whose newest frame is older than this; 0 keeps "
        "them forever (then only max_gb_per_camera and min_free_mb "
        "bound the archive). Size the disk with docs/GUIDE.md, "
        "'Sizing and backup'.",
    )
    max_gb_per_camera: float = Field(
        0,
        ge=0,
        le=10**6,
        description="Delete a camera's oldest closed segments while it uses more; 0: no limit.",
    )
    min_free_mb: float = Field(
        512,
        ge=0,
        le=10**7,
        description="Emergency: while the disk "
        "has less free, delete the oldest closed segment of any camera "
        "(logged as an error). The open segment is never deleted.",
    )
    check_every_s: float = Field(30, ge=1, le=86400, description="How often to apply it.")


class StoreConfig(Section):
    store: StoreSection = StoreSection()
    archive: ArchiveSection = ArchiveSection()
    retention: RetentionSection = RetentionSection()
    metrics: MetricsSection = MetricsSection()

    @model_validator(mode="after")
    def _lock_days(self) -> StoreConfig:
        s3 = self.archive.s3
        if (
            self.archive.backend == "s3"
            and s3.lock_mode != "off"
            and not (s3.lock_days or self.retention.max_age_days)
        ):
            raise ValueError(
                "archive.s3.lock_mode needs a lock period: set archive.s3.lock_days or "
                "retention.max_age_days"
            )
        return self


# --------------------------------------------------------------------------- viewer


class ViewerSection(Section):
    identity: str = Field(
        "viewer",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="This viewer's certificate name (identities/certs/"
        "viewer-NAME.crt); give each viewer machine its own with 'veilcam "
        "cert issue viewer:NAME', so one can be revoked alone.",
    )
    relay: str = Field(
        "tcp://127.0.0.1:7701",
        pattern=ZMQ_ENDPOINT_PATTERN,
        description="The store's relay endpoint.",
    )
    query: str = Field(
        "tcp://127.0.0.1:7702",
        pattern=ZMQ_ENDPOINT_PATTERN,
        description="The store's query endpoint.",
    )
    web_host: str = Field(
        "127.0.0.1",
        description="Address the browser page listens on. "
        "Keep it on loopback unless a TLS proxy is in front.",
    )
    web_port: int = Field(7780, ge=1, le=65535, description="Port of the browser page.")
    jpeg_quality: int = Field(
        85, ge=30, le=100, description="JPEG quality of unlocked frames sent to the browser."
    )
    export_dir: str = Field(
        "exports",
        description="Where the browser page's Export button "
        "writes MP4 files and evidence bundles (relative to the home).",
    )
    session_idle_minutes: float = Field(
        15,
        gt=0,
        le=24 * 60,
        description="An unlocked "
        "browser session locks after this long without a "
        "request (an open stream keeps it alive).",
    )
    session_max_hours: float = Field(
        12, gt=0, le=24 * 30, description="...and this long after the unlock in any case."
    )


class ViewerConfig(Section):
    viewer: ViewerSection = ViewerSection()


M = TypeVar("M", bound=BaseModel)


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_config(path: Path, model: type[M]) -> M:
    """Read and validate a TOML file; any problem is a ConfigError naming file, key and reason."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = _dotted(err["loc"]) or "(top level)"
            reason = err["msg"]
            if err["type"] == "extra_forbidden":
                reason = "unknown key"
            elif err["type"] == "missing":
                reason = "required key is missing"
            elif (
                err["type"] == "string_pattern_mismatch"
                and err.get("ctx", {}).get("pattern") == ZMQ_ENDPOINT_PATTERN
            ):
                reason = (
                    f"{err['input']!r} should match pattern tcp://HOST:PORT (PORT 1-65535), "
                    "ipc://PATH or inproc://NAME"
                )
            problems.append(f"{path}: key '{key}': {reason}")
        raise ConfigError("\n".join(problems)) from None
