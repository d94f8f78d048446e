"""The detector used when no real face detector can run: every frame is covered whole.

``create_face_detector`` returns one when YuNet cannot load (OpenCV without FaceDetectorYN, a
corrupt or missing model that was not explicitly configured) instead of falling back to a
weaker detector. Its ``detect`` raises, and the zone finder covers every frame whole when a
detector raises (reason ``detector_failed``), logging why: the camera keeps publishing, but no
face goes out behind detection weaker than configured.
"""

from __future__ import annotations

import numpy as np
from veilcam.common.errors import VeilcamError


class UnavailableDetector:
    name = "unavailable"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def detect(self, frame: np.ndarray) -> list:
        raise VeilcamError(f"no face detector: {self.reason}")
