"""Where face-detector models live, and fetching YuNet from OpenCV Zoo with a pinned hash.

YuNet ships inside the package (``camera_node/model_files/``, with its licences), so every
installation has it, offline included. ``find_yunet_model`` looks, in order, at the configured
path (``faces.model``), the model cache (``veilcam models fetch`` puts updates there), and the
packaged copy. The packaged copy is used only when its sha256 is the pinned one (checked once
per process): a corrupt copy counts as absent, it is never loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

from veilcam.common.errors import VeilcamError
from veilcam.common.progress import Progress
from veilcam.common.secretfiles import sha256_file, write_atomic

YUNET_FILENAME = "face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
YUNET_SIZE = 232_589
YUNET_URL = (
    "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/" + YUNET_FILENAME
)
PACKAGED_DIR = Path(__file__).resolve().parent / "model_files"
PACKAGED_YUNET = PACKAGED_DIR / YUNET_FILENAME

log = logging.getLogger("veilcam.models")

_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256
_reported: set[str] = set()
_lock = threading.Lock()


def model_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/veilcam/models``, default ``~/.cache/veilcam/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "veilcam" / "models"


def cached_yunet_path() -> Path:
    return model_cache_dir() / YUNET_FILENAME


def model_digest(path: Path) -> str:
    """sha256 of a model file, computed once per process for each version of the file."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _lock:
        digest = _digests.get(key)
        if digest is None:
            digest = _digests[key] = sha256_file(path)
        return digest


def _pin_problem(path: Path) -> tuple[str, str]:
    """("unreadable", why) or ("mismatch", the two digests) or ("", "") for a pinned file."""
    try:
        digest = model_digest(path)
    except OSError as exc:
        return "unreadable", str(exc)
    if digest != YUNET_SHA256:
        return "mismatch", f"{digest[:12]}..., expected {YUNET_SHA256[:12]}..."
    return "", ""


def packaged_yunet_problem() -> str:
    """Why the packaged YuNet cannot be used ("" when it can)."""
    path = PACKAGED_YUNET
    kind, detail = _pin_problem(path)
    if kind == "unreadable":
        return f"the YuNet model shipped with veilcam ({path}) is missing or unreadable: {detail}"
    if kind == "mismatch":
        return f"the YuNet model shipped with veilcam ({path}) is corrupt: sha256 {detail}"
    return ""


def packaged_yunet() -> Path | None:
    """The packaged copy when its sha256 is the pinned one, else None (logged once)."""
    problem = packaged_yunet_problem()
    if not problem:
        return PACKAGED_YUNET
    _log_once(f"{problem}: not loaded; reinstall veilcam, or run 'veilcam models fetch'")
    return None


def _log_once(message: str) -> None:
    with _lock:
        first = message not in _reported
        _reported.add(message)
    if first:
        log.error("%s", message)


def unpinned_problem(path: Path) -> str:
    """For a model taken from the cache or the package: "" when its sha256 is the pinned one,
    else why it must not be loaded."""
    kind, detail = _pin_problem(path)
    if kind == "unreadable":
        return f"cannot read the YuNet model {path}: {detail}"
    if kind == "mismatch":
        return (
            f"the YuNet model {path} does not match the pinned sha256 (got {detail}): "
            "corrupt or replaced; 'veilcam models fetch' replaces it (or delete it to use "
            "the copy shipped with veilcam)"
        )
    return ""


def find_yunet_model(configured: str = "") -> Path | None:
    """The configured model path if given (it must exist), else the cache's copy if its
    sha256 is the pinned one (a corrupt cache is logged and passed over), else the copy
    shipped in the package (if its sha256 is the pinned one), else None."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise VeilcamError(
                f"YuNet model {path} not found (config faces.model); correct "
                "the path, or remove faces.model to use the model shipped "
                "with veilcam"
            )
        return path
    cached = cached_yunet_path()
    if cached.is_file():
        problem = unpinned_problem(cached)
        if not problem:
            return cached
        _log_once(f"{problem}; using the copy shipped with veilcam instead")
    return packaged_yunet()


def model_origin(path: Path, configured: str = "") -> str:
    """Where a path from ``find_yunet_model`` came from: 'faces.model', 'cache' or 'package'."""
    if configured:
        return "faces.model"
    return "package" if path == PACKAGED_YUNET else "cache"


def fetch_yunet(
    url: str = YUNET_URL, dest_dir: Path | None = None, timeout: float = 30.0, progress: bool = True
) -> Path:
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
        raise VeilcamError(
            f"downloaded model has sha256 {got}, expected {YUNET_SHA256}; not installed"
        )
    write_atomic(dest, data)
    return dest
