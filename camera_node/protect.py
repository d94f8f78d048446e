"""Turning a captured frame and its zones into a signed frame message.

Per zone: copy the original pixels, encode them, encrypt them (AES-256-CTR under the epoch's
key for the zone's class); then redact the public frame, encode it, build the header that binds
everything, and sign it. All crops are taken before any redaction, so overlapping zones each
carry original pixels.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from veilcam.camera_node.redact import Redactor
from veilcam.camera_node.zones import Zone
from veilcam.common.format import (
    EPOCH_ID_LEN,
    FLAG_CHAIN_START,
    ZERO_DIGEST,
    FrameHeader,
    FrameMessage,
    GapNotice,
    GapReason,
    ImageCodec,
    KemSuite,
    KeyEnvelope,
    ZoneClass,
    ZoneRecord,
    sha256,
)
from veilcam.common.imagecodec import encode_image
from veilcam.common.keywrap import Grant, build_envelope
from veilcam.common.stagetimer import NullTimes, StageTimes
from veilcam.common.zonecrypt import encrypt_zone, new_content_key

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
FULL_CHROMA_PX = 160 * 160  # JPEG zones up to this area keep full chroma (4:4:4): small crops
# lose most to subsampling; large ones stay > 41 dB without it


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
                full_chroma=z.w * z.h <= FULL_CHROMA_PX,
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
