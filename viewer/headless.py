"""Headless viewer for scripts and tests: write N frames as PNG plus one JSON line each."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
from veilcam.common import deployment
from veilcam.common.errors import VeilcamError
from veilcam.common.home import Home
from veilcam.common.keywrap import Identity
from veilcam.common.lifecycle import StopFlag
from veilcam.viewer.client import ReceivedFrame, RelayClient
from veilcam.viewer.freshness import DEFAULT_MAX_AGE_S, Freshness
from veilcam.viewer.playback import ArchiveReader, shown_frames
from veilcam.viewer.private import private_umask, write_private
from veilcam.viewer.render import Renderer, Shown, describe
from veilcam.viewer.trustreload import OUTDATED_TRUST_HINT, OUTDATED_TRUST_REASONS, watch_trust
from veilcam.viewer.unlock import Unlocker, no_grant_reason

log = logging.getLogger("veilcam.viewer")

REPEAT_LOG_S = 5.0  # a repeated verification failure is logged once per this many seconds


class FailureLog:
    """Frames that fail verification: the first of each reason is logged, then one summary
    line per REPEAT_LOG_S with how many more (a camera signing with a key this viewer does not
    trust fails every frame: 30 lines a second said nothing more than the first)."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.by_reason: Counter[str] = Counter()
        self.example: dict[str, str] = {}
        self._unlogged: Counter[str] = Counter()
        self._last_log: dict[str, float] = {}

    def add(self, got: ReceivedFrame) -> None:
        reason = got.problem.split(":", 1)[0] or "unknown"
        self.by_reason[reason] += 1
        self.example.setdefault(reason, got.problem)
        now = self.clock()
        last = self._last_log.get(reason)
        if last is None:
            self._last_log[reason] = now
            log.warning(
                "frame %s#%d failed verification: %s",
                got.msg.camera_id,
                got.msg.header.seq,
                got.problem,
            )
            return
        self._unlogged[reason] += 1
        if now - last >= REPEAT_LOG_S:
            self.flush(reason, now)

    def flush(self, reason: str | None = None, now: float | None = None) -> None:
        for r in [reason] if reason else list(self._unlogged):
            if self._unlogged[r]:
                log.warning(
                    "%d more frame(s) failed verification (%s) in the last %.0f s",
                    self._unlogged[r],
                    r,
                    (now or self.clock()) - self._last_log[r],
                )
                self._unlogged[r] = 0
                self._last_log[r] = now or self.clock()

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def cause(self) -> str:
        """The closing explanation when frames came but did not verify."""
        reasons = ", ".join(f"{n} x {r}" for r, n in self.by_reason.most_common())
        first = self.example[self.by_reason.most_common(1)[0][0]]
        hint = "; " + OUTDATED_TRUST_HINT if set(self.by_reason) & OUTDATED_TRUST_REASONS else ""
        return (
            f"{self.total} frame(s) arrived from the store but failed verification "
            f"({reasons}; e.g. {first}){hint}"
        )


def run_headless(
    home: Home,
    out_dir: Path,
    n_frames: int,
    identity: Identity | None = None,
    cameras: list[str] | None = None,
    timeout_s: float = 120.0,
    stop: StopFlag | None = None,
    from_us: int | None = None,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    write_images: bool = True,
    on_ready: Callable[[dict[str, str]], None] | None = None,
) -> int:
    """Write the first ``n_frames`` verified frames, live or (``from_us``) from the archive
    (``write_images`` False: every frame is still verified, decoded and unlocked, but only
    its frames.jsonl line is written: a PNG per 1080p frame costs more CPU than the camera);
    exit 0 when done, 1 on timeout (live) or when the archive holds fewer (playback).

    Live, each JSON line says the frame's ``age_s`` (seconds since capture, by this machine's
    clock) and whether it is ``stale`` (older than ``max_age_s`` plus the clock difference with
    the store): a store relaying old frames is visible. Everything written is owner-only.
    ``on_ready`` is called once it waits for frames (``--ready-file``)."""
    with private_umask():  # unlocked PNGs show what the zones hide: 0600, in a 0700 folder
        return _run(
            home,
            out_dir,
            n_frames,
            identity,
            cameras,
            timeout_s,
            stop,
            from_us,
            max_age_s,
            write_images,
            on_ready,
        )


@dataclass
class _Source:
    """Where the frames come from: the live relay or the archive from a time (with the
    preroll frames a decoder needs, flagged)."""

    frames: Iterator[ReceivedFrame]
    envelope: Callable
    close: Callable[[], None]
    where: str
    freshness: Freshness | None  # live only: playback is old by definition


def _open_source(
    home: Home,
    cameras: list[str] | None,
    timeout_s: float,
    stop: StopFlag,
    from_us: int | None,
    max_age_s: float,
) -> _Source:
    if from_us is not None:
        if not cameras or len(cameras) != 1:
            raise VeilcamError("playback (--from) needs exactly one --camera")
        reader = ArchiveReader(home, cameras[0], from_us)
        where = f"the archive of {cameras[0]} from {from_us / 1e6:.3f}"
        return _Source(reader.frames(preroll=True), reader.envelope, reader.close, where, None)
    client = RelayClient(home, cameras)
    reloader = watch_trust(home, client)
    freshness = Freshness.measured(home, max_age_s)
    deadline = time.monotonic() + timeout_s

    def live() -> Iterator[ReceivedFrame]:
        while not stop.is_set():
            if time.monotonic() > deadline:
                return
            reloader.poll()  # renewed or revoked certificates, as the store does
            got = client.receive(timeout_ms=200)
            if got is not None:
                yield got

    relay = deployment.viewer_config(home).viewer.relay
    return _Source(live(), client.envelope, client.close, relay, freshness)


@dataclass
class _FrameWriter:
    """Renders each verified frame to OUT/SEQ.png and describes every frame in frames.jsonl.

    A frame that gives no picture (an H.264 stream waiting for its next keyframe after a
    missing frame) gets a JSON line saying ``"gap": "waiting for keyframe"`` and no PNG; it
    does not count as written."""

    home: Home
    out_dir: Path
    unlocker: Unlocker | None
    freshness: Freshness | None
    write_images: bool
    written: int = 0
    stale: int = 0
    gaps: int = 0
    failures: FailureLog = field(default_factory=FailureLog)
    warned_no_grant: set[str] = field(default_factory=set)
    renderer: Renderer = field(init=False)

    def __post_init__(self) -> None:
        self.renderer = Renderer(self.unlocker)

    def take(self, got: ReceivedFrame, shown: Shown | None, jsonl: TextIO) -> None:
        if shown is None:
            self.failures.add(got)
            jsonl.write(json.dumps(describe(got.msg, False, None, got.problem)) + "\n")
            return
        if shown.image is None:
            self.gaps += 1
            if self.gaps == 1:
                log.info("%s", shown.detail or shown.gap)
            jsonl.write(json.dumps(describe(got.msg, True, shown)) + "\n")
            jsonl.flush()
            return
        if self.write_images:
            path = self.out_dir / f"{got.msg.header.seq}.png"
            ok, png = cv2.imencode(".png", shown.image)
            if not ok:
                raise VeilcamError(f"cannot encode the picture of frame {path.stem} as PNG")
            try:
                write_private(path, png.tobytes())
            except OSError as exc:
                raise VeilcamError(f"cannot write {path}: {exc.strerror}") from None
        line = describe(got.msg, True, shown)
        if self.freshness is not None:
            line.update(self.freshness.judge(got.msg.header.capture_time_us))
            if line["stale"]:
                self._count_stale(got, line)
        jsonl.write(json.dumps(line) + "\n")
        jsonl.flush()
        self._warn_no_grant(got.msg.camera_id)
        self.written += 1

    def _count_stale(self, got: ReceivedFrame, line: dict) -> None:
        self.stale += 1
        if self.stale == 1:
            log.warning(
                "frame %s#%d is %.1f s old (captured %s): the store "
                "relays old frames, or a clock is wrong; marked stale",
                got.msg.camera_id,
                got.msg.header.seq,
                line["age_s"],
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(line["capture_time_us"] / 1e6)),
            )

    def _warn_no_grant(self, camera: str) -> None:
        unlocker = self.unlocker
        if unlocker and camera in unlocker.no_grant and camera not in self.warned_no_grant:
            self.warned_no_grant.add(camera)
            reason = no_grant_reason(self.home, unlocker.user, camera)
            log.warning("unlocked as %s, but %s", unlocker.user, reason)


def _run(
    home: Home,
    out_dir: Path,
    n_frames: int,
    identity: Identity | None,
    cameras: list[str] | None,
    timeout_s: float,
    stop: StopFlag | None,
    from_us: int | None,
    max_age_s: float,
    write_images: bool,
    on_ready: Callable[[dict[str, str]], None] | None = None,
) -> int:
    stop = stop or StopFlag()
    source = _open_source(home, cameras, timeout_s, stop, from_us, max_age_s)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    unlocker = Unlocker(identity, source.envelope) if identity else None
    writer = _FrameWriter(home, out_dir, unlocker, source.freshness, write_images)
    log.info(
        "headless viewer: waiting for %d frame(s) from %s (%s)",
        n_frames,
        source.where,
        f"unlocked as {identity.name}" if identity else "public",
    )
    if on_ready is not None:
        on_ready({"source": source.where})
    try:
        with open(out_dir / "frames.jsonl", "a", encoding="utf-8") as jsonl:
            frames = iter(()) if n_frames <= 0 else source.frames
            for got, shown in shown_frames(frames, writer.renderer):
                if stop.is_set():
                    break
                writer.take(got, shown, jsonl)
                if writer.written >= n_frames:
                    break
    finally:
        writer.failures.flush()
        source.close()
    written, stale = writer.written, writer.stale
    log.info(
        "headless viewer: wrote %d frame(s) to %s%s%s",
        written,
        out_dir,
        f" ({stale} stale)" if stale else "",
        f" ({writer.gaps} without a picture: waiting for a keyframe)" if writer.gaps else "",
    )
    if written < n_frames and not stop.is_set():
        _report_shortfall(written, n_frames, from_us, writer.failures, timeout_s, source.where)
        return 1
    return 0


def _report_shortfall(
    written: int,
    n_frames: int,
    from_us: int | None,
    failures: FailureLog,
    timeout_s: float,
    relay: str,
) -> None:
    """Say why fewer frames came than asked, naming the real cause."""
    if from_us is not None:
        log.error("only %d of %d frame(s) in the archive from that time", written, n_frames)
    elif failures.total:
        log.error(
            "only %d of %d frame(s) verified within %.0f s: %s",
            written,
            n_frames,
            timeout_s,
            failures.cause(),
        )
    else:
        log.error(
            "only %d of %d frame(s) arrived within %.0f s; is the store at %s running "
            "and a camera sending?",
            written,
            n_frames,
            timeout_s,
            relay,
        )
