"""Face detectors behind one small interface, picked by name from config.

``FaceDetector.detect(frame)`` returns boxes in the frame's own pixels. Each detector works on
a copy downscaled to ``detect_width`` (INTER_LINEAR) and scales boxes back; the native-
resolution passes for small faces are camera_node/facescan.py's. YuNet is the default and its
model ships in the package: on the annotated photos it found 43/43 faces against Haar's 39/43,
at a tenth of the time. Haar runs only when ``faces.backend = "haar"`` is configured; with no
usable detector the camera covers whole frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from veilcam.camera_node.models import find_yunet_model
from veilcam.common.config import FacesSection
from veilcam.common.errors import VeilcamError

log = logging.getLogger("veilcam.detect")


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float
    score: float = 1.0


class FaceDetector(Protocol):
    name: str

    def detect(self, frame: np.ndarray) -> list[Box]: ...


MAX_UPSCALE = 2.0


def _downscale(frame: np.ndarray, width: int, upscale: bool = False) -> tuple[np.ndarray, float]:
    """Resize to ``width`` (INTER_LINEAR). Smaller frames are left alone unless ``upscale``,
    which enlarges them up to MAX_UPSCALE times: YuNet misses faces under ~20 px otherwise."""
    h, w = frame.shape[:2]
    scale = width / w
    if scale == 1.0 or (scale > 1.0 and not upscale):
        return frame, 1.0
    scale = min(scale, MAX_UPSCALE)
    resized = cv2.resize(
        frame, (round(w * scale), max(1, round(h * scale))), interpolation=cv2.INTER_LINEAR
    )
    return resized, scale


class YuNetDetector:
    name = "yunet"

    def __init__(self, model: Path, detect_width: int = 640, score_threshold: float = 0.6) -> None:
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(model), "", (320, 320), score_threshold, 0.3, 5000
            )
        except cv2.error as exc:
            raise VeilcamError(f"cannot load YuNet model {model}: {exc}") from None
        self._size: tuple[int, int] | None = None
        self.detect_width = detect_width
        self.model = model
        self.score_threshold = score_threshold

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Faces in ``frame`` at ``detect_width`` (its own pixels)."""
        small, scale = _downscale(frame, self.detect_width, upscale=True)
        return [
            Box(b.x / scale, b.y / scale, b.w / scale, b.h / scale, b.score)
            for b in self.detect_native(small)
        ]

    def detect_native(self, image: np.ndarray) -> list[Box]:
        """Faces in ``image`` at the resolution it has (the native-resolution cell passes)."""
        size = (image.shape[1], image.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, faces = self._net.detect(image)
        if faces is None:
            return []
        return [
            Box(float(f[0]), float(f[1]), float(f[2]), float(f[3]), float(f[14])) for f in faces
        ]


class HaarDetector:
    """OpenCV's frontal and profile cascades (profile run on the mirrored frame too).

    Used only when ``faces.backend = "haar"`` is configured, never as a silent fallback: three
    cascades cost 150-800 ms per frame at 640 px on this class of machine and miss many faces
    (bench/recall.py). It runs at most 360 px wide."""

    name = "haar"
    MAX_WIDTH = 360

    def __init__(self, detect_width: int = 640) -> None:
        data = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if data is None or not hasattr(cv2, "CascadeClassifier"):
            raise VeilcamError(
                "faces.backend = 'haar', but this OpenCV build has no Haar "
                'cascades (OpenCV 5 dropped them); set backend = "auto" '
                "under [faces] to use YuNet, which ships with veilcam"
            )
        self._frontal = cv2.CascadeClassifier(
            str(Path(data) / "haarcascade_frontalface_default.xml")
        )
        self._profile = cv2.CascadeClassifier(str(Path(data) / "haarcascade_profileface.xml"))
        if self._frontal.empty() or self._profile.empty():
            raise VeilcamError(f"Haar cascade files missing from {data}")
        self.detect_width = min(detect_width, self.MAX_WIDTH)

    def detect(self, frame: np.ndarray) -> list[Box]:
        small, scale = _downscale(frame, self.detect_width)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        width = gray.shape[1]

        def detect(cascade: cv2.CascadeClassifier, image: np.ndarray) -> list:
            return list(
                cascade.detectMultiScale(image, scaleFactor=1.15, minNeighbors=4, minSize=(20, 20))
            )

        found = detect(self._frontal, gray) + detect(self._profile, gray)
        for x, y, w, h in detect(self._profile, cv2.flip(gray, 1)):
            found.append((width - x - w, y, w, h))
        return [Box(x / scale, y / scale, w / scale, h / scale) for x, y, w, h in found]


def create_face_detector(cfg: FacesSection) -> FaceDetector | None:
    """Build the configured detector; None when face detection is switched off.

    ``backend = "haar"`` gives Haar, and only that gives Haar. ``auto`` and ``yunet`` give YuNet
    from ``faces.model``, else the model cache, else the copy shipped in the package. A
    configured ``faces.model`` that is missing or does not load is a VeilcamError (the camera
    does not start). Any other reason YuNet cannot run gives an UnavailableDetector, whose
    every ``detect`` raises, so the zone finder covers whole frames, never a weaker detector.
    """
    from veilcam.camera_node.detector_unavailable import UnavailableDetector
    from veilcam.camera_node.models import model_cache_dir, unpinned_problem

    def unavailable(reason: str) -> UnavailableDetector:
        log.error(
            "NO FACE DETECTOR: %s. The camera covers WHOLE FRAMES until this is fixed "
            "('veilcam doctor' checks it).",
            reason,
        )
        return UnavailableDetector(reason)

    if not cfg.enabled:
        return None
    if cfg.backend == "haar":
        detector = HaarDetector(cfg.detect_width)
        log.warning(
            "faces.backend = 'haar': using OpenCV's Haar cascades as configured; they "
            "miss more faces than YuNet (profiles, small or tilted faces). Set backend "
            '= "auto" under [faces] to use YuNet, which ships with veilcam.'
        )
        return detector
    model = find_yunet_model(cfg.model)  # a configured path that is missing raises
    if not hasattr(cv2, "FaceDetectorYN"):
        return unavailable(
            f"this OpenCV build ({cv2.__version__}) has no cv2.FaceDetectorYN, "
            "so YuNet cannot run; install opencv-python-headless>=4.8,<5"
        )
    if model is None:
        return unavailable(
            f"no usable YuNet model (the copy shipped with veilcam is missing "
            f"or corrupt, and the cache {model_cache_dir()} has none); "
            "reinstall veilcam, or run 'veilcam models fetch'"
        )
    if not cfg.model:
        problem = unpinned_problem(model)
        if problem:
            return unavailable(problem)
    try:
        return YuNetDetector(model, cfg.detect_width, cfg.score_threshold)
    except VeilcamError as exc:
        if cfg.model:
            raise VeilcamError(f"{exc} (config faces.model)") from None
        return unavailable(str(exc))
