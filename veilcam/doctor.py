"""``veilcam doctor --home HOME``: check a deployment the way its nodes will use it, and say
exactly how to fix what is wrong.

Every check prints one line ``OK|WARN|FAIL <check>: <finding>``; a WARN or FAIL is followed by
``  fix: <the command to run or the config key to change>``. Exit code 0 without a FAIL, 1 with
one. A broken deployment (missing or corrupt files, bad config, a store that does not answer)
is a finding, never a traceback.

Which checks run depends on what this machine runs, judged from the config files present in
``HOME/config`` (docs/GUIDE.md, "What goes where"): ``camera.toml`` (camera node),
``store.toml`` (store node), ``viewer.toml`` (viewer). Checks:

- ``config/<file>``: parsed with the nodes' own loader (unknown keys and bad values fail).
- ``layout``: the key files and folders the local nodes need.
- ``permissions``: private keys, keystores and secrets readable by their owner only (0600).
- ``model``: the face detector the camera will use; YuNet's pinned SHA-256.
- ``cert/ca``, ``crl``, ``cert/<role>:<name>``: chain, validity period (WARN under 14 days),
  revocation, and that the local private keys match their certificate.
- ``port/<socket>``: the store's bind ports (and metrics ports) are free, or held by this
  deployment's running store (it proves the store key in a CurveZMQ handshake).
- ``archive``: the store's archive folder is writable; free space against retention.
- ``store/camera``, ``store/viewer``: a real CurveZMQ handshake with this node's own key to
  each configured store endpoint, and a query.
- ``trust``: this home's CA, CRL and certificates against the store's (``TRUST`` query); a
  mismatch is ``trust/<role>:<name>``, ``trust/crl`` or ``trust/ca``, with which side is newer
  and what to copy where.
- ``clock``: this machine's clock against the store's (``TIME`` query): WARN above 2 s, FAIL
  above 30 s (certificate validity and capture times depend on it).
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import logging
import os
import shlex
import socket
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypedDict

import zmq
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from zmq.utils.monitor import recv_monitor_message

from veilcam.common import deployment
from veilcam.common.config import CameraConfig, StoreConfig, ViewerConfig, load_config
from veilcam.common.errors import IdentityError, VeilcamError, VerificationError
from veilcam.common.home import Home
from veilcam.common.pki import CertificateAuthority, load_cert
from veilcam.common.query import QueryRefused, TrustReply
from veilcam.common.queryclient import (
    ClockUnknown,
    StoreLink,
    StoreQueryClient,
    measure_skew,
)
from veilcam.common.transport import curve_pair, make_client
from veilcam.common.urls import redact_text, redact_url

log = logging.getLogger("veilcam.doctor")

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CERT_WARN_DAYS = 14
SKEW_WARN_S = 2.0
SKEW_FAIL_S = 30.0
ROLES = ("camera", "store", "viewer")
GUIDE = "docs/GUIDE.md"


class LocalConfigs(TypedDict, total=False):
    """The valid config of each node this machine runs (a role is absent when its config file
    is missing or invalid)."""

    camera: CameraConfig
    store: StoreConfig
    viewer: ViewerConfig


@dataclass
class Result:
    status: str
    check: str
    finding: str
    fix: str = ""


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def _days(delta: dt.timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.0f} days" if abs(days) >= 2 else f"{delta.total_seconds() / 3600:.1f} hours"


# --------------------------------------------------------------------------- network probes


def _split_tcp(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a tcp:// endpoint; None for ipc:// and inproc://."""
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    if ";" in host:  # tcp://source;destination: the destination counts
        host = host.split(";")[-1]
    return host.strip("[]"), int(port)


def _connect_address(endpoint: str) -> str:
    """Where a local client reaches a bind endpoint ('*' and 0.0.0.0 mean loopback here)."""
    host_port = _split_tcp(endpoint)
    if host_port is None:
        return endpoint
    host, port = host_port
    if host in ("*", "0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


@dataclass
class Probe:
    """What answered a CurveZMQ client: ``outcome`` is one of ``ok`` (handshake succeeded),
    ``refused_key`` (a server holding the pinned key refused ours), ``wrong_server`` (the peer
    broke off the handshake: it does not hold the pinned key, or does not speak ZeroMQ),
    ``silent`` (connected, no handshake), ``refused`` (nothing listens), ``timeout`` (no
    answer at all), ``bad_endpoint``."""

    outcome: str
    detail: str = ""


def probe_curve(
    endpoint: str, keys: tuple[bytes, bytes], server_key: bytes, sock_type: int, timeout_s: float
) -> Probe:
    """Connect a CURVE client socket and watch its monitor until the handshake settles."""
    unresolvable = _unresolvable(endpoint)
    if unresolvable is not None:
        return unresolvable
    sock = _curve_client(keys, server_key, sock_type)
    monitor = sock.get_monitor_socket(addr=f"inproc://doctor-{os.urandom(6).hex()}")
    try:
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            return Probe("bad_endpoint", str(exc))
        return _watch_handshake(monitor, endpoint, timeout_s)
    finally:
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
        monitor.close(linger=0)
        sock.close(linger=0)


def _unresolvable(endpoint: str) -> Probe | None:
    """A ``bad_endpoint`` probe when a tcp:// endpoint's host name does not resolve."""
    host_port = _split_tcp(endpoint)
    if host_port is not None:
        try:
            socket.getaddrinfo(host_port[0], host_port[1], proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError) as exc:
            return Probe("bad_endpoint", f"cannot resolve {host_port[0]!r}: {exc}")
    return None


def _curve_client(keys: tuple[bytes, bytes], server_key: bytes, sock_type: int) -> zmq.Socket:
    """A CURVE client socket pinned to ``server_key``, not yet connected."""
    sock: zmq.Socket = zmq.Context.instance().socket(sock_type)
    sock.setsockopt(zmq.LINGER, 0)
    if sock_type == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"\0doctor-never-matches")
    make_client(sock, keys, server_key)
    return sock


def _watch_handshake(monitor: zmq.Socket, endpoint: str, timeout_s: float) -> Probe:
    """Read monitor events until one settles the handshake or ``timeout_s`` passes."""
    connected = False
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if not monitor.poll(max(1, int(left * 1000))):
            break
        event = recv_monitor_message(monitor)["event"]
        log.debug("probe %s: %s", endpoint, zmq.Event(event).name)
        if event == zmq.EVENT_CONNECTED:
            connected = True
            continue
        settled = _handshake_event(event, connected)
        if settled is not None:
            return settled
    return Probe("silent" if connected else "timeout")


def _handshake_event(event: int, connected: bool) -> Probe | None:
    """What a monitor event (other than CONNECTED) says of the handshake; None: not settled."""
    if event == zmq.EVENT_CONNECT_RETRIED and not connected:
        return Probe("refused", "connection refused")
    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return Probe("ok")
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return Probe("refused_key")
    if event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
        return Probe("wrong_server", "handshake failed")
    if event == zmq.EVENT_DISCONNECTED and connected:
        return Probe("wrong_server", "the peer closed the connection during the handshake")
    return None


def _ephemeral_keys() -> tuple[bytes, bytes]:
    """A throw-away client key: a store refuses it only after proving its own key (CurveZMQ
    sends the refusal inside the authenticated handshake), which identifies the store."""
    return curve_pair(X25519PrivateKey.generate())


# --------------------------------------------------------------------------- clock


# ClockUnknown and measure_skew live in common.queryclient (the viewer measures the same);
# imported above and re-exported from here.


# --------------------------------------------------------------------------- the doctor


class Doctor:
    def __init__(
        self, root: Path, timeout_s: float = 3.0, now: Callable[[], float] = time.time
    ) -> None:
        self.home = Home(Path(root).expanduser().resolve())
        self.timeout_s = timeout_s
        self.now = now
        self.results: list[Result] = []
        self.roles: list[str] = []
        self.cfg: LocalConfigs = {}
        self.ca: CertificateAuthority | None = None
        self.trust_problem = "cert/ca"  # the check to fix first when self.ca is None
        self.store_key: bytes | None = None
        # role -> client whose link answered (for the clock and trust checks)
        self.links: dict[str, StoreQueryClient] = {}

    # -------------------------------------------------------------- plumbing
    def add(self, status: str, check: str, finding: str, fix: str = "") -> None:
        self.results.append(Result(status, check, _one_line(finding), _one_line(fix)))

    @property
    def cmd_home(self) -> str:
        return _q(self.home.root)

    def reissue(self, role: str, name: str, days: float | None = None) -> str:
        """How to get new keys and a certificate for a node, on this machine or elsewhere."""
        cmd = f"veilcam cert issue {role}:{name}"
        days_flag = f" --days {days:g}" if days else ""
        then = (
            " (every camera and viewer then needs the new identities/certs/store-store.crt)"
            if role == "store"
            else ""
        )
        if self.home.ca_key_path.exists():  # this is the admin machine
            return (
                f"run '{cmd} --home {self.cmd_home}{days_flag}' and restart the {role} (if "
                f"it runs on another machine, copy identities/certs/{role}-{name}.crt and "
                f"identities/{role}/{name}.*.pem there){then}"
            )
        return (
            f"on the admin machine (where identities/ca/ca.key.pem is) run '{cmd} --home "
            f"HOME{days_flag}', then copy identities/certs/{role}-{name}.crt and "
            f"identities/{role}/{name}.*.pem from there to this machine{then}"
        )

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.home.root))
        except ValueError:
            return str(path)

    def run(self) -> list[Result]:
        if not self.check_home():
            return self.results
        checks = [
            self.check_configs,
            self.check_layout,
            self.check_permissions,
            self.check_unneeded_keys,
            self.check_source,
            self.check_model,
            self.check_certificates,
            self.check_ports,
            self.check_archive,
            self.check_store_links,
            self.check_trust,
            self.check_clock,
        ]
        for check in checks:
            try:
                check()
            except Exception as exc:  # a doctor reports; it must not die on what it examines
                log.debug("check %s raised", check.__name__, exc_info=True)
                self.add(
                    FAIL,
                    check.__name__.removeprefix("check_"),
                    f"the check itself failed: {type(exc).__name__}: {exc}",
                    "run again with -v for details and report it as a bug of 'veilcam doctor'",
                )
        for link in self.links.values():
            link.close()
        self.links.clear()
        return self.results

    # -------------------------------------------------------------- home and config
    def check_home(self) -> bool:
        root = self.home.root
        if not self.home.config_dir.is_dir():
            self.add(
                FAIL,
                "home",
                f"{root} is not a veilcam home (no config/ folder)",
                f"create one with 'veilcam init {_q(root)}', or give --home the folder "
                "that holds config/ and identities/",
            )
            return False
        self.roles = [r for r in ROLES if (self.home.config_dir / f"{r}.toml").exists()]
        if not self.roles:
            self.add(
                FAIL,
                "home",
                f"{root}/config holds none of camera.toml, store.toml, "
                "viewer.toml: nothing to run here",
                f"copy the config file of the node this machine runs from the admin "
                f"machine ({GUIDE}, 'What goes where')",
            )
            return False
        return True

    def check_configs(self) -> None:
        for role in self.roles:
            path = self.home.config_dir / f"{role}.toml"
            try:
                self._load_config(role, path)
            except VeilcamError as exc:
                message = str(exc).replace(f"{path}: ", "")
                self.add(
                    FAIL,
                    f"config/{role}.toml",
                    f"{message} (the {role} node will not "
                    f"start; the {role} checks below are skipped)",
                    f"edit {path}: every key and its allowed values are in "
                    "docs/CONFIG.md (or 'veilcam config-docs')",
                )
                continue
            self.add(OK, f"config/{role}.toml", "valid")

    def _load_config(self, role: str, path: Path) -> None:
        """Validate ``path`` as the config of ``role`` (one of ROLES) and keep it."""
        if role == "camera":
            self.cfg["camera"] = load_config(path, CameraConfig)
        elif role == "store":
            self.cfg["store"] = load_config(path, StoreConfig)
        else:
            self.cfg["viewer"] = load_config(path, ViewerConfig)

    def _own_identities(self) -> list[tuple[str, str]]:
        """(role, name) of the node identities this machine's nodes use; the store's
        certificate is needed by every node (clients pin its key)."""
        own = []
        if "camera" in self.cfg:
            own.append(("camera", self.cfg["camera"].camera.id))
        own.append(("store", "store"))
        if "viewer" in self.cfg:
            own.append(("viewer", self.cfg["viewer"].viewer.identity))
        return own

    def _key_paths(self) -> list[tuple[str, str, Path]]:
        """Private key files the local nodes load: (role, name, path)."""
        out = []
        if "camera" in self.cfg:
            cam = self.cfg["camera"].camera.id
            out += [
                ("camera", cam, self.home.signing_key_path("camera", cam)),
                ("camera", cam, self.home.transport_key_path("camera", cam)),
            ]
        if "store" in self.cfg:
            out.append(("store", "store", self.home.transport_key_path("store", "store")))
        if "viewer" in self.cfg:
            name = self.cfg["viewer"].viewer.identity
            out.append(("viewer", name, self.home.transport_key_path("viewer", name)))
        return out

    # -------------------------------------------------------------- layout
    def check_layout(self) -> None:
        missing, fixes = [], []
        for role, name, path in self._key_paths():
            if not path.is_file():
                missing.append(self.rel(path))
                fix = (
                    f"copy identities/{role}/{name}.*.pem (with identities/certs/"
                    f"{role}-{name}.crt) from where they were issued, or "
                    + self.reissue(role, name)
                )
                if fix not in fixes:
                    fixes.append(fix)
        if missing:
            self.add(FAIL, "layout", "missing: " + ", ".join(missing), "; ".join(fixes))
            return
        what = ", ".join(dict.fromkeys(f"{r}:{n}" for r, n, _ in self._key_paths()))
        self.add(OK, "layout", f"every key file the local nodes load is present ({what})")

    def check_source(self) -> None:
        if "camera" not in self.cfg:
            return
        source = self.cfg["camera"].camera.source.strip()
        fix = (
            f"set camera.source in {self.home.camera_config_path} to a device index ('0'), "
            "an existing video file or an rtsp:// URL (or pass --source to 'veilcam "
            "camera')"
        )
        if "://" in source:
            self._probe_stream(source)
        elif source.isdigit():
            device = Path(f"/dev/video{source}")
            if sys.platform.startswith("linux") and not device.exists():
                self.add(
                    WARN,
                    "source",
                    f"device {source}: {device} does not exist (camera "
                    "not plugged in, or no permission to see it)",
                    f"plug the camera in and check 'ls -l /dev/video*' (the camera's user "
                    f"needs the 'video' group), or {fix[0].lower() + fix[1:]}",
                )
            else:
                self.add(OK, "source", f"device {source}")
        elif self.home.resolve(source).is_file():
            from veilcam.camera_node.sources import probe_source  # PyAV: only when needed

            path = self.home.resolve(source)
            try:
                info = probe_source(str(path))
            except VeilcamError as exc:
                self.add(FAIL, "source", str(exc), fix)
                return
            self.add(OK, "source", f"video file {path}: {info.describe()}")
        else:
            self.add(
                FAIL,
                "source",
                f"video file {self.home.resolve(source)} not found: the camera will not start",
                fix,
            )

    def _probe_stream(self, source: str) -> None:
        """Open the camera's stream as the camera will (its transport and timeouts) and decode
        a frame: codec, resolution and frame rate, or why not. The URL only ever redacted."""
        from veilcam.camera_node.sources import SourceAuthError, probe_source

        cam = self.cfg["camera"].camera
        shown = redact_url(source)
        try:
            info = probe_source(
                source,
                rtsp_transport=cam.rtsp_transport,
                open_timeout_s=cam.open_timeout_s,
                read_timeout_s=cam.read_timeout_s,
            )
        except SourceAuthError as exc:
            self.add(
                FAIL,
                "source",
                redact_text(str(exc)),
                f"put the camera's user and password in camera.source in "
                f"{self.home.camera_config_path} (rtsp://USER:PASSWORD@HOST/PATH)",
            )
            return
        except VeilcamError as exc:
            self.add(
                WARN,
                "source",
                f"{redact_text(str(exc))} (the camera starts anyway and keeps retrying)",
                "check that the camera is powered and reachable from this machine (ping it, "
                "open the URL in VLC), the host, port and path in camera.source, and "
                "camera.rtsp_transport (tcp passes firewalls; udp needs its ports open)",
            )
            return
        self.add(OK, "source", f"stream {shown}: {info.describe()}")

    # -------------------------------------------------------------- permissions
    def _secret_files(self) -> list[Path]:
        root = self.home.root
        found: list[Path] = []
        for pattern in (
            "identities/*/*.key.pem",
            "identities/store/account-secret",
            "users/*/keystore.json",
            "demo-password.txt",
        ):
            found += [p for p in sorted(root.glob(pattern)) if p.is_file()]
        return found

    def check_permissions(self) -> None:
        loose = []
        secrets = self._secret_files()
        for path in secrets:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                loose.append((path, mode))
        if loose:
            listed = ", ".join(f"{self.rel(p)} ({m:04o})" for p, m in loose)
            self.add(
                FAIL,
                "permissions",
                f"secret file(s) readable by others: {listed}",
                "chmod 600 "
                + " ".join(_q(p) for p, _ in loose)
                + " (and consider the keys exposed if others could log in here: "
                "issue new ones with 'veilcam cert issue ROLE:NAME')",
            )
            return
        self.add(
            OK,
            "permissions",
            f"{len(secrets)} secret file(s), each readable by its owner only (0600)",
        )

    # -------------------------------------------------------------- keys held without need
    def check_unneeded_keys(self) -> None:
        """Private keys this machine's nodes never load: each is one more thing to steal. A
        viewer or camera machine needs no CA key and no other node's key; the CA key beside a
        store lets whoever takes the store add recipients and cameras (SECURITY.md)."""
        home = self.home
        needed = {p.resolve() for _, _, p in self._key_paths()}
        if "camera" in self.cfg:  # the signing key too (_key_paths lists both camera keys)
            cam = self.cfg["camera"].camera.id
            needed.add(home.signing_key_path("camera", cam).resolve())
        if "store" in self.cfg:
            needed.add(home.signing_key_path("store", "store").resolve())
        if "viewer" in self.cfg:
            name = self.cfg["viewer"].viewer.identity
            needed.add(home.signing_key_path("viewer", name).resolve())
        runs = ", ".join(self.roles) or "nothing"
        findings, fixes = [], []
        if home.ca_key_path.exists():
            if "store" in self.roles:
                findings.append(
                    f"the CA key {self.rel(home.ca_key_path)} is beside the store: "
                    "whoever takes this machine can add recipients and cameras"
                )
                fixes.append(
                    f"keep identities/ca/ca.key.pem on a separate admin machine and "
                    f"delete it here ({GUIDE}, 'The pieces'); on a single machine "
                    "this is the accepted risk of the one-home setup"
                )
            else:
                findings.append(
                    f"the CA key {self.rel(home.ca_key_path)} is on a machine that "
                    f"runs only {runs}, which never uses it"
                )
                fixes.append(
                    f"move identities/ca/ca.key.pem to the admin machine and delete it "
                    f"here ({GUIDE}, 'What goes where')"
                )
        extra = []
        for role in ROLES:
            for path in sorted((home.root / "identities" / role).glob("*.key.pem")):
                if path.resolve() not in needed:
                    extra.append(path)
        if extra:
            findings.append(
                f"private key(s) no local node loads (this machine runs {runs}): "
                + ", ".join(self.rel(p) for p in extra)
            )
            fixes.append(
                "delete them here (each belongs only on its own node's machine: "
                f"{GUIDE}, 'What goes where'): rm " + " ".join(_q(p) for p in extra)
            )
        if findings:
            self.add(WARN, "keys", "; ".join(findings), "; ".join(fixes))
        else:
            self.add(OK, "keys", "no private key here that the local nodes do not need")

    # -------------------------------------------------------------- model
    def check_model(self) -> None:
        if "camera" not in self.cfg:
            return
        import cv2

        from veilcam.camera_node.models import (
            YUNET_FILENAME,
            YUNET_SHA256,
            find_yunet_model,
            model_cache_dir,
            model_digest,
            model_origin,
            packaged_yunet_problem,
        )

        faces = self.cfg["camera"].faces
        cfg_path = self.home.camera_config_path
        if not faces.enabled:
            self.add(
                WARN,
                "model",
                "faces.enabled = false: faces are neither detected nor "
                "redacted (only static zones are)",
                f"set enabled = true under [faces] in {cfg_path} unless no face can "
                "ever be in view",
            )
            return
        if faces.backend == "haar":
            self.add(
                WARN,
                "model",
                "faces.backend = 'haar': OpenCV's cascades miss more "
                "faces than YuNet, whose model ships with veilcam",
                f'set backend = "auto" under [faces] in {cfg_path}',
            )
            return
        try:
            path = find_yunet_model(faces.model)
        except VeilcamError as exc:
            self.add(
                FAIL,
                "model",
                f"{exc}: the camera will not start",
                f"correct the path, or remove faces.model from {cfg_path} (the model "
                "shipped with veilcam is used)",
            )
            return
        if not hasattr(cv2, "FaceDetectorYN"):
            self.add(
                FAIL,
                "model",
                f"this OpenCV build ({cv2.__version__}) has no "
                "cv2.FaceDetectorYN: the camera has no face detector and covers whole "
                "frames",
                "pip install 'opencv-python-headless>=4.8,<5'",
            )
            return
        cache = model_cache_dir()
        if path is None:
            self.add(
                FAIL,
                "model",
                f"{packaged_yunet_problem()}, and the cache {cache} has "
                "no model: the camera has no face detector and covers whole frames",
                "reinstall veilcam (pip install --force-reinstall), or run 'veilcam "
                "models fetch' as the user the camera runs as (it downloads YuNet into "
                "the cache and checks the pinned sha256)",
            )
            return
        cached = cache / YUNET_FILENAME
        if not faces.model and cached.is_file() and cached != path:
            self.add(
                WARN,
                "model",
                f"the cached model {cached} does not match the pinned "
                "sha256 (corrupt or replaced): passed over, the camera uses "
                f"{path}",
                f"run 'veilcam models fetch' (it replaces the file after "
                f"checking the hash), or delete {cached}",
            )
        digest = model_digest(path)
        origin = model_origin(path, faces.model)
        if digest == YUNET_SHA256:
            where = {
                "package": "shipped with veilcam",
                "cache": "from the model cache",
                "faces.model": "faces.model",
            }[origin]
            self.add(
                OK,
                "model",
                f"YuNet {path} ({where}; sha256 matches the pinned {YUNET_SHA256[:12]}...)",
            )
        elif faces.model:
            try:
                cv2.FaceDetectorYN.create(str(path), "", (320, 320))
            except cv2.error as exc:
                self.add(
                    FAIL,
                    "model",
                    f"{path} (faces.model) does not load as a YuNet model "
                    f"({str(exc).strip().splitlines()[-1]}): the camera will not start",
                    f"remove faces.model from {cfg_path} (the model shipped with "
                    "veilcam is used), or correct the path",
                )
                return
            self.add(
                WARN,
                "model",
                f"{path} (faces.model) is not the pinned YuNet 2023mar "
                f"(sha256 {digest[:12]}..., expected {YUNET_SHA256[:12]}...)",
                f"if that is not deliberate, remove faces.model from {cfg_path} (the "
                "model shipped with veilcam is used)",
            )
        else:
            self.add(
                FAIL,
                "model",
                f"the cached model {path} does not match the pinned "
                f"sha256 (got {digest[:12]}..., expected {YUNET_SHA256[:12]}...): "
                "corrupt or replaced; the camera covers whole frames until it is "
                "replaced",
                f"run 'veilcam models fetch' (it replaces the file after "
                f"checking the hash), or delete {path} to use the model shipped with "
                "veilcam",
            )

    # -------------------------------------------------------------- certificates
    def check_certificates(self) -> None:
        home, now = self.home, dt.datetime.fromtimestamp(self.now(), dt.UTC)
        try:
            ca_cert = load_cert(home.ca_cert_path)
            ca = CertificateAuthority(ca_cert)
        except VeilcamError as exc:
            self.add(
                FAIL,
                "cert/ca",
                f"{exc}: no node can verify any other",
                f"copy identities/ca/ca.crt from the admin machine ({GUIDE}, 'What goes where')",
            )
            return
        left = ca_cert.not_valid_after_utc - now
        if now < ca_cert.not_valid_before_utc or left.total_seconds() <= 0:
            self.add(
                FAIL,
                "cert/ca",
                f"the deployment CA is valid only from "
                f"{ca_cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                f"{ca_cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; now is "
                f"{now:%Y-%m-%d %H:%M} UTC",
                "check this machine's clock ('timedatectl status'); a CA past its end "
                "cannot be renewed in place: create a new deployment with 'veilcam init'",
            )
        elif left < dt.timedelta(days=CERT_WARN_DAYS):
            self.add(
                WARN,
                "cert/ca",
                f"the deployment CA expires in {_days(left)}",
                "a CA cannot be renewed in place: create a new deployment with 'veilcam "
                "init' and move the nodes to it before then",
            )
        else:
            self.add(
                OK, "cert/ca", f"valid until {ca_cert.not_valid_after_utc:%Y-%m-%d} ({_days(left)})"
            )
        self.ca = ca
        # the revocation list
        if not home.crl_path.exists():
            self.add(
                WARN,
                "crl",
                f"{self.rel(home.crl_path)} is missing: revoked certificates are accepted here",
                "copy identities/ca/crl.pem from the "
                "admin machine (it changes at every 'veilcam cert revoke')",
            )
        else:
            try:
                ca.load_crl(home.crl_path)
            except VeilcamError as exc:
                self.ca = None  # the nodes cannot load their trust either (Home.ca raises)
                self.trust_problem = "crl"
                self.add(
                    FAIL,
                    "crl",
                    f"{exc}: the nodes cannot load their trust",
                    "copy identities/ca/crl.pem from the admin machine again",
                )
            else:
                self.add(
                    OK,
                    "crl",
                    f"signed by the deployment CA, {len(ca.revoked)} revoked certificate(s)",
                )
        # node certificates
        own = self._own_identities()
        store_here = "store" in self.cfg
        present = sorted(home.certs_dir.glob("*.crt")) if home.certs_dir.is_dir() else []
        seen = set()
        for path in present:
            role, _, name = path.stem.partition("-")
            seen.add((role, name))
            self._check_node_cert(
                ca,
                path,
                role,
                name,
                now,
                needed=(role, name) in own or store_here,
                mine=(role, name) in own,
            )
        for role, name in own:
            if (role, name) not in seen:
                self.add(
                    FAIL,
                    f"cert/{role}:{name}",
                    f"{self.rel(home.cert_path(role, name))} is missing",
                    "copy it from the admin machine; if it is lost there "
                    "too, " + self.reissue(role, name),
                )

    def _check_node_cert(
        self,
        ca: CertificateAuthority,
        path: Path,
        role: str,
        name: str,
        now: dt.datetime,
        needed: bool,
        mine: bool,
    ) -> None:
        check = f"cert/{role}:{name}"
        reissue = self.reissue(role, name)
        bad = FAIL if needed else WARN
        retire = (
            ""
            if needed
            else (f"; if the {role} is retired, move {self.rel(path)} to identities/certs/archive/")
        )
        try:
            cert = load_cert(path)
            ident = ca.describe(cert)
        except VeilcamError as exc:
            self.add(bad, check, str(exc), reissue + retire)
            return
        if role not in ROLES or (ident.role, ident.name) != (role, name):
            self.add(
                bad,
                check,
                f"{self.rel(path)} holds the certificate of "
                f"{ident.role}:{ident.name}, not {role}:{name}",
                f"put the right file in place ({role}-{name}.crt) or {reissue}" + retire,
            )
            return
        try:
            ca.verify_node(cert, role, at=now)
        except VerificationError as exc:
            if exc.reason == "certificate_revoked":
                if mine:
                    self.add(FAIL, check, f"{exc}: the nodes refuse it", reissue)
                else:
                    self.add(OK, check, "revoked (on the CRL: every node refuses it)")
                return
            fix = reissue
            if exc.reason == "certificate_not_yet_valid":
                fix = (
                    "check this machine's clock ('timedatectl status'; enable NTP with "
                    "'timedatectl set-ntp true'), or " + reissue
                )
            self.add(bad, check, str(exc), fix + retire)
            return
        left = cert.not_valid_after_utc - now
        matched = 0
        if mine:
            problem, matched = self._key_mismatch(role, name, ident)
            if problem:
                self.add(
                    FAIL,
                    check,
                    problem,
                    f"copy identities/{role}/{name}.key.pem and "
                    f"{name}.transport.key.pem from the machine where the certificate "
                    f"was issued, together with it, or {reissue}",
                )
                return
        if left < dt.timedelta(days=CERT_WARN_DAYS):
            self.add(
                WARN,
                check,
                f"expires in {_days(left)} ({cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)",
                self.reissue(role, name, days=365),
            )
            return
        self.add(
            OK,
            check,
            f"valid until {cert.not_valid_after_utc:%Y-%m-%d} ({_days(left)})"
            + (", matches the local keys" if matched else ""),
        )

    def _key_mismatch(self, role: str, name: str, ident) -> tuple[str, int]:
        """For a local node: do its private keys belong to its certificate? Returns the
        problem (or "") and how many keys were compared."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from veilcam.common.pki import load_private_key

        raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        checks: list[tuple[Path, type[X25519PrivateKey] | type[Ed25519PrivateKey], bytes, str]]
        checks = []
        if role == "camera" or role == "viewer" or (role == "store" and "store" in self.cfg):
            checks.append(
                (
                    self.home.transport_key_path(role, name),
                    X25519PrivateKey,
                    ident.transport_key,
                    "transport (CurveZMQ)",
                )
            )
        if role == "camera":
            checks.append(
                (
                    self.home.signing_key_path(role, name),
                    Ed25519PrivateKey,
                    ident.signing_key.public_bytes(*raw),
                    "signing",
                )
            )
        compared = 0
        for path, kind, expected, what in checks:
            if not path.is_file():
                continue  # the layout check reports it
            try:
                key = load_private_key(path, kind)
            except VeilcamError as exc:
                return str(exc), compared
            if key.public_key().public_bytes(*raw) != expected:
                return (
                    f"the {what} key {self.rel(path)} does not belong to this certificate "
                    "(keys and certificate from different 'cert issue' runs)",
                    compared,
                )
            compared += 1
        return "", compared

    # -------------------------------------------------------------- ports
    def check_ports(self) -> None:
        sockets = []
        if "store" in self.cfg:
            store = self.cfg["store"]
            c = store.store
            sockets += [
                ("ingest", c.ingest_bind, zmq.DEALER),
                ("relay", c.relay_bind, zmq.SUB),
                ("query", c.query_bind, zmq.DEALER),
            ]
        for name, endpoint, sock_type in sockets:
            self._check_zmq_port(name, endpoint, sock_type)
        for role in ("store", "camera"):
            metrics = getattr(self.cfg.get(role), "metrics", None)
            if metrics is not None and metrics.port:
                self._check_metrics_port(role, metrics.host, metrics.port)

    def _bind_test(self, host: str, port: int) -> OSError | None:
        host = "0.0.0.0" if host in ("*", "") else host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libzmq does
            try:
                s.bind((host, port))
            except OSError as exc:
                return exc
        return None

    def _check_zmq_port(self, name: str, endpoint: str, sock_type: int) -> None:
        check, key = f"port/{name}", f"store.{name}_bind"
        cfg_path = self.home.store_config_path
        host_port = _split_tcp(endpoint)
        if host_port is None:
            self.add(OK, check, f"{endpoint} is not a TCP endpoint (nothing to check)")
            return
        host, port = host_port
        try:
            error = self._bind_test(host, port)
        except (OSError, socket.gaierror, OverflowError) as exc:
            error = exc if isinstance(exc, OSError) else OSError(str(exc))
        if error is None:
            self.add(OK, check, f"{endpoint} is free (no store is running here now)")
            return
        if error.errno == errno.EADDRINUSE:
            store_key = self._store_key()
            if store_key is None:
                self.add(
                    FAIL,
                    check,
                    f"{endpoint} is in use, by whom cannot be told: the "
                    "store certificate does not verify here",
                    f"fix {self.trust_problem} above, then run doctor again",
                )
                return
            probe = probe_curve(
                _connect_address(endpoint),
                _ephemeral_keys(),
                store_key,
                sock_type,
                self.timeout_s,
            )
            if probe.outcome in ("ok", "refused_key"):
                self.add(
                    OK,
                    check,
                    f"{endpoint} is in use by this deployment's running store "
                    "(it proved the store key in a CurveZMQ handshake)",
                )
            else:
                holder = (
                    "a ZeroMQ server without this deployment's store key (another veilcam store?)"
                    if probe.outcome == "wrong_server"
                    else "another program (it does not answer like a veilcam store)"
                )
                self.add(
                    FAIL,
                    check,
                    f"{endpoint} is in use by {holder}: the store cannot start",
                    f"find it with 'ss -ltnp \"sport = :{port}\"' and stop it, or change "
                    f"{key} in {cfg_path} (and the matching endpoint in the camera and "
                    "viewer configs)",
                )
            return
        if error.errno in (errno.EADDRNOTAVAIL, errno.EINVAL) or isinstance(error, socket.gaierror):
            self.add(
                FAIL,
                check,
                f"{host!r} in {endpoint} is not an address of this machine "
                f"({error.strerror or error})",
                f"set {key} in {cfg_path} to an address of this machine, or "
                f"tcp://*:{port} for every interface",
            )
            return
        if error.errno == errno.EACCES:
            self.add(
                FAIL,
                check,
                f"port {port} needs privileges to bind ({error.strerror})",
                f"use a port above 1023 in {key} in {cfg_path}",
            )
            return
        self.add(FAIL, check, f"cannot bind {endpoint}: {error}", f"check {key} in {cfg_path}")

    def _check_metrics_port(self, role: str, host: str, port: int) -> None:
        check = f"port/{role}-metrics"
        cfg_path = self.home.config_dir / f"{role}.toml"
        try:
            error = self._bind_test(host, port)
        except OSError as exc:
            error = exc
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '*', '') else host}:{port}/metrics"
        if error is None:
            self.add(OK, check, f"{host}:{port} is free (the {role} is not running here now)")
            return
        if error.errno == errno.EADDRINUSE:
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:  # noqa: S310
                    body = resp.read(1 << 20).decode("utf-8", "replace")
            except (urllib.error.URLError, OSError, ValueError):
                body = ""
            if f"veilcam_{role}_" in body:
                self.add(OK, check, f"{url} is served by the running {role}")
                return
        self.add(
            WARN,
            check,
            f"{host}:{port} cannot be bound ({error.strerror or error}): the "
            f"{role} runs on without metrics",
            f"change port under [metrics] in {cfg_path} "
            f"(or pass --metrics-port), or stop what holds port {port}",
        )

    # -------------------------------------------------------------- archive
    def check_archive(self) -> None:
        if "store" not in self.cfg:
            return
        import shutil

        cfg = self.cfg["store"]
        path = self.home.resolve(cfg.archive.path)
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if path.exists() and not path.is_dir():
            self.add(
                FAIL,
                "archive",
                f"{path} is not a folder",
                f"set archive.path in {self.home.store_config_path} to a folder",
            )
            return
        if not os.access(existing, os.W_OK | os.X_OK):
            self.add(
                FAIL,
                "archive",
                f"{existing} is not writable by this user: the store cannot archive",
                "make it writable by the user the store runs as (e.g. "
                f"'sudo chown -R veilcam: {_q(existing)}'), or set archive.path in "
                f"{self.home.store_config_path}",
            )
            return
        usage = shutil.disk_usage(existing)
        free_mb = usage.free / 2**20
        floor = cfg.retention.min_free_mb
        if free_mb < floor:
            self.add(
                WARN,
                "archive",
                f"{free_mb:.0f} MiB free on the archive's disk, under "
                f"retention.min_free_mb = {floor:g}: the store deletes the oldest segments",
                f"free disk space, move archive.path to a larger disk, or set "
                f"[retention] max_age_days / max_gb_per_camera in "
                f"{self.home.store_config_path}",
            )
            return
        self.add(OK, "archive", f"{path} writable, {free_mb / 1024:.1f} GiB free")

    # -------------------------------------------------------------- store links
    def _store_key(self) -> bytes | None:
        if self.store_key is None and self.ca is not None:
            try:
                self.store_key = deployment.store_identity(self.home, self.ca).transport_key
            except VeilcamError:
                self.trust_problem = "cert/store:store"
                return None
        return self.store_key

    def check_store_links(self) -> None:
        for role in ("camera", "viewer"):
            if role in self.cfg:
                self._check_link(role)

    def _check_link(self, role: str) -> None:
        check = f"store/{role}"
        cfg_path = self.home.config_dir / f"{role}.toml"
        if role == "camera":
            camera_cfg = self.cfg["camera"]
            name = camera_cfg.camera.id
            endpoints = [
                ("store.ingest", camera_cfg.store.ingest, zmq.DEALER),
                ("store.query", camera_cfg.store.query, zmq.DEALER),
            ]
        else:
            viewer_cfg = self.cfg["viewer"]
            name = viewer_cfg.viewer.identity
            endpoints = [
                ("viewer.relay", viewer_cfg.viewer.relay, zmq.SUB),
                ("viewer.query", viewer_cfg.viewer.query, zmq.DEALER),
            ]
        store_key = self._store_key()
        if store_key is None:
            self.add(
                FAIL,
                check,
                "not tried: the store certificate does not verify here, so "
                "its key cannot be pinned",
                f"fix {self.trust_problem} above first",
            )
            return
        try:
            keys = curve_pair(deployment.transport_key(self.home, role, name))
        except VeilcamError as exc:
            self.add(FAIL, check, f"not tried: {exc}", "fix layout above first")
            return
        for key, endpoint, sock_type in endpoints:
            probe = probe_curve(endpoint, keys, store_key, sock_type, self.timeout_s)
            if probe.outcome != "ok":
                status, finding, fix = self._explain(probe, role, name, key, endpoint, cfg_path)
                self.add(status, check, finding, fix)
                return
        # a real query, through the same client code the nodes use
        query_endpoint = endpoints[1][1]
        link = StoreQueryClient(StoreLink(self.home, query_endpoint, keys=keys), self.timeout_s)
        try:
            if role == "camera":
                grants = link.grants(name).documents
                answer = f"{len(grants)} grant(s) for camera {name}"
            else:
                link.time()
                answer = "query answered"
        except VeilcamError as exc:  # QueryRefused: its reason; QueryError: what is malformed
            link.close()
            self.add(
                FAIL,
                check,
                f"{query_endpoint} ({endpoints[1][0]}): handshake "
                f"succeeded but the query failed: {exc}",
                "look at the store's log; restart it if it is stuck",
            )
            return
        self.links.setdefault(role, link)
        if self.links[role] is not link:
            link.close()
        self.add(
            OK,
            check,
            f"{', '.join(e for _, e, _ in endpoints)}: CurveZMQ handshake as "
            f"{role}:{name} accepted by the store; {answer}",
        )

    def _explain(
        self, probe: Probe, role: str, name: str, key: str, endpoint: str, cfg_path: Path
    ) -> tuple[str, str, str]:
        where = f"{endpoint} ({key} in {self.rel(cfg_path)})"
        host_port = _split_tcp(endpoint)
        port = host_port[1] if host_port else "?"
        store_home = self.cmd_home if "store" in self.cfg else "HOME"
        start = (
            f"start the store ('veilcam store --home {store_home}' or 'systemctl start "
            f"veilcam-store'), or set {key} in {cfg_path} to the store's address"
        )
        if probe.outcome == "refused":
            return (
                FAIL,
                f"nothing listens at {where}: connection refused (the store is not "
                "running, or the address is wrong)",
                start,
            )
        if probe.outcome == "timeout":
            return (
                FAIL,
                f"no answer from {where} within {self.timeout_s:g} s (host down, or "
                "a firewall drops the connection)",
                f"{start}; open TCP port {port} from this machine to the store ({GUIDE}, 'Ports')",
            )
        if probe.outcome == "silent":
            return (
                FAIL,
                f"something listens at {where} but does not speak CurveZMQ like the "
                f"store (no handshake within {self.timeout_s:g} s)",
                f"point {key} in {cfg_path} at the store's port (check the store's "
                "store.*_bind), or stop the program holding that port",
            )
        if probe.outcome == "refused_key":
            if self._revoked_here(role, name):
                return (
                    FAIL,
                    f"the store at {where} refused this {role}'s key: its "
                    f"certificate {role}-{name}.crt is revoked (on the CRL)",
                    "a revoked certificate cannot be made valid again, and copying it "
                    f"anywhere does not help: {self.reissue(role, name)}, and copy the "
                    f"new identities/certs/{role}-{name}.crt to the store",
                )
            return (
                FAIL,
                f"the store at {where} refused this {role}'s key: its certificate "
                f"{role}-{name}.crt is unknown, expired or revoked on the store machine",
                f"if it was revoked (the store's CRL may be newer than this machine's), "
                f"{self.reissue(role, name)}; otherwise copy identities/certs/"
                f"{role}-{name}.crt (as issued with these keys) to the store's home (the "
                "store reloads certificates within a second); check doctor on the store "
                "machine",
            )
        if probe.outcome == "wrong_server":
            return (
                FAIL,
                f"what answers at {where} does not hold the key of this home's store "
                f"certificate ({probe.detail}): another deployment, an older store "
                "certificate, or not a veilcam store",
                "copy identities/certs/store-store.crt and identities/ca/ca.crt from the "
                f"store's deployment, or fix {key} in {cfg_path}",
            )
        return (FAIL, f"{where}: {probe.detail or probe.outcome}", f"correct {key} in {cfg_path}")

    def _revoked_here(self, role: str, name: str) -> bool:
        """Whether this machine's CRL lists the node's certificate."""
        if self.ca is None:
            return False
        try:
            self.ca.verify_node(load_cert(self.home.cert_path(role, name)), role)
        except VerificationError as exc:
            return exc.reason == "certificate_revoked"
        except (VeilcamError, OSError, ValueError):
            return False
        return False

    # -------------------------------------------------------------- trust
    def check_trust(self) -> None:
        """This home's CA, CRL and certificates against the store's (TRUST query): a
        viewer holding an out-of-date camera certificate fails every frame of that camera,
        a store with an older CRL still accepts what was revoked here."""
        if not self.links:
            if "camera" in self.cfg or "viewer" in self.cfg:
                self.add(
                    WARN,
                    "trust",
                    "certificates not compared with the store's: no store link answered",
                    "fix the store/* checks above, then run doctor again",
                )
            elif "store" in self.cfg:
                self.add(
                    OK,
                    "trust",
                    "this machine runs the store (its certificates are the reference); run "
                    "doctor on the camera and viewer machines",
                )
            return
        findings: dict[str, Result] = {}
        compared = 0
        for role, client in self.links.items():
            try:
                reply = client.trust(self.timeout_s)
            except QueryRefused as exc:
                older = exc.unknown_command
                self.add(
                    WARN,
                    "trust",
                    "certificates not compared with the store's: "
                    + ("the store does not answer TRUST (older veilcam)" if older else exc.reason),
                    "upgrade veilcam on the store" if older else "look at the store's log",
                )
                return
            except VeilcamError as exc:
                self.add(
                    WARN,
                    "trust",
                    f"certificates not compared with the store's: {exc}",
                    "run doctor again; look at the store's log if it keeps failing",
                )
                return
            for result in self.compare_trust(reply, role):
                findings.setdefault(result.check, result)
            compared += len(reply.certificates)
        if not findings:
            self.add(
                OK,
                "trust",
                f"the CA, the CRL and {compared} certificate(s) here are the store's",
            )
        self.results.extend(findings.values())

    def _local_certs(self) -> dict[tuple[str, str], tuple[str, int]]:
        """(role, name) -> (SHA-256 of the DER, not-before µs) of this home's readable
        certificates (unreadable ones are the cert/* checks' finding)."""
        out = {}
        for path in sorted(self.home.certs_dir.glob("*-*.crt")):
            role, _, name = path.stem.partition("-")
            try:
                cert = load_cert(path)
            except IdentityError:
                continue
            der = cert.public_bytes(serialization.Encoding.DER)
            out[(role, name)] = (
                hashlib.sha256(der).hexdigest(),
                int(cert.not_valid_before_utc.timestamp() * 1_000_000),
            )
        return out

    def _admin_copy(self, files: str, store_newer: bool | None) -> str:
        """How to bring ``files`` (paths in a home) to where they are missing: here when
        the store's are newer, to the store when this home's are, both when unknown."""
        if store_newer is None:
            return (
                f"copy the admin home's {files} (where identities/ca/ca.key.pem is) to this "
                "machine and to the store's home (nodes reload certificates and the CRL)"
            )
        if store_newer:
            if self.home.ca_key_path.exists():
                return (
                    f"this is the admin home, yet the store holds newer {files}: copy them "
                    "from the store's home here, or re-issue (veilcam cert issue)"
                )
            return (
                f"copy {files} from the admin home (where identities/ca/ca.key.pem is) to "
                f"{self.cmd_home} (running nodes reload certificates and the CRL)"
            )
        return (
            f"copy {files} from the admin home to the store's home (the store reloads "
            "certificates and the CRL within a second)"
        )

    def compare_trust(self, reply: TrustReply, role: str) -> list[Result]:
        """Mismatches between this home and the store's TRUST answer (given as ``role``:
        the store answers a camera its own certificate and the store's, a viewer every
        camera's and its own)."""
        out: list[Result] = []
        if role == "camera":
            own = (role, self.cfg["camera"].camera.id)
        elif role == "viewer":
            own = (role, self.cfg["viewer"].viewer.identity)
        else:
            own = (role, "")
        if self.ca is not None:
            local_ca = hashlib.sha256(self.ca.cert.public_bytes(serialization.Encoding.DER))
            if local_ca.hexdigest() != reply.ca_sha256:
                out.append(
                    Result(
                        FAIL,
                        "trust/ca",
                        "the store's CA certificate differs from identities/ca/ca.crt here: "
                        "another deployment's store, or this home's CA was replaced",
                        self._admin_copy("identities/ca/ca.crt", True),
                    )
                )
        out.extend(self._compare_crl(reply))
        local = self._local_certs()
        theirs = {(c.role, c.name): c for c in reply.certificates}
        for key, cert in theirs.items():
            here = local.get(key)
            path = f"identities/certs/{key[0]}-{key[1]}.crt"
            who = f"{key[0]} {key[1]}"
            if here is None:
                if key[0] == "camera" and role == "viewer":
                    out.append(
                        Result(
                            WARN,
                            f"trust/{key[0]}:{key[1]}",
                            f"the store trusts {who} but this home has no certificate for "
                            "it: its frames cannot be verified here",
                            self._admin_copy(path, True),
                        )
                    )
                continue
            if here[0] == cert.sha256:
                continue
            # certificate times have whole seconds: two issued in one second are a tie
            store_newer = None if cert.not_before_us == here[1] else cert.not_before_us > here[1]
            out.append(
                Result(
                    FAIL if key[0] == "camera" else WARN,
                    f"trust/{key[0]}:{key[1]}",
                    f"{who}'s certificate here ({path}) differs from the store's, which "
                    + {
                        True: "was issued later",
                        False: "is older than this one",
                        None: "was issued in the same second",
                    }[store_newer]
                    + (
                        ": frames of this camera fail verification on one side"
                        if key[0] == "camera"
                        else ""
                    ),
                    self._admin_copy(f"{path} and identities/ca/crl.pem", store_newer),
                )
            )
        wanted = [k for k in local if k[0] == "camera" and (role == "viewer" or k == own)]
        for key in wanted:
            if key not in theirs:
                path = f"identities/certs/{key[0]}-{key[1]}.crt"
                out.append(
                    Result(
                        WARN if key != own else FAIL,
                        f"trust/{key[0]}:{key[1]}",
                        f"the store has no certificate of {key[0]} {key[1]}: it refuses "
                        "that camera's frames",
                        self._admin_copy(path, False),
                    )
                )
        return out

    def _compare_crl(self, reply: TrustReply) -> list[Result]:
        theirs = reply.crl
        here = None
        if self.home.crl_path.exists():
            try:
                crl = x509.load_pem_x509_crl(self.home.crl_path.read_bytes())
            except ValueError:
                return []  # the crl check says so
            here = (
                hashlib.sha256(crl.public_bytes(serialization.Encoding.DER)).hexdigest(),
                int(crl.last_update_utc.timestamp() * 1_000_000),
            )
        if here is None and theirs is None:
            return []
        if here is not None and theirs is not None and here[0] == theirs.sha256:
            return []
        if theirs is not None and (here is None or theirs.last_update_us >= here[1]):
            when = dt.datetime.fromtimestamp(theirs.last_update_us / 1e6, dt.UTC)
            return [
                Result(
                    WARN,
                    "trust/crl",
                    "this home's revocation list (identities/ca/crl.pem) is "
                    + ("missing" if here is None else "older than the store's")
                    + f" (the store's is of {when:%Y-%m-%d %H:%M} UTC): certificates revoked or "
                    "re-issued since are still trusted here",
                    self._admin_copy("identities/ca/crl.pem", True),
                )
            ]
        return [
            Result(
                FAIL,
                "trust/crl",
                "the store's revocation list is "
                + ("missing" if theirs is None else "older than this home's")
                + ": the store still accepts certificates revoked here",
                self._admin_copy("identities/ca/crl.pem", False),
            )
        ]

    # -------------------------------------------------------------- clock
    def check_clock(self) -> None:
        if not self.links:
            if "camera" in self.cfg or "viewer" in self.cfg:
                self.add(
                    WARN,
                    "clock",
                    "not measured: no store link answered",
                    "fix the store/* checks above, then run doctor again",
                )
            elif "store" in self.cfg:
                self.add(
                    OK,
                    "clock",
                    "this machine runs the store (its clock is the "
                    "reference); run doctor on the camera and viewer machines",
                )
            return
        role, link = next(iter(self.links.items()))
        self.judge_clock(link, role)

    def judge_clock(self, link, role: str) -> None:
        try:
            skew, margin = measure_skew(link, self.timeout_s, self.now)
        except ClockUnknown as exc:
            self.add(WARN, "clock", f"not measured: {exc}", exc.fix)
            return
        said = (
            f"this machine's clock is {abs(skew):.1f} s "
            f"{'behind' if skew > 0 else 'ahead of'} the store's (±{margin:.2f} s)"
        )
        fix = (
            "synchronise the clocks of this machine and the store with NTP ('timedatectl "
            "set-ntp true'; 'timedatectl status' shows 'System clock synchronized: yes')"
        )
        if abs(skew) > SKEW_FAIL_S:
            self.add(
                FAIL,
                "clock",
                f"{said}: certificate validity and capture times are judged by these clocks",
                fix,
            )
        elif abs(skew) > SKEW_WARN_S:
            self.add(
                WARN, "clock", f"{said}: capture times in the archive drift from the store's", fix
            )
        else:
            self.add(OK, "clock", f"within {abs(skew):.1f} s of the store's (±{margin:.2f} s)")


# --------------------------------------------------------------------------- output


def format_text(results: list[Result]) -> str:
    lines = []
    for r in results:
        lines.append(f"{r.status} {r.check}: {r.finding}")
        if r.status != OK and r.fix:
            lines.append(f"  fix: {r.fix}")
    counts = {s: sum(r.status == s for r in results) for s in (OK, WARN, FAIL)}
    lines.append(f"doctor: {counts[OK]} OK, {counts[WARN]} WARN, {counts[FAIL]} FAIL")
    return "\n".join(lines)


def run_doctor(root: Path, as_json: bool = False, timeout_s: float = 3.0) -> int:
    doctor = Doctor(root, timeout_s)
    results = doctor.run()
    failed = any(r.status == FAIL for r in results)
    if as_json:
        print(
            json.dumps(
                {
                    "home": str(doctor.home.root),
                    "roles": doctor.roles,
                    "ok": not failed,
                    "checks": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
    else:
        print(format_text(results))
    sys.stdout.flush()
    return 1 if failed else 0
