"""Evidence export: a camera's archive between two times as an MP4, plus a bundle that anyone
can verify offline with ``veilcam verify BUNDLE``.

The MP4 is what a viewer would show (redacted, or unlocked for a user). The bundle beside it
(``FILE.bundle/``) holds the original signed messages of that range exactly as archived (the
frames, and the key envelopes of their epochs) in a segment file, the deployment CA
certificate, the revocation list and the camera certificates, a store config pointing at them,
and a manifest with the SHA-256 of the MP4 and of the segment. It is laid out like a home, so
the ordinary verifier runs on it unchanged; it holds no key that opens a zone.

H.264 cameras (format version 2): a redacted export is a *remux*: the archived public access
units (AUs), not re-encoded, in an MP4 that starts at the keyframe at or before ``--from`` (the
frames from that keyframe to ``--from`` are in the video and the bundle: without them nothing
before the next keyframe decodes). Every sample of that MP4 is then a signed AU, and
``veilcam verify`` checks it sample by sample against the frames of the bundle. An unlocked
export decodes (from that keyframe), pastes the zones the user may see and re-encodes with
libx264 from ``--from`` on: derived, like every version-1 video, not covered by signatures.
Version-1 exports are unchanged.
"""

from __future__ import annotations

import json
import logging
import mmap
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from veilcam.common.colorspace import bgr_to_i420
from veilcam.common.errors import FormatError, VeilcamError, VerificationError
from veilcam.common.format import FORMAT_VERSION_H264, FrameMessage, KeyEnvelope
from veilcam.common.home import Home
from veilcam.common.keywrap import Identity
from veilcam.common.pki import ca_fingerprint, load_cert
from veilcam.common.progress import Progress
from veilcam.common.secretfiles import sha256_file, write_atomic
from veilcam.common.segments import (
    Record,
    encode_record,
    scan_segment,
    segment_file_name,
    segment_header,
)
from veilcam.common.signing import TrustedCameras
from veilcam.viewer.client import ReceivedFrame
from veilcam.viewer.mp4check import structure_problems
from veilcam.viewer.playback import ArchiveReader
from veilcam.viewer.render import Renderer
from veilcam.viewer.unlock import Unlocker

log = logging.getLogger("veilcam.export")

BUNDLE_FORMAT = "veilcam-evidence-bundle-v1"
VIDEO_REMUX = "remux"  # manifest video.kind: the signed public AUs, not re-encoded
VIDEO_REENCODED = "reencoded"  # decoded, composed, re-encoded (H.264, unlocked)
MP4_TIME_BASE = Fraction(1, 90_000)
EXPORT_CRF = 18  # an unlocked H.264 export's re-encoding


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
    h264: bool = False  # version-2 frames (the video is a remux or a re-encoding)
    preroll: int = 0  # version 2: frames before --from in the bundle (and in a remux)
    not_decodable: int = 0  # version 2: verified, but after a break in the stream


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


def _pts(capture_us: int, first_us: int, last_pts: int | None) -> int:
    """A sample's time in MP4_TIME_BASE from its capture time (strictly increasing)."""
    pts = (capture_us - first_us) * MP4_TIME_BASE.denominator // 1_000_000
    return pts if last_pts is None or pts > last_pts else last_pts + 1


class _Remux:
    """Version 2, redacted: the public AUs into an MP4 as they are (PyAV muxing, no codec).

    The mov muxer takes the first AU's SPS/PPS for the avcC record and rewrites each sample's
    Annex-B start codes as 4-byte lengths; the NAL units (SPS/PPS included, in-band on every
    keyframe) stay byte for byte what the camera signed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.container: av.container.OutputContainer | None = None
        self.stream: av.stream.Stream | None = None
        self.size: tuple[int, int] | None = None
        self.first_us = 0
        self.last_pts: int | None = None

    def add(self, msg: FrameMessage) -> None:
        h = msg.header
        if self.container is None or self.stream is None or self.size is None:
            self.container = av.open(str(self.path), "w", format="mp4")
            # no codec context: an h264 one would open libx264, whose own SPS/PPS (not the
            # camera's) would become the track's avcC record
            self.stream = self.container.add_mux_stream(
                "h264", rate=30, width=h.width, height=h.height, time_base=MP4_TIME_BASE
            )
            self.size, self.first_us = (h.width, h.height), h.capture_time_us
        if (h.width, h.height) != self.size:
            raise VeilcamError(
                f"frame #{h.seq} is {h.width}x{h.height}, the video {self.size[0]}x"
                f"{self.size[1]}: the camera changed resolution; export the ranges apart"
            )
        packet = av.Packet(msg.public_image)
        packet.stream = self.stream
        packet.time_base = MP4_TIME_BASE
        self.last_pts = packet.pts = packet.dts = _pts(
            h.capture_time_us, self.first_us, self.last_pts
        )
        packet.is_keyframe = msg.is_keyframe
        self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None


class _Encoded:
    """Version 2, unlocked: composed pictures re-encoded with libx264 (timed as captured)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.container: av.container.OutputContainer | None = None
        self.stream: av.video.stream.VideoStream | None = None
        self.size: tuple[int, int] | None = None
        self.first_us = 0
        self.last_pts: int | None = None

    def add(self, image: np.ndarray, capture_us: int) -> None:
        height, width = image.shape[:2]
        if self.container is None or self.stream is None:
            self.container = av.open(str(self.path), "w", format="mp4")
            stream = self.container.add_stream(
                "libx264", rate=30, options={"crf": str(EXPORT_CRF), "preset": "veryfast"}
            )
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = MP4_TIME_BASE
            self.stream = stream
            self.size, self.first_us = (width, height), capture_us
        if (width, height) != self.size:
            raise VeilcamError("the camera changed resolution in the range; export it apart")
        frame = av.VideoFrame.from_ndarray(bgr_to_i420(image), format="yuv420p")
        frame.time_base = MP4_TIME_BASE
        self.last_pts = frame.pts = _pts(capture_us, self.first_us, self.last_pts)
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        if self.container is not None and self.stream is not None:
            self.container.mux(self.stream.encode(None))  # flush
            self.container.close()
            self.container = None


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
    video = _Videos(out, remux=identity is None)
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
    video_doc = {"file": out.name, "sha256": sha256_file(out)}
    if written.h264:
        video_doc["kind"] = VIDEO_REMUX if identity is None else VIDEO_REENCODED
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
        "video": video_doc,
        **(
            {
                "preroll_frames": written.preroll,
                "frames_not_decodable": written.not_decodable,
            }
            if written.h264
            else {}
        ),
        "segment": {"file": str(segment.relative_to(bundle)), "sha256": sha256_file(segment)},
        "ca_sha256": ca_fingerprint(load_cert(bundle / "identities" / "ca" / "ca.crt")),  # DER
        "exported_at_us": time.time_ns() // 1000,
    }
    write_atomic(bundle / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


class _Videos:
    """The export's MP4: version 1 through OpenCV as always; version 2 remuxed (redacted)
    or re-encoded (unlocked). One range holds one kind of frame."""

    def __init__(self, path: Path, remux: bool) -> None:
        self.v1 = _Video(path)
        self.v2: _Remux | _Encoded = _Remux(path) if remux else _Encoded(path)
        self.version: int | None = None

    def kind(self, msg: FrameMessage) -> None:
        if self.version is None:
            self.version = msg.version
        elif msg.version != self.version:
            raise VeilcamError(
                f"frame #{msg.header.seq} is of format version {msg.version}, the video's "
                f"frames of version {self.version} (the camera changed between JPEG and "
                "H.264 mode): export the ranges before and after the change apart"
            )

    def close(self) -> None:
        self.v1.close()
        self.v2.close()


def _write_range(
    reader: ArchiveReader,
    camera: str,
    to_us: int,
    segment: Path,
    video: _Videos,
    unlocker: Unlocker | None,
    progress: Callable[[int], None],
) -> _Written:
    """Every frame the reader gives up to ``to_us`` into the segment, byte for byte as
    archived (after the key envelope of its epoch, the first time it is met); the verified
    ones also into the video. Version 2: from the keyframe at or before the start (the
    preroll: in the segment, decoded, and in a remux as samples)."""
    written = _Written()
    renderer = Renderer(unlocker)
    with open(segment, "wb") as seg:
        seg.write(segment_header(camera))
        for got in reader.frames(preroll=True):
            h = got.msg.header
            if h.capture_time_us > to_us:
                break
            if got.preroll and got.msg.version != FORMAT_VERSION_H264:
                continue  # version 1 decodes alone: as before, from the first frame asked
            video.kind(got.msg)
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
            if got.msg.version == FORMAT_VERSION_H264:
                written.h264 = True
                unlocked = _add_v2(got, renderer, video, written)
                if unlocked is None:
                    continue
                written.zones += len(h.zone_rects)
            else:
                shown = renderer.render(got.msg)
                assert shown.image is not None  # version 1: every frame decodes alone
                video.v1.add(shown.image, h.width, h.height)
                written.zones += len(shown.zone_unlocked)
                unlocked = sum(shown.zone_unlocked)
            written.zones_unlocked += unlocked
            written.frames += 1
            written.first_us = (
                written.first_us if written.first_us is not None else h.capture_time_us
            )
            written.last_us = h.capture_time_us
            progress(written.frames)
    return written


def _add_v2(
    got: ReceivedFrame, renderer: Renderer, video: _Videos, written: _Written
) -> int | None:
    """A verified version-2 frame into the video: the zones it shows unlocked, or None when
    it is not in the video (a preroll frame of a re-encoding, decoded only; a frame after a
    break in the stream, up to the next keyframe: its AU would decode to a corrupted
    picture, so a remux leaves it out as the viewer does)."""
    shown = renderer.render(got.msg)
    if shown.image is None:
        written.not_decodable += 1
        log.warning("frame #%d left out of the video: %s", got.msg.header.seq, shown.detail)
        return None
    written.preroll += got.preroll
    if isinstance(video.v2, _Remux):
        video.v2.add(got.msg)
        return 0
    if got.preroll:
        return None
    video.v2.add(shown.image, got.msg.header.capture_time_us)
    return sum(shown.zone_unlocked)


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


def annexb_nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B byte stream (start codes and trailing zeros dropped)."""
    units, i, n = [], 0, len(data)
    starts = []
    while (i := data.find(b"\x00\x00\x01", i)) != -1:
        starts.append(i)
        i += 3
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else n
        units.append(data[start + 3 : end].rstrip(b"\x00"))
    return [u for u in units if u]


def length_prefixed_nal_units(data: bytes, length_size: int = 4) -> list[bytes]:
    """The NAL units of an MP4 (AVCC) sample; raises ValueError if the lengths do not add up."""
    units, i = [], 0
    while i < len(data):
        if i + length_size > len(data):
            raise ValueError("a NAL length runs past the end of the sample")
        size = int.from_bytes(data[i : i + length_size], "big")
        i += length_size
        if size == 0 or i + size > len(data):
            raise ValueError("a NAL unit runs past the end of the sample")
        units.append(data[i : i + size])
        i += size
    return units


def _avcc_parameter_sets(extradata: bytes) -> tuple[int, list[bytes]]:
    """NAL length size and the SPS/PPS of an avcC record (ValueError if malformed)."""
    if len(extradata) < 7 or extradata[0] != 1:
        raise ValueError("the H.264 track has no avcC record")
    length_size = (extradata[4] & 3) + 1
    sets, i = [], 5
    for mask in (0x1F, 0xFF):  # SPS count (5 bits), then PPS count
        count = extradata[i] & mask
        i += 1
        for _ in range(count):
            (size,) = struct.unpack_from(">H", extradata, i)
            sets.append(extradata[i + 2 : i + 2 + size])
            if len(sets[-1]) != size:
                raise ValueError("the avcC record is cut short")
            i += 2 + size
    return length_size, sets


@dataclass
class SampleCheck:
    """What ``check_video_samples`` found."""

    samples: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def note(self) -> str:
        return (
            f"every sample is a signed access unit: {self.samples} sample(s), the public "
            f"H.264 access units of frames #{self.first_seq}..#{self.last_seq} of the bundle, "
            "NAL unit for NAL unit (a remux: nothing re-encoded), each frame verified by its "
            "signature, starting at a keyframe and unbroken between keyframes"
        )


def check_video_samples(bundle: Path, trust: TrustedCameras) -> SampleCheck | None:
    """For a redacted H.264 export (a remux), check the MP4 sample by sample against the
    public AUs of the bundle's frames that verify under ``trust``: each sample must be one
    of them, in order, the first a keyframe, and a sample that does not follow its
    predecessor's frame directly must be a keyframe (so the video decodes to what a viewer
    shows, never a corrupted picture). None when the video is not a remux (version 1, or
    unlocked): it is derived, not covered by the signatures."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
        if manifest["video"].get("kind") != VIDEO_REMUX:
            return None
        video = bundle.parent / Path(manifest["video"]["file"]).name
        segment = (bundle / manifest["segment"]["file"]).resolve()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # check_bundle_files reports an unreadable manifest
    check = SampleCheck()
    if not segment.is_relative_to(bundle.resolve()) or not segment.exists():
        check.problems.append("no segment to check the video's samples against")
        return check
    signed: list[FrameMessage] = []
    for rec in scan_segment(segment):
        if not isinstance(rec, Record) or rec.kind != FrameMessage.kind:
            continue
        try:
            msg = FrameMessage.from_body_parts(rec.parts)
            trust.verify_frame(msg, at_capture_time=True)
        except (FormatError, VerificationError):
            continue  # the audit reports it; its AU is no evidence
        if msg.version == FORMAT_VERSION_H264:
            signed.append(msg)
    try:
        _match_samples(video, signed, check)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        check.problems.append(f"video {video.name} is not an MP4 of signed access units ({exc})")
    return check


def _expected_samples(signed: list[FrameMessage]) -> list[FrameMessage]:
    """The frames a remux of ``signed`` holds, as the export writes them: from a keyframe,
    every frame that follows the one before it; after a break (a frame missing or failing
    verification), nothing until the next keyframe."""
    kept: list[FrameMessage] = []
    last_seq: int | None = None
    for msg in signed:
        if msg.is_keyframe or (last_seq is not None and msg.header.seq == last_seq + 1):
            kept.append(msg)
            last_seq = msg.header.seq
        else:
            last_seq = None
    return kept


def _match_samples(video: Path, signed: list[FrameMessage], check: SampleCheck) -> None:
    """The MP4 must be exactly the remux of the bundle's verified frames: the structure the
    remux writes (viewer/mp4check.py: no edit list that hides samples, no reordering, no
    matrix, one track, one sample description), every expected frame as a sample in order,
    none left out, none added, each at the time its capture time gives."""
    expected = _expected_samples(signed)
    if not expected:
        check.problems.append("the bundle holds no verified H.264 frame to compare with")
        return
    width, height = expected[0].header.width, expected[0].header.height
    with open(video, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        problems = structure_problems(data, width, height)
    if problems:
        check.problems += [f"video {video.name}: {p}" for p in problems]
        return
    # every sample, in file order (an edit list could only have been the identity)
    with av.open(str(video), options={"ignore_editlist": "1"}) as container:
        streams = list(container.streams)
        if (
            len(streams) != 1
            or streams[0].type != "video"
            or streams[0].codec_context.name != "h264"
        ):
            raise ValueError("it must hold exactly one track, H.264 video")
        length_size, parameter_sets = _avcc_parameter_sets(
            bytes(streams[0].codec_context.extradata or b"")
        )
        first_us, last_pts = expected[0].header.capture_time_us, None
        for packet in container.demux(streams[0]):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            i = check.samples
            if i >= len(expected):
                check.problems.append(f"video sample {i} is one more than the signed frames")
                return
            msg = expected[i]
            if length_prefixed_nal_units(bytes(packet), length_size) != annexb_nal_units(
                msg.public_image
            ):
                check.problems.append(
                    f"video sample {i} is not the signed access unit of frame "
                    f"#{msg.header.seq} (left out, replaced or reordered)"
                )
                return
            last_pts = _pts(msg.header.capture_time_us, first_us, last_pts)
            want = Fraction(last_pts) * MP4_TIME_BASE
            got_pts = packet.pts if packet.pts is not None else -1
            if packet.dts != packet.pts or abs(Fraction(got_pts) * packet.time_base - want) > (
                packet.time_base
            ):
                check.problems.append(
                    f"video sample {i} (frame #{msg.header.seq}) is timed at "
                    f"{float(Fraction(got_pts) * packet.time_base):.3f} s, not at its "
                    f"capture time ({float(want):.3f} s after the first)"
                )
                return
            if i == 0:
                first_units = set(annexb_nal_units(msg.public_image))
                check.first_seq = msg.header.seq
            check.last_seq = msg.header.seq
            check.samples += 1
    if check.samples < len(expected):
        missing = expected[check.samples]
        check.problems.append(
            f"the video stops at sample {check.samples}: the signed frames go on from "
            f"#{missing.header.seq} to #{expected[-1].header.seq}"
        )
    elif not set(parameter_sets) <= first_units:
        check.problems.append("the video's avcC parameter sets are not the signed ones")


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
