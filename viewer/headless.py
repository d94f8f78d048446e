"""Headless viewer for scripts and tests: write N frames as PNG plus one JSON line each."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import cv2

from common.errors import VeilcamError
from common.home import Home
from common.keywrap import Identity
from common.lifecycle import StopFlag
from viewer.client import ReceivedFrame, RelayClient
from viewer.playback import ArchiveReader
from viewer.render import describe, render
from viewer.unlock import Unlocker

log = logging.getLogger("veilcam.viewer")


def run_headless(home: Home, out_dir: Path, n_frames: int, identity: Identity | None = None,
                 cameras: list[str] | None = None, timeout_s: float = 120.0,
                 stop: StopFlag | None = None, from_us: int | None = None) -> int:
    """Write the first ``n_frames`` verified frames, live or (``from_us``) from the archive;
    exit 0 when done, 1 on timeout (live) or when the archive holds fewer (playback)."""
    cfg = home.viewer_config().viewer
    stop = stop or StopFlag()
    if from_us is not None:
        if not cameras or len(cameras) != 1:
            raise VeilcamError("playback (--from) needs exactly one --camera")
        reader = ArchiveReader(home, cameras[0], from_us)
        source, lookup, close = reader.frames(), reader.envelope, reader.close
        where = f"the archive of {cameras[0]} from {from_us / 1e6:.3f}"
    else:
        client = RelayClient(home, cameras)
        deadline = time.monotonic() + timeout_s

        def live() -> Iterator[ReceivedFrame]:
            while not stop.is_set():
                if time.monotonic() > deadline:
                    return
                got = client.receive(timeout_ms=200)
                if got is not None:
                    yield got

        source, lookup, close = live(), client.envelope, client.close
        where = cfg.relay
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unlocker = Unlocker(identity, lookup) if identity else None
    written = 0
    log.info("headless viewer: waiting for %d frame(s) from %s (%s)", n_frames, where,
             f"unlocked as {identity.name}" if identity else "public")
    try:
        with open(out_dir / "frames.jsonl", "a", encoding="utf-8") as jsonl:
            for got in ([] if n_frames <= 0 else source):
                if stop.is_set():
                    break
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
                if written >= n_frames:
                    break
    finally:
        close()
    log.info("headless viewer: wrote %d frame(s) to %s", written, out_dir)
    if written < n_frames and not stop.is_set():
        log.error("only %d of %d frame(s) %s", written, n_frames,
                  "in the archive from that time" if from_us is not None else
                  f"arrived within {timeout_s:.0f} s; is the store at {cfg.relay} running "
                  "and a camera sending?")
        return 1
    return 0
