"""Evidence export: a camera's archive between two times as an MP4, plus a bundle that anyone
can verify offline with ``veilcam verify BUNDLE``.

The MP4 is what a viewer would show (redacted, or unlocked for a user). The bundle beside it
(``FILE.bundle/``) holds the original signed messages of that range exactly as archived (the
frames, and the key envelopes of their epochs) in a segment file, the deployment CA
certificate, the revocation list and the camera certificates, a store config pointing at them,
and a manifest with the SHA-256 of the MP4 and of the segment. It is laid out like a home, so
the ordinary verifier runs on it unchanged; it holds no key that opens a zone.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np
from veilcam.common.errors import VeilcamError
from veilcam.common.format import KeyEnvelope
from veilcam.common.home import Home
from veilcam.common.keywrap import Identity
from veilcam.common.pki import ca_fingerprint, load_cert
from veilcam.common.progress import Progress
from veilcam.common.secretfiles import sha256_file, write_atomic
from veilcam.common.segments import encode_record, segment_file_name, segment_header
from veilcam.viewer.playback import ArchiveReader
from veilcam.viewer.render import render
from veilcam.viewer.unlock import Unlocker

log = logging.getLogger("veilcam.export")

BUNDLE_FORMAT = "veilcam-evidence-bundle-v1"


class ExportState(StrEnum):
    """Where an export started from the browser viewer stands (the ``state`` of
    ``GET /api/export/ID``, which the page's script compares with these strings)."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class _Written:
    """What went into the video and the bundle's segment."""

    frames: int = 0  # in the video (verified)
    epochs: list[bytes] = field(default_factory=list)
    problems: int = 0  # frames that did not verify: in the segment, not in the video
    first_us: int | None = None
    last_us: int | None = None
    zones: int = 0  # zones in the video's frames
    zones_unlocked: int = 0  # of those, shown unlocked (0 for a redacted export)


class _Video:
    """The MP4, opened at the first frame shown, at that frame's size."""

    FPS = 30.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: cv2.VideoWriter | None = None

    def add(self, image: np.ndarray, width: int, height: int) -> None:
        if self.writer is None:
            self.writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.FPS, (width, height)
            )
            if not self.writer.isOpened():
                raise VeilcamError(f"cannot write the video {self.path}")
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def export(
    home: Home,
    camera: str,
    from_us: int,
    to_us: int,
    out: Path,
    identity: Identity | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write ``out`` (MP4) and ``out.bundle/``; returns the manifest. ``on_progress(done,
    total)`` is called after each frame (the browser viewer's export button shows it)."""
    out = Path(out)
    if to_us <= from_us:
        raise VeilcamError("--to must be after --from")
    bundle = out.with_name(out.name + ".bundle")
    if out.exists() or bundle.exists():
        raise VeilcamError(f"{out} or {bundle} already exists; choose another --out")
    reader = ArchiveReader(home, camera, from_us)
    unlocker = Unlocker(identity, reader.envelope) if identity else None
    total = reader.count_between(from_us, to_us)
    segment = bundle / "archive" / "segments" / camera / segment_file_name(1)
    segment.parent.mkdir(parents=True)
    video = _Video(out)
    bar = Progress("export", total, "frames")  # on a terminal; else a log line per 10 s

    def progress(frames: int) -> None:
        bar.update(frames)
        if on_progress is not None:
            on_progress(frames, total)

    complete = False
    try:
        written = _write_range(reader, camera, to_us, segment, video, unlocker, progress)
        complete = True
    finally:
        reader.close()
        video.close()
        bar.close()
        if not complete:  # leave nothing half-written that would block a retry
            shutil.rmtree(bundle, ignore_errors=True)
            out.unlink(missing_ok=True)
    if written.frames == 0:
        shutil.rmtree(bundle, ignore_errors=True)
        out.unlink(missing_ok=True)
        raise VeilcamError(f"no frames of camera {camera!r} between those times in the archive")
    _copy_identities(home, bundle)
    write_atomic(bundle / "config" / "store.toml", b'[archive]\npath = "archive"\n')
    manifest = {
        "format": BUNDLE_FORMAT,
        "camera": camera,
        "from_us": written.first_us,
        "to_us": written.last_us,
        "frames": written.frames,
        "epochs": len(written.epochs),
        "frames_failing_verification": written.problems,
        "unlocked_for": identity.name if identity else None,
        "zones": written.zones,
        "zones_unlocked": written.zones_unlocked,
        "video": {"file": out.name, "sha256": sha256_file(out)},
        "segment": {"file": str(segment.relative_to(bundle)), "sha256": sha256_file(segment)},
        "ca_sha256": ca_fingerprint(load_cert(bundle / "identities" / "ca" / "ca.crt")),  # DER
        "exported_at_us": time.time_ns() // 1000,
    }
    write_atomic(bundle / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def _write_range(
    reader: ArchiveReader,
    camera: str,
    to_us: int,
    segment: Path,
    video: _Video,
    unlocker: Unlocker | None,
    progress: Callable[[int], None],
) -> _Written:
    """Every frame the reader gives up to ``to_us`` into the segment, byte for byte as
    archived (after the key envelope of its epoch, the first time it is met); the verified
    ones also into the video."""
    written = _Written()
    with open(segment, "wb") as seg:
        seg.write(segment_header(camera))
        for got in reader.frames():
            h = got.msg.header
            if h.capture_time_us > to_us:
                break
            if h.epoch_id not in written.epochs:
                written.epochs.append(h.epoch_id)
                env_parts = reader.envelope_parts(camera, h.epoch_id)
                if env_parts is not None:
                    seg.write(encode_record(KeyEnvelope.kind, env_parts))
            seg.write(encode_record(got.msg.kind, got.msg.body_parts()))
            if not got.verified:
                written.problems += 1
                log.warning(
                    "frame #%d does not verify (%s): left out of the video, kept in "
                    "the bundle for the record",
                    h.seq,
                    got.problem,
                )
                continue
            shown = render(got.msg, unlocker)
            video.add(shown.image, h.width, h.height)
            written.zones += len(shown.zone_unlocked)
            written.zones_unlocked += sum(shown.zone_unlocked)
            written.frames += 1
            written.first_us = (
                written.first_us if written.first_us is not None else h.capture_time_us
            )
            written.last_us = h.capture_time_us
            progress(written.frames)
    return written


def _copy_identities(home: Home, bundle: Path) -> None:
    """The CA certificate, the CRL and the camera certificates (no store's or viewer's)."""
    ids = bundle / "identities"
    (ids / "ca").mkdir(parents=True)
    shutil.copy2(home.ca_cert_path, ids / "ca" / "ca.crt")
    if home.crl_path.exists():
        shutil.copy2(home.crl_path, ids / "ca" / "crl.pem")
    shutil.copytree(
        home.certs_dir,
        ids / "certs",
        ignore=lambda d, names: [n for n in names if n.startswith(("store-", "viewer-"))],
    )


def video_coverage_note(bundle: Path) -> str:
    """What ``veilcam verify`` says about the bundle's MP4: nothing signed covers it."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
        name = Path(manifest["video"]["file"]).name
        who = manifest.get("unlocked_for")
    except (OSError, ValueError, KeyError, TypeError):
        name, who = "the MP4", None
    kind = f"unlocked for {who}" if isinstance(who, str) else "redacted"
    return (
        f"{name} ({kind}) is derived from the verified frames but is NOT covered by their "
        "signatures: only its SHA-256 in the unsigned manifest.json ties it to them, and "
        "whoever edits the MP4 can edit that too. The signed evidence is the frames in "
        "the bundle's segment"
    )


def check_bundle_files(bundle: Path) -> list[str]:
    """Compare the manifest's hashes with the files beside it; returns the mismatches."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
        video = bundle.parent / Path(manifest["video"]["file"]).name
        segment = (bundle / manifest["segment"]["file"]).resolve()
        hashes = manifest["video"]["sha256"], manifest["segment"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"manifest.json is unreadable or incomplete ({exc})"]
    problems = []
    if not video.exists():
        problems.append(f"video {video} is missing")
    elif sha256_file(video) != hashes[0]:
        problems.append(f"video {video} does not match the manifest's SHA-256")
    if not segment.is_relative_to(bundle.resolve()) or not segment.exists():
        problems.append(f"segment {segment} is missing or outside the bundle")
    elif sha256_file(segment) != hashes[1]:
        problems.append(f"segment {segment} does not match the manifest's SHA-256")
    return problems
