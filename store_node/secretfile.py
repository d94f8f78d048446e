"""Secrets the store reads from files named in its config (object-store keys, the index's
database password): owner-only, or refused before anything is read from them."""

from __future__ import annotations

import stat
from pathlib import Path

from veilcam.common.config import ConfigError


def read_secret_file(setting: str, configured: str, home_root: Path) -> tuple[Path, str]:
    """(path, text) of the file config key ``setting`` names (``configured``; relative to the
    home). A ``ConfigError`` names the key and the file, never its content: unreadable, or
    readable by group or others (a secret others could read is already out)."""
    path = Path(configured)
    path = path if path.is_absolute() else home_root / path
    try:
        mode = path.stat().st_mode
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            f"{setting} {path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 it"
        )
    return path, text
