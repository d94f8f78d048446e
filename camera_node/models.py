"""Where face-detector models live, and fetching YuNet from OpenCV Zoo with a pinned hash."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from common.errors import VeilcamError
from common.progress import Progress
from common.secretfiles import sha256_file, write_atomic

YUNET_FILENAME = "face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
YUNET_SIZE = 232_589
YUNET_URL = ("https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
             + YUNET_FILENAME)


def model_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/veilcam/models``, default ``~/.cache/veilcam/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "veilcam" / "models"


def find_yunet_model(configured: str = "") -> Path | None:
    """The configured model path if given (it must exist), else the cache's copy, else None."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise VeilcamError(f"YuNet model {path} not found (config faces.model); "
                               "fetch it with 'veilcam models fetch'")
        return path
    cached = model_cache_dir() / YUNET_FILENAME
    return cached if cached.is_file() else None


def fetch_yunet(url: str = YUNET_URL, dest_dir: Path | None = None, timeout: float = 30.0,
                progress: bool = True) -> Path:
    """Download YuNet into the cache, check its sha256, and only then move it into place."""
    dest = (dest_dir or model_cache_dir()) / YUNET_FILENAME
    if dest.is_file() and sha256_file(dest) == YUNET_SHA256:
        return dest
    bar = Progress(f"fetching {YUNET_FILENAME}", YUNET_SIZE, "bytes", enabled=progress)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (https URL)
            total = int(resp.headers.get("Content-Length") or YUNET_SIZE)
            chunks, done = [], 0
            while block := resp.read(64 * 1024):
                chunks.append(block)
                done += len(block)
                if done > 16 * YUNET_SIZE:
                    raise VeilcamError(f"download from {url} is far larger than the model")
                bar.update(done, total)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise VeilcamError(f"cannot download the YuNet model from {url}: {exc}") from None
    finally:
        bar.close()
    data = b"".join(chunks)
    got = hashlib.sha256(data).hexdigest()
    if got != YUNET_SHA256:
        raise VeilcamError(f"downloaded model has sha256 {got}, expected {YUNET_SHA256}; "
                           "not installed")
    write_atomic(dest, data)
    return dest
