"""Building real signed frames and envelopes in-process for unit tests."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from veilcam.camera_node.protect import (
    EncodeSettings,
    Epoch,
    VideoEncoders,
    protect_frame,
    protect_frame_h264,
)
from veilcam.camera_node.redact import make_redactor
from veilcam.camera_node.videoenc import H264Settings
from veilcam.camera_node.zones import Zone
from veilcam.common.format import ZERO_DIGEST, FrameMessage, ZoneClass
from veilcam.common.keywrap import Grant, Identity, Recipient
from veilcam.common.signing import TrustedCameras, generate_signing_key


def textured(width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    image = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    return (image + rng.integers(0, 40, image.shape, dtype=np.uint8)).astype(np.uint8)


class Camera:
    """A camera identity, an epoch and a chain, producing signed frames on demand."""

    def __init__(self, camera_id: str = "cam1", users: int = 1) -> None:
        self.camera_id = camera_id
        self.key = generate_signing_key()
        self.trust = TrustedCameras({camera_id: self.key.public_key()})
        self.identities = [Identity(f"user{i}", X25519PrivateKey.generate()) for i in range(users)]
        self.epoch = Epoch.new()
        self.seq = 0
        self.prev = ZERO_DIGEST

    def grants(self, classes=frozenset(ZoneClass)) -> list[Grant]:
        return [
            Grant(Recipient(i.name, i.private_key.public_key()), frozenset(classes))
            for i in self.identities
        ]

    def envelope(self, classes=frozenset(ZoneClass)):
        return self.epoch.envelope(self.key, self.camera_id, self.seq, self.grants(classes))

    def frame(
        self,
        image: np.ndarray | None = None,
        zones: list[Zone] | None = None,
        settings: EncodeSettings | None = None,
    ) -> FrameMessage:
        image = textured() if image is None else image.copy()
        zones = (
            zones
            if zones is not None
            else [Zone(40, 30, 64, 80, ZoneClass.FACE), Zone(200, 100, 50, 40, ZoneClass.STATIC)]
        )
        msg = protect_frame(
            image,
            zones,
            camera_id=self.camera_id,
            seq=self.seq,
            capture_time_us=1_700_000_000_000_000 + self.seq * 33_333,
            epoch=self.epoch,
            prev_digest=self.prev,
            redactor=make_redactor("pixelate"),
            settings=settings or EncodeSettings(),
            signing_key=self.key,
        )
        self.seq += 1
        self.prev = msg.digest
        return msg


GOP = 4


class H264Camera:
    """A camera in H.264 mode producing signed version-2 frames in-process."""

    def __init__(self, gop: int = GOP, fps: float = 10.0, **settings) -> None:
        self.key = generate_signing_key()
        self.trust = TrustedCameras({"cam1": self.key.public_key()})
        self.epoch = Epoch.new()
        self.video = VideoEncoders(H264Settings(keyframe_s=gop / fps, **settings), fps)
        self.seq, self.prev = 0, ZERO_DIGEST
        self.redactor = make_redactor("solid")

    def frame(self, image: np.ndarray | None = None, zones: list[Zone] | None = None):
        image = textured(seed=self.seq) if image is None else image.copy()
        zones = [Zone(40, 30, 64, 80, ZoneClass.FACE)] if zones is None else zones
        msg = protect_frame_h264(
            image,
            zones,
            camera_id="cam1",
            seq=self.seq,
            capture_time_us=1_700_000_000_000_000 + self.seq * 33_333,
            epoch=self.epoch,
            prev_digest=self.prev,
            redactor=self.redactor,
            video=self.video,
            signing_key=self.key,
        )
        self.seq += 1
        self.prev = msg.digest
        return msg, image
