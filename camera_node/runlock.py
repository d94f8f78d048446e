"""One camera process per camera id and home: an exclusive lock on ``state/camera-ID.lock``.

Two processes on one home (a systemd unit plus a manual run) would publish the same sequence
numbers from the same chain state, and the store would reject one of them frame after frame as
replays. The lock is an ``flock`` on an open file: the kernel drops it when the process ends,
crash included, so a stale lock file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from veilcam.common.errors import VeilcamError


class CameraLock:
    _fd = -1

    def __init__(self, path: Path, camera_id: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(self._fd)
            self._fd = -1
            raise VeilcamError(
                f"camera {camera_id} is already running from this home (pid "
                f"{holder}, lock {self.path}); stop it first (one process per "
                "camera: two would publish the same frame numbers)"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def __del__(self) -> None:
        self.release()

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1
