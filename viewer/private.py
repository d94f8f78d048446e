"""Owner-only output: what a viewer writes after decrypting (unlocked PNGs, MP4 exports, the
export zip) is as sensitive as the keys that opened it, so it is created 0600 in 0700 folders,
whatever the process umask."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

PRIVATE_UMASK = 0o077


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders created meanwhile (by this process, any thread) are owner-only."""
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) 0700; an existing folder is made 0700 too."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Create (or replace) ``path`` 0600 from the start and write ``data``: never readable by
    others, even for a moment, and no chmod after the fact (which a file removed meanwhile,
    by a cleaner of the output folder, would turn into a crash)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def make_private(path: Path) -> None:
    """chmod 0600 a file, or 0700 a folder and 0600/0700 everything under it."""
    path = Path(path)
    if path.is_dir():
        os.chmod(path, 0o700)
        for child in path.rglob("*"):
            if child.is_symlink():
                continue
            os.chmod(child, 0o700 if child.is_dir() else 0o600)
    elif path.exists():
        os.chmod(path, 0o600)
