"""Turning a captured frame and its zones into a signed frame message.

JPEG mode (format version 1, ``protect_frame``): per zone, copy the original pixels, encode
them, encrypt them (AES-256-CTR under the epoch's key for the zone's class); then redact the
public frame, encode it, build the header that binds everything, and sign it. All crops are
taken before any redaction, so overlapping zones each carry original pixels.

H.264 mode (format version 2, ``protect_frame_h264``): the original pixels of each zone class
go into that class's zone stream (camera_node.videoenc) before redaction, each stream AU is
encrypted under the class key; the redacted frame is encoded as the public stream's AU; the
header binds both, with the frame's place in its GOP, and is signed the same way.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from veilcam.camera_node.redact import Redactor
from veilcam.camera_node.videoenc import (
    H264Settings,
    PublicAU,
    PublicEncoder,
    StreamAU,
    ZoneStreams,
    bgr_to_i420,
    even_size,
)
from veilcam.camera_node.zones import Zone
from veilcam.common.format import (
    EPOCH_ID_LEN,
    FLAG_CHAIN_START,
    FLAG_KEYFRAME,
    FORMAT_VERSION_H264,
    STREAM_FLAG_KEYFRAME,
    ZERO_DIGEST,
    FrameHeader,
    FrameMessage,
    GapNotice,
    GapReason,
    ImageCodec,
    KemSuite,
    KeyEnvelope,
    StreamRecord,
    ZoneClass,
    ZoneRecord,
    ZoneRect,
    sha256,
)
from veilcam.common.imagecodec import encode_image
from veilcam.common.keywrap import Grant, build_envelope
from veilcam.common.stagetimer import NullTimes, StageTimes
from veilcam.common.zonecrypt import encrypt_stream_au, encrypt_zone, new_content_key

_NO_TIMES = NullTimes()


@dataclass
class Epoch:
    """One content-key period of one camera: a random id and a random key per zone class."""

    epoch_id: bytes
    class_keys: dict[ZoneClass, bytes]

    @classmethod
    def new(cls) -> Epoch:
        return cls(os.urandom(EPOCH_ID_LEN), {c: new_content_key() for c in ZoneClass})

    def envelope(
        self,
        signing_key: Ed25519PrivateKey,
        camera_id: str,
        first_seq: int,
        grants: list[Grant],
        suite: KemSuite = KemSuite.X25519_HKDF_SHA256_AES256GCM,
    ) -> KeyEnvelope:
        return build_envelope(
            signing_key, camera_id, self.epoch_id, first_seq, self.class_keys, grants, suite
        )


@dataclass(frozen=True)
class EncodeSettings:
    jpeg_quality: int = 90
    zone_codec: ImageCodec = ImageCodec.JPEG
    zone_jpeg_quality: int = 95


TINY_ZONE_PX = 48 * 48  # zones up to this area travel as PNG when the codec is JPEG


def zone_codec(zone: Zone, settings: EncodeSettings) -> ImageCodec:
    """The configured zone codec, except that tiny zones go lossless (PNG): JPEG's 8x8 blocks
    and headers cost a tiny crop its fidelity (under 40 dB PSNR) and save nothing there."""
    if settings.zone_codec == ImageCodec.JPEG and zone.w * zone.h <= TINY_ZONE_PX:
        return ImageCodec.PNG
    return settings.zone_codec


def protect_frame(
    frame: np.ndarray,
    zones: list[Zone],
    *,
    camera_id: str,
    seq: int,
    capture_time_us: int,
    epoch: Epoch,
    prev_digest: bytes,
    redactor: Redactor,
    settings: EncodeSettings,
    signing_key: Ed25519PrivateKey,
    times: StageTimes | None = None,
) -> FrameMessage:
    """Encrypt the zones' original pixels, redact them in ``frame`` (in place), sign the result.

    ``times`` (optional) collects per-stage durations: zone_encode, redact, encode, encrypt,
    sign (hashes and signature)."""
    times = times or _NO_TIMES
    height, width = frame.shape[:2]
    with times.measure("zone_encode"):
        codecs = [zone_codec(z, settings) for z in zones]
        payloads = [
            encode_image(
                frame[z.y : z.y + z.h, z.x : z.x + z.w],
                codec,
                settings.zone_jpeg_quality,
                # every zone keeps full chroma (4:4:4): subsampled, a 229x136 zone with sharp
                # colour edges unlocked at 39.8 dB (tests/test_e2e.py, 2026-11-30)
                full_chroma=True,
            )
            for z, codec in zip(zones, codecs, strict=True)
        ]
    with times.measure("redact"):
        for z in zones:
            redactor(frame[z.y : z.y + z.h, z.x : z.x + z.w])
    with times.measure("encode"):
        public = encode_image(frame, ImageCodec.JPEG, settings.jpeg_quality)
    with times.measure("encrypt"):
        ciphertexts = tuple(
            encrypt_zone(epoch.class_keys[z.zone_class], seq, i, payload)
            for i, (z, payload) in enumerate(zip(zones, payloads, strict=True))
        )
    with times.measure("sign"):
        return _signed(
            zones,
            codecs,
            ciphertexts,
            public,
            camera_id,
            seq,
            capture_time_us,
            epoch,
            prev_digest,
            width,
            height,
            signing_key,
        )


def _signed(
    zones,
    codecs,
    ciphertexts,
    public,
    camera_id,
    seq,
    capture_time_us,
    epoch,
    prev_digest,
    width,
    height,
    signing_key,
) -> FrameMessage:
    records = tuple(
        ZoneRecord(z.zone_class, codec, z.x, z.y, z.w, z.h, len(ct), sha256(ct))
        for z, codec, ct in zip(zones, codecs, ciphertexts, strict=True)
    )
    header = FrameHeader(
        camera_id=camera_id,
        seq=seq,
        capture_time_us=capture_time_us,
        epoch_id=epoch.epoch_id,
        prev_digest=prev_digest,
        image_codec=ImageCodec.JPEG,
        width=width,
        height=height,
        image_len=len(public),
        image_sha256=sha256(public),
        zones=records,
        flags=FLAG_CHAIN_START if prev_digest == ZERO_DIGEST else 0,
    )
    header_bytes = header.to_bytes()
    return FrameMessage(header, header_bytes, signing_key.sign(header_bytes), public, ciphertexts)


class VideoEncoders:
    """A camera's H.264 encoders (public stream and zone streams) and where its GOP began.

    Made for one frame size: a frame of another size (a source that changed resolution)
    closes them and starts new ones, beginning with a keyframe.

    The zone streams of a frame are encoded on ``zone_worker`` while the calling thread
    encodes its public AU: libx264 runs without the GIL, so the two take two cores, and the
    frame is done in the longer of the two times, not their sum (1080p: 21.6 + 14.7 ms in a
    row, bench/pipeline.py --no-viewer)."""

    def __init__(self, settings: H264Settings, fps: float) -> None:
        self.settings, self.fps = settings, fps
        self.public: PublicEncoder | None = None
        self.zones: ZoneStreams | None = None
        self.gop_seq = 0
        self.zone_worker = ThreadPoolExecutor(1, thread_name_prefix="veilcam-zone-encode")
        self.pending: Future[list[StreamAU]] | None = None  # the last frame's zone streams

    def for_size(self, width: int, height: int) -> tuple[PublicEncoder, ZoneStreams]:
        if self.public is None or self.zones is None or self.public.size != (width, height):
            if self.pending is not None:
                wait([self.pending])  # the worker may still be encoding the old size
            self.close()
            interval = self.settings.keyframe_interval(self.fps)
            self.public = PublicEncoder(width, height, self.fps, interval, self.settings)
            self.zones = ZoneStreams(width, height, self.fps, self.settings)
        return self.public, self.zones

    def close(self) -> None:
        """Close the encoders (the next frame starts new ones)."""
        if self.public is not None:
            self.public.close()
        if self.zones is not None:
            self.zones.close()
        self.public = self.zones = None

    def shutdown(self) -> None:
        """Close the encoders and stop the zone worker (the camera is stopping)."""
        self.close()
        self.zone_worker.shutdown(wait=True)


def _crop_zones(zones: list[Zone], width: int, height: int) -> list[Zone]:
    """Zones clipped to the even-sized frame H.264 carries (its odd last column or row, if
    any, is not published at all)."""
    out = []
    for z in zones:
        w, h = min(z.x + z.w, width) - z.x, min(z.y + z.h, height) - z.y
        if w > 0 and h > 0:
            out.append(Zone(z.x, z.y, w, h, z.zone_class))
    return out


@dataclass(frozen=True)
class EncodedFrame:
    """One frame's H.264 work, done (public AU) or under way (zone streams, on the zone
    worker), before its place in the chain is known: ``seal_frame_h264`` makes it a signed
    message. Splitting the two lets the camera encode the next frame's public AU while this
    frame's zone streams finish (CameraNode._publish)."""

    width: int
    height: int
    zones: list[Zone]
    public: PublicAU
    stream_aus: Future[list[StreamAU]]


def encode_frame_h264(
    frame: np.ndarray,
    zones: list[Zone],
    *,
    redactor: Redactor,
    video: VideoEncoders,
    times: StageTimes | None = None,
) -> EncodedFrame:
    """Redact ``frame`` in place (the zones' original pixels kept aside), encode its public AU
    and start its zone streams (original zones in their redacted surroundings) on the zone
    worker; return without waiting for them. ``frame`` must not change until the frame is
    sealed. An odd width or height loses its last column or row (H.264 4:2:0 needs even
    sizes). ``times`` collects redact, encode and zone_encode durations."""
    times = times or _NO_TIMES
    width, height = even_size(frame.shape[1], frame.shape[0])
    frame = frame[:height, :width]
    zones = _crop_zones(zones, width, height)
    public_enc, streams = video.for_size(width, height)
    keyframe = public_enc.next_is_keyframe
    original = frame.copy() if zones else frame
    with times.measure("redact"):
        for z in zones:
            redactor(frame[z.y : z.y + z.h, z.x : z.x + z.w])

    def encode_zone_streams() -> list[StreamAU]:
        with times.measure("zone_encode"):
            return streams.encode(original, zones, keyframe, public=frame)

    pending = video.zone_worker.submit(encode_zone_streams)  # frame is only read from now on
    video.pending = pending
    try:
        with times.measure("encode"):
            public = public_enc.encode_i420(bgr_to_i420(frame))
    except BaseException:
        pending.result()  # never leave the worker encoding a frame we dropped
        raise
    return EncodedFrame(width, height, zones, public, pending)


def seal_frame_h264(
    encoded: EncodedFrame,
    *,
    camera_id: str,
    seq: int,
    capture_time_us: int,
    epoch: Epoch,
    prev_digest: bytes,
    video: VideoEncoders,
    signing_key: Ed25519PrivateKey,
    times: StageTimes | None = None,
) -> FrameMessage:
    """Wait for the frame's zone streams, encrypt their AUs under the epoch's class keys and
    sign the frame as number ``seq`` of the chain (frames are sealed in encoding order)."""
    times = times or _NO_TIMES
    stream_aus = encoded.stream_aus.result()
    public = encoded.public
    if public.keyframe:
        video.gop_seq = seq
    with times.measure("encrypt"):
        ciphertexts = tuple(
            encrypt_stream_au(epoch.class_keys[s.zone_class], seq, s.zone_class, s.au)
            for s in stream_aus
        )
    with times.measure("sign"):
        header = FrameHeader(
            camera_id=camera_id,
            seq=seq,
            capture_time_us=capture_time_us,
            epoch_id=epoch.epoch_id,
            prev_digest=prev_digest,
            image_codec=ImageCodec.H264,
            width=encoded.width,
            height=encoded.height,
            image_len=len(public.au),
            image_sha256=sha256(public.au),
            flags=(FLAG_CHAIN_START if prev_digest == ZERO_DIGEST else 0)
            | (FLAG_KEYFRAME if public.keyframe else 0),
            version=FORMAT_VERSION_H264,
            gop_seq=video.gop_seq,
            gop_index=public.gop_index,
            zone_rects=tuple(ZoneRect(z.zone_class, z.x, z.y, z.w, z.h) for z in encoded.zones),
            streams=tuple(
                StreamRecord(
                    s.zone_class, STREAM_FLAG_KEYFRAME if s.keyframe else 0, len(ct), sha256(ct)
                )
                for s, ct in zip(stream_aus, ciphertexts, strict=True)
            ),
        )
        header_bytes = header.to_bytes()
        return FrameMessage(
            header, header_bytes, signing_key.sign(header_bytes), public.au, (), ciphertexts
        )


def protect_frame_h264(
    frame: np.ndarray,
    zones: list[Zone],
    *,
    camera_id: str,
    seq: int,
    capture_time_us: int,
    epoch: Epoch,
    prev_digest: bytes,
    redactor: Redactor,
    video: VideoEncoders,
    signing_key: Ed25519PrivateKey,
    times: StageTimes | None = None,
) -> FrameMessage:
    """Version 2 in one step: ``encode_frame_h264`` then ``seal_frame_h264``."""
    encoded = encode_frame_h264(frame, zones, redactor=redactor, video=video, times=times)
    return seal_frame_h264(
        encoded,
        camera_id=camera_id,
        seq=seq,
        capture_time_us=capture_time_us,
        epoch=epoch,
        prev_digest=prev_digest,
        video=video,
        signing_key=signing_key,
        times=times,
    )


def sign_gap_notice(
    signing_key: Ed25519PrivateKey,
    camera_id: str,
    first_seq: int,
    last_seq: int,
    reason: GapReason = GapReason.SPOOL_FULL,
) -> GapNotice:
    """The camera's signed word that it dropped frames ``first_seq..last_seq`` itself."""
    draft = GapNotice(camera_id, first_seq, last_seq, reason, time.time_ns() // 1000)
    body = draft.encode_body()
    return GapNotice(
        camera_id, first_seq, last_seq, reason, draft.created_us, body, signing_key.sign(body)
    )


def sign_offline_notice(
    signing_key: Ed25519PrivateKey,
    camera_id: str,
    before_seq: int,
    from_us: int,
    to_us: int,
    after_seq: int | None,
) -> GapNotice:
    """The camera's signed word that its source delivered nothing from ``from_us`` (capture
    time of frame ``before_seq``) to ``to_us`` (capture time of frame ``after_seq``, the next
    one; None when the camera stops while the source is still down, ``to_us`` the stop)."""
    last = before_seq if after_seq is None else after_seq
    draft = GapNotice(
        camera_id,
        before_seq,
        last,
        GapReason.SOURCE_OFFLINE,
        time.time_ns() // 1000,
        from_us=from_us,
        to_us=to_us,
    )
    body = draft.encode_body()
    return GapNotice(
        camera_id,
        before_seq,
        last,
        GapReason.SOURCE_OFFLINE,
        draft.created_us,
        body,
        signing_key.sign(body),
        from_us,
        to_us,
    )
