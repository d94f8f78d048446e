"""The store's query protocol (common/query.py): every request and reply round-trips through
its frames, malformed input is refused with an error naming the problem, and the store's
handlers (store_node/queries.py) enforce the role table and answer in-process, no sockets.
The PASSWD query end to end: after ``veilcam user passwd`` the new password logs in against
the store and the old one does not."""

from __future__ import annotations

import base64
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from veilcam.common import deployment
from veilcam.common.errors import KeystoreError
from veilcam.common.format import KIND_GAP, pack_parts
from veilcam.common.home import Home
from veilcam.common.keystore import KdfParams, derive_secrets, keystore_kdf, new_keystore
from veilcam.common.keywrap import key_id_of
from veilcam.common.query import (
    ALLOWED_ROLES,
    MAX_FIELD_BYTES,
    MAX_REQUEST_FRAMES,
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
    QueryRefused,
    RangeReply,
    RangeRequest,
    RegisterReply,
    RegisterRequest,
    SaltReply,
    SaltRequest,
    SpanReply,
    SpanRequest,
    TimeReply,
    TimeRequest,
    TrustReply,
    TrustRequest,
    decode_reply,
    decode_request,
)
from veilcam.common.queryclient import StoreQueryClient
from veilcam.store_node.accounts import AccountStore, LoginLimiter
from veilcam.store_node.archive import Archive
from veilcam.store_node.queries import StoreQueries

from tests.conftest import PASSWORD, SAMPLE_CLIP, make_home, run_cli

SECRET = bytes(range(32))
EPOCH = bytes(range(16))

REQUESTS = [
    EnvelopeRequest("cam1", EPOCH),
    RangeRequest("cam1", 0, None, 32),
    RangeRequest("door.2", 1_700_000_000_000_000, 41, 64),
    SpanRequest("cam1"),
    CoverageRequest("cam1", 5, 2**63 - 1, 2000),
    GrantsRequest("cam1"),
    SaltRequest("alice@example"),
    RegisterRequest("alice", SECRET, '{"a": "keystore"}'),
    LoginRequest("alice", SECRET),
    PasswdRequest("alice", SECRET, SECRET[::-1], '{"a": "keystore"}'),
    TimeRequest(),
    TrustRequest(),
    ChainRequest("cam1"),
    KeysRequest("alice", bytes(16)),
    LiveRequest("cam1"),
]

REPLIES = [
    EnvelopeReply([b"body", bytes(64)]),
    RangeReply([[b"header", bytes(64), b"image"], [b"h2", b"s2", b"i2", b"zone"]]),
    RangeReply([]),
    SpanReply(1, 2, 3),
    CoverageReply([0, 5, 0, 12]),
    GrantsReply([b'{"grant": 1}', b'{"grant": 2}']),
    GrantsReply([]),
    SaltReply(KdfParams(bytes(16))),
    RegisterReply(),
    LoginReply('{"user": "alice"}'),
    PasswdReply(),
    TimeReply(1_700_000_000_123_456),
    TrustReply(
        "a" * 64,
        CrlInfo("b" * 64, 1_700_000_000_000_000, None),
        [
            CertFingerprint("camera", "cam1", "c" * 64, 5),
            CertFingerprint("store", "store", "d" * 64, 6),
        ],
    ),
    TrustReply("a" * 64, None, []),
    ChainReply(-1),
    ChainReply(2**63 - 1),
    KeysReply(bytes(32), bytes(1184)),
    KeysReply(bytes(range(32)), b""),
    LiveReply([[b"header", bytes(64), b"au"], [b"h2", b"s2", b"au2", b"zone"]]),
    LiveReply([]),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_round_trips(request_) -> None:
    frames = request_.to_frames()
    assert frames[0] == request_.command.value
    assert decode_request(frames) == request_


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: type(r).__name__)
def test_every_reply_round_trips(reply) -> None:
    frames = reply.to_frames()
    assert frames[0] == b"OK"
    assert decode_reply(reply.command, frames) == reply


def test_the_wire_bytes_are_the_documented_ones() -> None:
    """docs/FORMAT.md, "Queries": decimal ASCII numbers, -1 for no after_seq, SALT as the
    keystore's kdf JSON, ERR with UTF-8 text."""
    assert RangeRequest("cam1", 7, None, 32).to_frames() == [b"RANGE", b"cam1", b"7", b"-1", b"32"]
    assert CoverageRequest("cam1", 0, 10, 1).to_frames() == [
        b"COVERAGE",
        b"cam1",
        b"0",
        b"10",
        b"1",
    ]
    assert SpanReply(1, 2, 3).to_frames() == [b"OK", b"1", b"2", b"3"]
    assert CoverageReply([1, 0, 2]).to_frames() == [b"OK", b"1,0,2"]
    kdf = KdfParams(bytes(16))
    assert SaltReply(kdf).to_frames() == [b"OK", json.dumps(kdf.to_json()).encode()]
    assert ErrorReply("no key envelope for that epoch").to_frames() == [
        b"ERR",
        b"no key envelope for that epoch",
    ]
    assert RangeReply([[b"a", b"b"]]).to_frames() == [b"OK", pack_parts(b"F", [b"a", b"b"])]
    assert decode_reply(Command.TIME, [b"ERR", b"unknown query"]) == ErrorReply("unknown query")
    assert LiveRequest("cam1").to_frames() == [b"LIVE", b"cam1"]
    assert LiveReply([[b"a", b"b"]]).to_frames() == [b"OK", pack_parts(b"F", [b"a", b"b"])]


MALFORMED_REQUESTS = {
    "empty": ([], "unknown query"),
    "unknown-command": ([b"EXPORT"], "unknown query"),
    "lowercase-command": ([b"time"], "unknown query"),
    "too-few-fields": ([b"RANGE", b"cam1"], "RANGE request has 1 field(s)"),
    "too-many-fields": ([b"TIME", b"x"], "TIME request has 1 field(s)"),
    "too-many-frames": ([b"SPAN", *([b"x"] * MAX_REQUEST_FRAMES)], "at most 7"),
    "oversized-field": ([b"SALT", bytes(MAX_FIELD_BYTES + 1)], "at most 65536"),
    "nan": ([b"RANGE", b"cam1", b"nan", b"-1", b"5"], "from_us is not a decimal number"),
    "plus-sign": ([b"RANGE", b"cam1", b"+5", b"-1", b"5"], "not a decimal number"),
    "space": ([b"RANGE", b"cam1", b" 5", b"-1", b"5"], "not a decimal number"),
    "underscore": ([b"RANGE", b"cam1", b"1_0", b"-1", b"5"], "not a decimal number"),
    "10^31": ([b"RANGE", b"cam1", b"1" + b"0" * 31, b"-1", b"5"], "not a decimal number"),
    "2^63": ([b"RANGE", b"cam1", str(2**63).encode(), b"-1", b"5"], "out of range"),
    "negative-from": ([b"RANGE", b"cam1", b"-5", b"-1", b"5"], "from_us -5 is out of range"),
    "after-below--1": ([b"RANGE", b"cam1", b"0", b"-7", b"5"], "after_seq -7 is out of range"),
    "zero-limit": ([b"RANGE", b"cam1", b"0", b"-1", b"0"], "limit 0 is out of range"),
    "camera-not-ascii": ([b"SPAN", b"\xff\xfe"], "invalid camera id"),
    "camera-glob": ([b"GRANTS", b"*"], "invalid camera id"),
    "camera-too-long": ([b"SPAN", b"c" * 65], "invalid camera id"),
    "epoch-short": ([b"ENVELOPE", b"cam1", b"x"], "epoch id is 1 bytes; it must be 16"),
    "coverage-reversed": ([b"COVERAGE", b"cam1", b"10", b"5", b"1"], "bad coverage range"),
    "coverage-buckets": ([b"COVERAGE", b"cam1", b"0", b"10", b"2001"], "buckets 2001"),
    "user-not-utf8": ([b"SALT", b"\xff\xfe"], "invalid user name"),
    "user-path": ([b"REGISTER", b"../etc", SECRET, b"{}"], "invalid user name"),
    "secret-short": ([b"LOGIN", b"alice", b""], "login secret is 0 bytes; it must be 32"),
    "keystore-not-utf8": ([b"REGISTER", b"bob", SECRET, b"\xff"], "keystore is not UTF-8"),
    "passwd-new-secret": ([b"PASSWD", b"bob", SECRET, b"x", b"{}"], "new login secret is 1"),
    "live-no-camera": ([b"LIVE"], "LIVE request has 0 field(s)"),
    "live-two-cameras": ([b"LIVE", b"cam1", b"cam2"], "LIVE request has 2 field(s)"),
    "live-camera-glob": ([b"LIVE", b"*"], "invalid camera id"),
}


@pytest.mark.parametrize("frames,words", MALFORMED_REQUESTS.values(), ids=list(MALFORMED_REQUESTS))
def test_malformed_requests_are_refused_naming_the_problem(frames, words) -> None:
    with pytest.raises(QueryError) as err:
        decode_request(frames)
    assert words in str(err.value), str(err.value)


MALFORMED_REPLIES = {
    "empty": (Command.TIME, [], "TIME answer is empty"),
    "neither-ok-nor-err": (Command.TIME, [b"MAYBE", b"1"], "not OK or ERR"),
    "time-not-a-number": (Command.TIME, [b"OK", b"noon"], "time is not a decimal number"),
    "time-missing": (Command.TIME, [b"OK"], "TIME answer has 0 field(s)"),
    "span-short": (Command.SPAN, [b"OK", b"1", b"2"], "SPAN answer has 2 field(s)"),
    "envelope-no-body": (Command.ENVELOPE, [b"OK"], "ENVELOPE answer has 0 field(s)"),
    "range-garbage": (Command.RANGE, [b"OK", b"\xff" * 9], "RANGE answer, frame 1"),
    "range-gap-record": (Command.RANGE, [b"OK", pack_parts(KIND_GAP, [b"x"])], "kind b'G'"),
    "range-too-many": (Command.RANGE, [b"OK", *[pack_parts(b"F", [])] * 65], "at most 64"),
    "live-too-many": (Command.LIVE, [b"OK", *[pack_parts(b"F", [])] * 301], "at most 300"),
    "live-garbage": (Command.LIVE, [b"OK", b"\xff" * 9], "LIVE answer, frame 1"),
    "live-envelope-record": (Command.LIVE, [b"OK", pack_parts(b"K", [b"x"])], "kind b'K'"),
    "coverage-text": (Command.COVERAGE, [b"OK", b"1,two,3"], "count is not a decimal"),
    "salt-not-json": (Command.SALT, [b"OK", b"{salt"], "kdf is not JSON"),
    "salt-not-scrypt": (Command.SALT, [b"OK", b'{"name": "md5"}'], "not a kdf object"),
    "trust-bad-digest": (
        Command.TRUST,
        [b"OK", b'{"ca": "xyz", "crl": null, "certificates": []}'],
        "malformed trust document",
    ),
}


@pytest.mark.parametrize(
    "command,frames,words", MALFORMED_REPLIES.values(), ids=list(MALFORMED_REPLIES)
)
def test_malformed_replies_are_refused_naming_the_problem(command, frames, words) -> None:
    with pytest.raises(QueryError) as err:
        decode_reply(command, frames)
    assert words in str(err.value), str(err.value)


def test_every_command_has_request_reply_and_roles() -> None:
    assert set(ALLOWED_ROLES) == set(Command)
    for command in Command:
        assert ALLOWED_ROLES[command] <= {"camera", "viewer"}
    assert ALLOWED_ROLES[Command.GRANTS] == {"camera"}
    assert ALLOWED_ROLES[Command.PASSWD] == {"viewer"}
    assert ALLOWED_ROLES[Command.LIVE] == {"viewer"}


class _Fake:
    """A link answering from a function of the request's frames."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.asked: list[list[bytes]] = []

    def request(self, parts: list[bytes], timeout_s: float = 10.0) -> list[bytes]:
        self.asked.append(parts)
        return self.answer(parts)


def test_the_client_raises_refusals_and_malformed_answers() -> None:
    client = StoreQueryClient(_Fake(lambda p: [b"ERR", b"unknown query"]))
    with pytest.raises(QueryRefused) as refused:
        client.trust()
    assert refused.value.unknown_command and refused.value.command is Command.TRUST
    client = StoreQueryClient(_Fake(lambda p: [b"OK", b"1", b"2"]))
    with pytest.raises(QueryError, match="SPAN answer has 2"):
        client.span("cam1")
    fake = _Fake(lambda p: [b"OK", b"12"])
    assert StoreQueryClient(fake).time().time_us == 12 and fake.asked == [[b"TIME"]]
    fake = _Fake(lambda p: [b"OK", pack_parts(b"F", [b"h", b"s", b"i"])])
    assert StoreQueryClient(fake).live("cam1").frames == [[b"h", b"s", b"i"]]
    assert fake.asked == [[b"LIVE", b"cam1"]]


# --------------------------------------------------------------------------- the store, in-process


@pytest.fixture
def queries(tmp_path: Path):
    """The store's query handlers over a deployment home, without sockets or processes."""
    home = Home(make_home(tmp_path, SAMPLE_CLIP, users=()))
    archive = Archive(home.resolve(deployment.store_config(home).archive.path), 2**20)
    accounts = AccountStore(home.accounts_path, deployment.account_secret(home))
    q = StoreQueries(home, archive, accounts, rejects=Counter(), clock=lambda: 42)
    q.gate.limiter = LoginLimiter(clock=lambda: 0.0)
    yield q
    accounts.close()
    archive.close()


def _ask(q: StoreQueries, frames: list[bytes], peer: str = "viewer:viewer") -> list[bytes]:
    return q.answer(frames, peer, "127.0.0.1")


def test_the_store_enforces_the_role_table_before_decoding(queries: StoreQueries) -> None:
    viewer_only = [
        [b"RANGE", b"cam1", b"0", b"-1", b"10"],
        [b"ENVELOPE", b"cam1", EPOCH],
        [b"SPAN", b"cam1"],
        [b"COVERAGE", b"cam1", b"0", b"10", b"1"],
        [b"SALT", b"alice"],
        [b"REGISTER", b"mallory", bytes(32), b"{}"],  # malformed too: the role is checked first
        [b"LOGIN", b"alice", bytes(32)],
        [b"PASSWD", b"alice", bytes(32), bytes(32), b"{}"],
        [b"LIVE", b"cam1"],
    ]
    for frames in viewer_only:
        reply = _ask(queries, frames, "camera:cam1")
        assert reply[0] == b"ERR" and b"not allowed for a camera" in reply[1], (frames, reply)
    assert queries.rejects["query_wrong_role"] == len(viewer_only)
    assert _ask(queries, [b"GRANTS", b"cam1"], "viewer:viewer") == [
        b"ERR",
        b"GRANTS is not allowed for a viewer certificate",
    ]
    # no certified role (never on the real socket, where ZAP sets one): refused too
    assert b"not allowed" in _ask(queries, [b"TIME"], "")[1]
    # what each role may ask, it gets
    assert _ask(queries, [b"GRANTS", b"cam1"], "camera:cam1") == [b"OK"]
    assert _ask(queries, [b"GRANTS", b"cam1"], "camera:cam2") == [
        b"ERR",
        b"grants are served to their camera only",
    ]
    assert _ask(queries, [b"TIME"], "camera:cam1") == [b"OK", b"42"]
    assert _ask(queries, [b"TIME"], "viewer:viewer") == [b"OK", b"42"]
    assert _ask(queries, [b"SPAN", b"cam1"]) == [b"ERR", b"no frames of that camera in the archive"]
    assert _ask(queries, [b"EXPORT"]) == [b"ERR", b"unknown query"]
    reply = _ask(queries, [b"RANGE", b"cam1", b"nan", b"-1", b"5"])
    assert reply[0] == b"ERR" and b"from_us is not a decimal number" in reply[1]


def test_handlers_take_requests_and_return_replies(queries: StoreQueries) -> None:
    from veilcam.store_node.queries import Caller

    viewer = Caller("viewer:viewer", "10.0.0.9")
    assert queries.handlers[Command.TIME](TimeRequest(), viewer) == TimeReply(42)
    assert queries.handlers[Command.RANGE](RangeRequest("cam1", 0, None, 5), viewer) == RangeReply(
        []
    )
    trust = queries.handlers[Command.TRUST](TrustRequest(), viewer)
    assert isinstance(trust, TrustReply) and trust.crl is not None
    assert {c.label for c in trust.certificates} == {"camera:cam1", "store:store", "viewer:viewer"}
    # a camera is told only its own certificate and the store's
    cam = queries.handlers[Command.TRUST](TrustRequest(), Caller("camera:cam1"))
    assert {c.label for c in cam.certificates} == {"camera:cam1", "store:store"}
    assert TrustReply.from_fields(trust.to_frames()[1:]) == trust


def test_a_camera_is_told_where_its_own_chain_ended_and_no_other(queries: StoreQueries) -> None:
    """CHAIN: a camera that lost its state resumes after the store's last frame of it."""
    from tests.factory import Camera

    assert _ask(queries, [b"CHAIN", b"cam1"], "camera:cam1") == [b"OK", b"-1"]
    cam = Camera("cam1")
    for _ in range(3):
        queries.archive.append(cam.frame())
    assert _ask(queries, [b"CHAIN", b"cam1"], "camera:cam1") == [b"OK", b"2"]
    assert _ask(queries, [b"CHAIN", b"cam1"], "camera:cam2")[0] == b"ERR"
    refused = _ask(queries, [b"CHAIN", b"cam1"], "viewer:viewer")
    assert refused == [b"ERR", b"CHAIN is not allowed for a viewer certificate"]


def _register(q: StoreQueries, user: str, password: str):
    ks = new_keystore(user, password)
    assert _ask(q, RegisterRequest(user, ks.login_secret, json.dumps(ks.doc)).to_frames()) == [
        b"OK"
    ]
    return ks


def _login(q: StoreQueries, user: str, password: str) -> list[bytes]:
    kdf = SaltReply.from_fields(_ask(q, SaltRequest(user).to_frames())[1:]).kdf
    return _ask(q, LoginRequest(user, derive_secrets(password, kdf).login_secret).to_frames())


def test_passwd_replaces_the_login_and_keystore_in_process(queries: StoreQueries) -> None:
    from veilcam.admin import reseal_keystore

    ks = _register(queries, "dana", PASSWORD)
    new_password = "an entirely new pass phrase"
    new_doc = reseal_keystore(ks.doc, PASSWORD, new_password)
    old_secret = derive_secrets(PASSWORD, keystore_kdf(ks.doc)).login_secret
    new_secret = derive_secrets(new_password, keystore_kdf(new_doc)).login_secret
    # a wrong old secret is a failed log-in (counted, rate-limited like LOGIN)
    wrong = PasswdRequest("dana", bytes(32), new_secret, json.dumps(new_doc))
    assert _ask(queries, wrong.to_frames()) == [b"ERR", b"wrong user name or password"]
    assert queries.login_refusals["login_failed"] == 1
    assert "login_failed" not in queries.rejects  # not counted as a rejected message
    # a keystore with other keys is not a password change
    other = new_keystore("dana", new_password)
    swap = PasswdRequest("dana", old_secret, other.login_secret, json.dumps(other.doc))
    reply = _ask(queries, swap.to_frames())
    assert reply[0] == b"ERR" and b"other keys" in reply[1]
    ok = PasswdRequest("dana", old_secret, new_secret, json.dumps(new_doc))
    assert _ask(queries, ok.to_frames()) == [b"OK"]
    assert _login(queries, "dana", new_password)[0] == b"OK"
    assert json.loads(_login(queries, "dana", new_password)[1]) == new_doc
    assert _login(queries, "dana", PASSWORD) == [b"ERR", b"wrong user name or password"]
    # replaying the same change with the old secret no longer works
    assert _ask(queries, ok.to_frames()) == [b"ERR", b"wrong user name or password"]


def test_passwd_is_rate_limited_with_log_ins(queries: StoreQueries) -> None:
    ks = _register(queries, "erin", PASSWORD)
    doc = json.dumps(ks.doc)
    for _ in range(LoginLimiter.USER_FREE_FAILURES):
        _ask(queries, LoginRequest("erin", bytes(32)).to_frames())
    reply = _ask(queries, PasswdRequest("erin", ks.login_secret, SECRET, doc).to_frames())
    assert reply[0] == b"ERR" and b"too many failed log-ins" in reply[1]
    assert queries.login_refusals["login_rate_limited"] == 1


# --------------------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_user_passwd_changes_the_password_on_a_running_store(tmp_path: Path, procs) -> None:
    """A viewer machine (keystore, no accounts database) changes alice's password through
    the PASSWD query; the one-home deployment changes bob's in its accounts database."""
    from veilcam.viewer.login import login

    root = make_home(tmp_path, SAMPLE_CLIP, users=("alice", "bob"))
    viewer = tmp_path / "viewer-machine"
    shutil.copytree(root, viewer, ignore=shutil.ignore_patterns("accounts", "archive"))
    procs.start_ready("store", "store", "--home", str(root))
    new = "a brand new pass phrase"
    for home, user in ((viewer, "alice"), (root, "bob")):
        r = run_cli(
            "user", "passwd", user, "--home", str(home), "--password-stdin",
            stdin=f"{PASSWORD}\n{new}\n",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "changed the store's account" in r.stdout and "re-sealed" in r.stdout
        assert login(Home(home), user, new).name == user
        with pytest.raises(KeystoreError, match="wrong user name or password"):
            login(Home(home), user, PASSWORD)
    assert "user alice changed their password" in procs.log("store")
    # the store down: nothing changes, and the message says so
    procs.stop_all()
    r = run_cli(
        "user", "passwd", "alice", "--home", str(viewer), "--password-stdin",
        stdin=f"{new}\nyet another new pass phrase\n", timeout=90,
    )  # fmt: skip
    assert r.returncode == 2 and "nothing was changed" in r.stderr, r.stderr
    assert "could not be reached" in r.stderr
    # --local-only re-seals the keystore here and says the store keeps the old password
    r = run_cli(
        "user", "passwd", "alice", "--home", str(viewer), "--password-stdin", "--local-only",
        stdin=f"{new}\nyet another new pass phrase\n",
    )  # fmt: skip
    assert r.returncode == 0 and "OLD password" in r.stderr, r.stderr


def test_a_users_public_keys_are_given_only_for_the_key_id_they_were_shown(
    queries: StoreQueries,
) -> None:
    """KEYS: an admin home without the store's accounts folder gets a registered user's
    public keys for a grant, but only by naming the key id the user saw: an unknown user and
    a wrong id get the same answer, so the store is no directory of who is registered."""
    ks = _register(queries, "dave", PASSWORD)
    right = key_id_of(ks.public_raw)
    reply = _ask(queries, [b"KEYS", b"dave", right])
    assert reply == [b"OK", ks.public_raw, ks.pq_public_raw]
    wrong = _ask(queries, [b"KEYS", b"dave", bytes(16)])
    unknown = _ask(queries, [b"KEYS", b"erin", right])
    assert wrong[0] == unknown[0] == b"ERR"
    assert wrong[1].replace(b"dave", b"X") == unknown[1].replace(b"erin", b"X")
    assert _ask(queries, [b"KEYS", b"dave", right], "camera:cam1")[0] == b"ERR"
    bad = _ask(queries, [b"KEYS", b"dave", right[:8]])
    assert bad[0] == b"ERR" and b"key_id is 8 bytes" in bad[1]


@pytest.mark.e2e
def test_grant_on_an_admin_home_without_accounts_takes_the_keys_from_the_store(
    tmp_path: Path, procs
) -> None:
    root = make_home(tmp_path, SAMPLE_CLIP, users=())
    procs.start_ready("store", "store", "--home", str(root))
    r = run_cli("register", "dave", "--home", str(root), "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    doc = json.loads((root / "users" / "dave" / "keystore.json").read_text())
    key_id = key_id_of(base64.b64decode(doc["public_key"])).hex()
    admin = tmp_path / "admin"  # the CA key and a viewer identity, no accounts/, no dave
    shutil.copytree(root, admin, ignore=shutil.ignore_patterns("accounts", "archive", "users"))
    r = run_cli("grant", "dave", "--camera", "cam1", "--home", str(admin), "--key-id", "ab" * 16)
    assert r.returncode == 2 and "no user 'dave' registered with key id" in r.stderr, r.stderr
    r = run_cli("grant", "dave", "--camera", "cam1", "--home", str(admin), "--key-id", key_id)
    assert r.returncode == 0, r.stderr
    from veilcam.common.grants import verify_grant

    signed = verify_grant(
        (admin / "grants" / "dave@cam1.grant.json").read_bytes(),
        deployment.load_ca(Home(admin)),
    )
    assert key_id_of(signed.public_key).hex() == key_id


def test_key_lookups_are_throttled_like_log_ins_without_locking_the_log_in(
    queries: StoreQueries,
) -> None:
    """KEYS answers (name, key id) guesses: after a few wrong ones from a source, it waits,
    as LOGIN does; the user's log-in is not locked by someone else's guessing."""
    queries.keys_limiter = LoginLimiter(clock=lambda: 0.0)
    ks = _register(queries, "erin", PASSWORD)
    answers = [_ask(queries, [b"KEYS", b"erin", bytes([i]) * 16]) for i in range(12)]
    assert any(b"too many failed key lookups" in a[1] for a in answers), answers
    locked = _ask(queries, [b"KEYS", b"erin", key_id_of(ks.public_raw)])
    assert locked[0] == b"ERR" and b"too many failed key lookups" in locked[1]
    assert _login(queries, "erin", PASSWORD)[0] == b"OK"  # the log-in is not locked
