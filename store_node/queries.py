"""What the store answers on its query socket, without the socket.

``StoreQueries.answer(frames, peer, address)`` takes a request's frames (after the routing id)
and the ZAP User-Id ("role:name") and returns the reply's frames: the command is read first
and the caller's certified role checked against ``common.query.ALLOWED_ROLES`` before
anything else is decoded; then the request is decoded (``common.query``) and handed to the
command's handler, which returns a typed reply. Handlers take decoded requests and return
reply objects, so they are testable in-process with no ports; the store node's loop only
moves frames between the socket and ``answer``.
"""

from __future__ import annotations

import base64
import hmac
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from veilcam.common.errors import ArchiveError, IdentityError, VeilcamError
from veilcam.common.home import Home
from veilcam.common.keystore import KdfParams
from veilcam.common.keywrap import key_id_of
from veilcam.common.pki import load_cert
from veilcam.common.query import (
    MAX_LIVE_FRAMES,
    MAX_RANGE_FRAMES,
    UNKNOWN_QUERY,
    AnyReply,
    CertFingerprint,
    ChainReply,
    ChainRequest,
    Command,
    CoverageReply,
    CoverageRequest,
    CrlInfo,
    EnvelopeReply,
    EnvelopeRequest,
    ErrorReply,
    GrantsReply,
    GrantsRequest,
    KeysReply,
    KeysRequest,
    LiveReply,
    LiveRequest,
    LoginReply,
    LoginRequest,
    PasswdReply,
    PasswdRequest,
    QueryError,
    RangeReply,
    RangeRequest,
    RegisterReply,
    RegisterRequest,
    Request,
    SaltReply,
    SaltRequest,
    SpanReply,
    SpanRequest,
    TimeReply,
    TrustReply,
    command_of,
    decode_request,
    refusal_for_role,
    role_allowed,
)
from veilcam.store_node.accounts import AccountGate, AccountStore, LoginLimiter, LoginRefused
from veilcam.store_node.archive import Archive

log = logging.getLogger("veilcam.store")
_DER = Encoding.DER


@dataclass(frozen=True)
class Caller:
    """Who asks: the ZAP User-Id ("role:name", from the client's certificate) and the IP."""

    peer: str
    address: str = ""

    @property
    def role(self) -> str:
        return self.peer.partition(":")[0]

    @property
    def name(self) -> str:
        return self.peer.partition(":")[2]

    @property
    def source(self) -> str:
        """What failed log-ins are rate-limited by: the address, else the peer."""
        return self.address or self.peer


# each handler takes its own command's request type (decode_request guarantees it)
Handler = Callable[[Any, Caller], AnyReply]


def _sha256(data: bytes) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize().hex()


class StoreQueries:
    """The store's query handlers, one per command, and the dispatch to them."""

    def __init__(
        self,
        home: Home,
        archive: Archive,
        accounts: AccountStore,
        gate: AccountGate | None = None,
        rejects: Counter[str] | None = None,
        clock: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        """``rejects``: the store's counters of refused messages (shared with its metrics);
        ``clock``: µs since the Unix epoch (the TIME answer)."""
        self.home = home
        self.archive = archive
        self.accounts = accounts
        self.gate = gate or AccountGate(accounts)
        self.rejects: Counter[str] = Counter() if rejects is None else rejects
        # refused log-ins and password changes: a user mistyping is not tampering, so they
        # are counted apart from rejected messages (which operators alert on)
        self.login_refusals: Counter[str] = Counter()
        # failed KEYS lookups, throttled like log-ins but apart from them (a failed lookup
        # must not lock the user's log-in)
        self.keys_limiter = LoginLimiter()
        self.clock = clock
        self.handlers: dict[Command, Handler] = {
            Command.ENVELOPE: self.envelope,
            Command.RANGE: self.range,
            Command.SPAN: self.span,
            Command.COVERAGE: self.coverage,
            Command.GRANTS: self.grants,
            Command.SALT: self.salt,
            Command.REGISTER: self.register,
            Command.LOGIN: self.login,
            Command.PASSWD: self.passwd,
            Command.TIME: self.time,
            Command.TRUST: self.trust,
            Command.CHAIN: self.chain,
            Command.KEYS: self.keys,
            Command.LIVE: self.live,
        }

    # ------------------------------------------------------------------ dispatch
    def answer(self, frames: list[bytes], peer: str, address: str = "") -> list[bytes]:
        """The reply frames to one request (``frames`` without the routing id)."""
        return self.answer_request(frames, Caller(peer, address)).to_frames()

    def answer_request(self, frames: list[bytes], caller: Caller) -> AnyReply:
        try:
            command = command_of(frames)
        except QueryError:
            return ErrorReply(UNKNOWN_QUERY)
        if not role_allowed(command, caller.role):
            self.rejects["query_wrong_role"] += 1
            log.warning(
                "refused %s query from %s: not allowed for a %s",
                command.label,
                caller.peer or "?",
                caller.role or "peer without a certified role",
            )
            return ErrorReply(refusal_for_role(command, caller.role))
        try:
            request = decode_request(frames)
            return self.handlers[command](request, caller)
        except (
            ArchiveError,
            VeilcamError,  # QueryError (malformed request) among them
            OSError,
            sqlite3.Error,
            OverflowError,  # a number SQLite can't hold
        ) as exc:
            return ErrorReply(str(exc))

    # ------------------------------------------------------------------ archive
    def envelope(self, request: EnvelopeRequest, caller: Caller) -> AnyReply:
        body = self.archive.envelope_parts(request.camera_id, request.epoch_id)
        return EnvelopeReply(body) if body else ErrorReply("no key envelope for that epoch")

    def range(self, request: RangeRequest, caller: Caller) -> AnyReply:
        frames = self.archive.frames_from(
            request.camera_id,
            request.from_us,
            request.after_seq,
            min(request.limit, MAX_RANGE_FRAMES),
        )
        return RangeReply(frames)

    def live(self, request: LiveRequest, caller: Caller) -> AnyReply:
        """The camera's current group of pictures, for a viewer joining live (empty: no
        frame of it, or no keyframe among its newest MAX_LIVE_FRAMES)."""
        return LiveReply(self.archive.current_gop(request.camera_id, MAX_LIVE_FRAMES))

    def span(self, request: SpanRequest, caller: Caller) -> AnyReply:
        span = self.archive.time_range(request.camera_id)
        if not span:
            return ErrorReply("no frames of that camera in the archive")
        return SpanReply(*span)

    def coverage(self, request: CoverageRequest, caller: Caller) -> AnyReply:
        r = request
        return CoverageReply(self.archive.coverage(r.camera_id, r.from_us, r.to_us, r.buckets))

    # ------------------------------------------------------------------ cameras
    def grants(self, request: GrantsRequest, caller: Caller) -> AnyReply:
        if caller.peer != f"camera:{request.camera_id}":
            return ErrorReply("grants are served to their camera only")
        paths = sorted(self.home.grants_dir.glob(f"*@{request.camera_id}.grant.json"))
        return GrantsReply([p.read_bytes() for p in paths])

    def chain(self, request: ChainRequest, caller: Caller) -> AnyReply:
        if caller.peer != f"camera:{request.camera_id}":
            return ErrorReply("a camera's chain position is served to that camera only")
        last = self.archive.last_seq(request.camera_id)
        return ChainReply(-1 if last is None else last)

    # ------------------------------------------------------------------ accounts
    def keys(self, request: KeysRequest, caller: Caller) -> AnyReply:
        """A user's public keys, only for the key id the user was shown: the same refusal
        for an unknown user and for a wrong key id (no directory of who is registered)."""
        wait = self.keys_limiter.retry_after(request.user, caller.source)
        if wait > 0:  # guessing (name, key id) pairs: slowed down as log-ins are
            self.login_refusals["login_rate_limited"] += 1
            return ErrorReply(f"too many failed key lookups; try again in {wait:.0f} s")
        doc = self.accounts.keystore(request.user)
        if doc is not None:
            try:
                public = base64.b64decode(doc["public_key"], validate=True)
                pq_public = base64.b64decode(doc.get("pq_public_key") or "", validate=True)
            except (KeyError, TypeError, ValueError):
                public, pq_public = b"", b""
            if len(public) == 32 and hmac.compare_digest(key_id_of(public), request.key_id):
                self.keys_limiter.record(request.user, caller.source, ok=True)
                return KeysReply(public, pq_public)
        self.keys_limiter.record(request.user, caller.source, ok=False)
        return ErrorReply(f"no registered user {request.user!r} with that key id")

    def salt(self, request: SaltRequest, caller: Caller) -> AnyReply:
        return SaltReply(KdfParams.from_json(self.accounts.kdf_for(request.user)))

    def register(self, request: RegisterRequest, caller: Caller) -> AnyReply:
        self.accounts.register(request.user, request.login_secret, request.keystore_json)
        log.info("registered user %s", request.user)
        return RegisterReply()

    def login(self, request: LoginRequest, caller: Caller) -> AnyReply:
        try:
            keystore = self.gate.login(request.user, request.login_secret, caller.source)
        except LoginRefused as exc:
            return self._refused_login(exc, request.user, caller)
        log.info("user %s logged in from %s", request.user, caller.source or "?")
        return LoginReply(keystore)

    def passwd(self, request: PasswdRequest, caller: Caller) -> AnyReply:
        r = request
        try:
            self.gate.change_password(
                r.user, r.old_login_secret, r.new_login_secret, r.keystore_json, caller.source
            )
        except LoginRefused as exc:
            return self._refused_login(exc, r.user, caller)
        log.info("user %s changed their password from %s", r.user, caller.source or "?")
        return PasswdReply()

    def _refused_login(self, exc: LoginRefused, user: str, caller: Caller) -> ErrorReply:
        self.login_refusals[exc.reason] += 1
        if exc.reason == "login_failed":
            log.warning("failed log-in for user %r from %s", user, caller.source or "?")
        return ErrorReply(str(exc))

    # ------------------------------------------------------------------ both
    def time(self, request: Request, caller: Caller) -> AnyReply:
        return TimeReply(self.clock())

    def trust(self, request: Request, caller: Caller) -> AnyReply:
        """Fingerprints of the CA, the CRL and the certificates the store holds that the
        caller has a use for: the store's, every camera's for a viewer (it verifies their
        frames), and the caller's own."""
        home = self.home
        ca_der = load_cert(home.ca_cert_path).public_bytes(_DER)
        crl = None
        if home.crl_path.exists():
            try:
                loaded = x509.load_pem_x509_crl(home.crl_path.read_bytes())
            except ValueError as exc:
                raise IdentityError(f"the store's CRL is unreadable: {exc}") from None
            try:
                number: int | None = loaded.extensions.get_extension_for_class(
                    x509.CRLNumber
                ).value.crl_number
            except x509.ExtensionNotFound:
                number = None
            crl = CrlInfo(
                _sha256(loaded.public_bytes(_DER)),
                int(loaded.last_update_utc.timestamp() * 1_000_000),
                number,
            )
        certs = []
        for path in sorted(home.certs_dir.glob("*-*.crt")):
            role, _, name = path.stem.partition("-")
            wanted = (role, name) == (caller.role, caller.name) or role == "store"
            if not (wanted or (role == "camera" and caller.role == "viewer")):
                continue
            try:
                cert = load_cert(path)
            except IdentityError:
                continue  # the store does not trust what it cannot read (logged at reload)
            certs.append(
                CertFingerprint(
                    role,
                    name,
                    _sha256(cert.public_bytes(_DER)),
                    int(cert.not_valid_before_utc.timestamp() * 1_000_000),
                )
            )
        return TrustReply(_sha256(ca_der), crl, certs)
