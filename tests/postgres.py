"""A real PostgreSQL for the tests: Debian's server (``initdb``, ``pg_ctl``; on PATH, or in
/usr/lib/postgresql/N/bin where the postgresql-N package puts them) in a temporary folder,
listening on a free loopback port and on a Unix socket in that folder, with a password
(SCRAM) for TCP connections so the store's password handling is exercised; stopped (fast
shutdown, waited for) and removed at the end.

PostgreSQL refuses to run as root: under root (CI containers) the cluster belongs to the
``postgres`` user of the package, or ``nobody``, and its folder is made outside pytest's
root-only temporary tree."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "veilcam"
PASSWORD = "pg-test-secret-0123456789"
START_TIMEOUT_S = 30.0


def pg_bin(tool: str = "pg_ctl") -> str | None:
    """The PostgreSQL tool ``tool`` (PATH first, then the newest /usr/lib/postgresql/N/bin)."""
    found = shutil.which(tool)
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return versions[-1] if versions else None


def available() -> bool:
    return all(pg_bin(t) for t in ("initdb", "pg_ctl", "postgres"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> pwd.struct_passwd | None:
    """The user the server runs as when we are root (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


class PostgresServer:
    """One PostgreSQL cluster; ``dsn`` (without the password) once ``start`` returned."""

    def __init__(self) -> None:
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="veilcam-pg-"))
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log_path = self.root / "server.log"
        self.port = _free_port()
        self.started = False

    @property
    def dsn(self) -> str:
        return self.dsn_of("veilcam")

    def dsn_of(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _as_server_user(self) -> None:
        if self.user is not None:
            os.setgid(self.user.pw_gid)
            os.setgroups([])
            os.setuid(self.user.pw_uid)

    def _run(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=self._as_server_user,
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C"},
        )

    def start(self, timeout: float = START_TIMEOUT_S) -> PostgresServer:
        """initdb (first time), start, wait until it accepts connections, create the
        ``veilcam`` database. Raises with the server's log when it does not come up."""
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not (initdb and pg_ctl):
            raise RuntimeError("no initdb/pg_ctl: sh .ci/install-postgres (Debian postgresql)")
        deadline = time.monotonic() + timeout
        if not self.data.exists():
            pwfile = self.root / "pw"
            pwfile.write_text(PASSWORD + "\n")
            if self.user is not None:
                os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
            r = self._run(
                initdb, "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=trust", "--locale=C", "-E", "UTF8",
                "--no-sync",
                timeout=max(1.0, deadline - time.monotonic()),
            )  # fmt: skip
            pwfile.unlink()
            if r.returncode != 0:
                raise RuntimeError(f"initdb failed: {r.stderr.strip()[-2000:]}")
            self.sockets.mkdir()
            if self.user is not None:
                os.chown(self.sockets, self.user.pw_uid, self.user.pw_gid)
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.sockets} -c max_connections=40"
        )
        r = self._run(
            pg_ctl, "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w",
            "-t", str(max(1, int(deadline - time.monotonic()))), "start",
            timeout=max(1.0, deadline - time.monotonic() + 5),
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()} {self.tail()}")
        self.started = True
        import psycopg

        with psycopg.connect(self.dsn_of("postgres"), password=PASSWORD, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname='veilcam'").fetchone()
            if not exists:
                conn.execute("CREATE DATABASE veilcam")
        return self

    def connect(self):
        """A psycopg connection to the ``veilcam`` database (autocommit), for assertions."""
        import psycopg

        return psycopg.connect(self.dsn, password=PASSWORD, autocommit=True)

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, remove: bool = True) -> None:
        """Fast shutdown (waited for, up to 20 s); the folder removed unless ``remove`` is
        False (a restart on the same data)."""
        pg_ctl = pg_bin("pg_ctl")
        if self.started and pg_ctl:
            try:
                self._run(pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "-t", "20", "stop",
                          timeout=25)  # fmt: skip
            except subprocess.TimeoutExpired:
                self._run(pg_ctl, "-D", str(self.data), "-m", "immediate", "stop", timeout=10)
            self.started = False
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)
