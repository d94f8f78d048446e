"""Headless viewer for scripts and tests: write N frames as PNG plus one JSON line each."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2

from common.errors import VeilcamError
from common.home import Home
from common.keywrap import Identity
from common.lifecycle import StopFlag
from viewer.client import RelayClient
from viewer.render import describe, render
from viewer.unlock import Unlocker

log = logging.getLogger("veilcam.viewer")


def run_headless(home: Home, out_dir: Path, n_frames: int, identity: Identity | None = None,
                 cameras: list[str] | None = None, timeout_s: float = 120.0,
                 stop: StopFlag | None = None) -> int:
    """Write the first ``n_frames`` verified frames; exit 0 when done, 1 on timeout."""
    cfg = home.viewer_config().viewer
    client = RelayClient(home, cameras)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unlocker = Unlocker(identity, client.envelope) if identity else None
    stop = stop or StopFlag()
    written = 0
    deadline = time.monotonic() + timeout_s
    log.info("headless viewer: waiting for %d frame(s) from %s (%s)", n_frames, cfg.relay,
             f"unlocked as {identity.name}" if identity else "public")
    try:
        with open(out_dir / "frames.jsonl", "a", encoding="utf-8") as jsonl:
            while written < n_frames and not stop.is_set():
                if time.monotonic() > deadline:
                    log.error("only %d of %d frame(s) arrived within %.0f s; is the store at %s "
                              "running and a camera sending?", written, n_frames, timeout_s,
                              cfg.relay)
                    return 1
                got = client.receive(timeout_ms=200)
                if got is None:
                    continue
                if not got.verified:
                    log.warning("frame %s#%d failed verification: %s", got.msg.camera_id,
                                got.msg.header.seq, got.problem)
                    jsonl.write(json.dumps(describe(got.msg, False, None, got.problem)) + "\n")
                    continue
                shown = render(got.msg, unlocker)
                path = out_dir / f"{got.msg.header.seq}.png"
                if not cv2.imwrite(str(path), shown.image):
                    raise VeilcamError(f"cannot write {path}")
                jsonl.write(json.dumps(describe(got.msg, True, shown)) + "\n")
                jsonl.flush()
                written += 1
    finally:
        client.close()
    log.info("headless viewer: wrote %d frame(s) to %s", written, out_dir)
    return 0
