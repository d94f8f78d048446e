"""Exports started from the browser page: one at a time, each in its own thread, into the
viewer's owner-only export folder; finished ones are downloaded as video or zipped bundle."""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from veilcam.common.errors import VeilcamError
from veilcam.common.home import Home
from veilcam.viewer.export import ExportState, export
from veilcam.viewer.private import make_private, private_dir, private_umask

log = logging.getLogger("veilcam.web")


@dataclass
class ExportJob:
    """One export started from the page; its thread updates ``done``/``total``/``state``."""

    job_id: str
    camera: str
    video: Path
    owner: str = ""  # the session token that started an unlocked export ("" for redacted)
    state: ExportState = ExportState.RUNNING
    done: int = 0
    total: int = 0
    error: str = ""
    manifest: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {
            "id": self.job_id,
            "camera": self.camera,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "file": str(self.video),
            "bundle": str(self.video) + ".bundle" if self.state == ExportState.DONE else "",
            "frames": self.manifest.get("frames", 0),
            "unlocked_for": self.manifest.get("unlocked_for"),
        }


class Exports:
    """Exports run one at a time in their own thread, into the viewer's export folder."""

    MAX_KEPT = 50

    def __init__(self, home: Home, folder: Path) -> None:
        self.home, self.folder = home, folder
        self.jobs: dict[str, ExportJob] = {}
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()
        self._zip_lock = threading.Lock()

    def start(self, camera: str, from_us: int, to_us: int, identity, owner: str = "") -> ExportJob:
        stamp = dt.datetime.fromtimestamp(from_us / 1e6, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        private_dir(self.folder)  # owner-only: unlocked exports show what the zones hide
        base = f"{camera}-{stamp}-{(to_us - from_us) // 1_000_000}s"
        video = self.folder / f"{base}.mp4"
        n = 1
        while video.exists() or video.with_name(video.name + ".bundle").exists():
            n += 1
            video = self.folder / f"{base}-{n}.mp4"
        job = ExportJob(secrets.token_urlsafe(12), camera, video, owner if identity else "")
        with self._lock:
            if len(self.jobs) >= self.MAX_KEPT:
                finished = [j for j in self.jobs.values() if j.state != ExportState.RUNNING]
                for old in finished[: len(self.jobs) - self.MAX_KEPT + 1]:
                    del self.jobs[old.job_id]
            self.jobs[job.job_id] = job
        threading.Thread(
            target=self._run,
            args=(job, from_us, to_us, identity),
            name=f"export-{camera}",
            daemon=True,
        ).start()
        return job

    def _run(self, job: ExportJob, from_us: int, to_us: int, identity) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        with self._one_at_a_time, private_umask():
            try:
                job.manifest = export(
                    self.home, job.camera, from_us, to_us, job.video, identity, progress
                )
                make_private(job.video)
                make_private(job.video.with_name(job.video.name + ".bundle"))
                job.done = job.total = job.manifest["frames"]
                job.state = ExportState.DONE
                log.info(
                    "exported %d frame(s) of %s to %s (+ .bundle)", job.done, job.camera, job.video
                )
            except (VeilcamError, OSError) as exc:
                job.error, job.state = str(exc), ExportState.FAILED
                log.warning("export of %s failed: %s", job.camera, exc)

    def get(self, job_id: str) -> ExportJob | None:
        with self._lock:
            return self.jobs.get(job_id)

    def bundle_zip(self, job: ExportJob) -> Path:
        """The video and its bundle in one zip, laid out as on disk (made once, kept beside)."""
        bundle = job.video.with_name(job.video.name + ".bundle")
        target = job.video.with_name(bundle.name + ".zip")
        with self._zip_lock:
            if target.exists():
                return target
            partial = target.with_name(target.name + ".part")
            partial.unlink(missing_ok=True)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
                # the manifest names the video beside the bundle
                zf.write(job.video, job.video.name, compress_type=zipfile.ZIP_STORED)
                for f in sorted(bundle.rglob("*")):
                    if f.is_file():
                        zf.write(f, str(f.relative_to(bundle.parent)))
            partial.replace(target)
        return target
