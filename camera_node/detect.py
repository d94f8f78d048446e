"""Face detectors behind one small interface, picked by name from config.

``FaceDetector.detect(frame)`` returns boxes in the frame's own pixels. Each detector works on
a copy downscaled to ``detect_width`` (INTER_LINEAR) and scales boxes back. YuNet is the
default: on the annotated photos it found 43/43 faces against Haar's 39/43, at a tenth of the
time (DESIGN.md). Haar is the fallback when the YuNet model is absent, with a loud warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from camera_node.models import find_yunet_model
from common.config import FacesSection
from common.errors import VeilcamError

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
    resized = cv2.resize(frame, (round(w * scale), max(1, round(h * scale))),
                         interpolation=cv2.INTER_LINEAR)
    return resized, scale


class YuNetDetector:
    name = "yunet"

    def __init__(self, model: Path, detect_width: int = 640, score_threshold: float = 0.6) -> None:
        try:
            self._net = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score_threshold,
                                                  0.3, 5000)
        except cv2.error as exc:
            raise VeilcamError(f"cannot load YuNet model {model}: {exc}") from None
        self._size: tuple[int, int] | None = None
        self.detect_width = detect_width

    def detect(self, frame: np.ndarray) -> list[Box]:
        small, scale = _downscale(frame, self.detect_width, upscale=True)
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, faces = self._net.detect(small)
        if faces is None:
            return []
        return [Box(f[0] / scale, f[1] / scale, f[2] / scale, f[3] / scale, float(f[14]))
                for f in faces]


class HaarDetector:
    """OpenCV's frontal and profile cascades (profile run on the mirrored frame too).

    A fallback only: three cascades cost 150-800 ms per frame at 640 px on this class of
    machine and miss many faces (bench/recall.py). It runs at most 360 px wide."""

    name = "haar"
    MAX_WIDTH = 360

    def __init__(self, detect_width: int = 640) -> None:
        data = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if data is None or not hasattr(cv2, "CascadeClassifier"):
            raise VeilcamError("this OpenCV build has no Haar cascades (OpenCV 5 dropped them); "
                               "install the YuNet model with 'veilcam models fetch'")
        self._frontal = cv2.CascadeClassifier(str(Path(data) / "haarcascade_frontalface_default.xml"))
        self._profile = cv2.CascadeClassifier(str(Path(data) / "haarcascade_profileface.xml"))
        if self._frontal.empty() or self._profile.empty():
            raise VeilcamError(f"Haar cascade files missing from {data}")
        self.detect_width = min(detect_width, self.MAX_WIDTH)

    def detect(self, frame: np.ndarray) -> list[Box]:
        small, scale = _downscale(frame, self.detect_width)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        width = gray.shape[1]
        args = dict(scaleFactor=1.15, minNeighbors=4, minSize=(20, 20))
        found = list(self._frontal.detectMultiScale(gray, **args))
        found += list(self._profile.detectMultiScale(gray, **args))
        for x, y, w, h in self._profile.detectMultiScale(cv2.flip(gray, 1), **args):
            found.append((width - x - w, y, w, h))
        return [Box(x / scale, y / scale, w / scale, h / scale) for x, y, w, h in found]


def create_face_detector(cfg: FacesSection) -> FaceDetector | None:
    """Build the configured detector; None when face detection is switched off."""
    if not cfg.enabled:
        return None
    if cfg.backend == "haar":
        return HaarDetector(cfg.detect_width)
    model = find_yunet_model(cfg.model)
    if model is not None:
        return YuNetDetector(model, cfg.detect_width, cfg.score_threshold)
    if cfg.backend == "yunet":
        raise VeilcamError("faces.backend is 'yunet' but no model was found; set faces.model "
                           "or run 'veilcam models fetch'")
    log.warning("YuNet face model not found: FALLING BACK TO HAAR CASCADES, which miss more "
                "faces (profiles, small or tilted faces). Run 'veilcam models fetch' or set "
                "faces.model in camera.toml.")
    return HaarDetector(cfg.detect_width)
