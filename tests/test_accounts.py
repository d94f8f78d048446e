"""Accounts on the store, through the real store process (e2e): register, log in, refuse,
rate-limit."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from pathlib import Path

import pytest
from veilcam.common.errors import KeystoreError
from veilcam.common.home import Home
from veilcam.common.keystore import derive_secrets, keystore_kdf, unseal
from veilcam.store_node.accounts import LoginLimiter
from veilcam.viewer.login import login

from tests.conftest import PASSWORD, SAMPLE_CLIP, make_home, run_cli


@pytest.fixture
def store(tmp_path: Path, procs) -> Home:
    home = make_home(tmp_path, SAMPLE_CLIP)
    procs.start_ready("store", "store", "--home", str(home))
    return Home(home)


def _register(home: Home, name: str, password: str):
    return run_cli(
        "register", name, "--home", str(home.root), "--password-stdin", stdin=password + "\n"
    )


@pytest.mark.e2e
def test_register_then_log_in_through_the_store(store: Home) -> None:
    r = _register(store, "dana", "a fairly long pass phrase")
    assert r.returncode == 0, r.stderr
    identity = login(store, "dana", "a fairly long pass phrase")
    assert identity.name == "dana" and identity.pq_private_key is not None
    again = _register(store, "dana", "another long pass phrase")
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.e2e
def test_weak_password_refused_with_what_is_wrong(store: Home) -> None:
    for password, reason in (
        ("short one", "too short"),
        ("password1234567890", "well-known password"),
    ):
        r = _register(store, "erin", password)
        assert r.returncode == 2 and reason in r.stderr and "Traceback" not in r.stderr


@pytest.mark.e2e
def test_wrong_password_and_unknown_user_get_the_same_answer(store: Home) -> None:
    with pytest.raises(KeystoreError) as wrong:
        login(store, "alice", "not the right password")
    with pytest.raises(KeystoreError) as unknown:
        login(store, "nobody-here", PASSWORD)
    assert str(wrong.value) == str(unknown.value) == "wrong user name or password"


@pytest.mark.e2e
def test_failed_log_ins_are_rate_limited_per_user(store: Home) -> None:
    for _ in range(LoginLimiter.USER_FREE_FAILURES):
        with pytest.raises(KeystoreError, match="wrong user name or password"):
            login(store, "alice", "a wrong password again")
    with pytest.raises(KeystoreError, match="too many failed log-ins"):
        login(store, "alice", PASSWORD)  # even the right one waits out the lock
    time.sleep(1.2)
    assert login(store, "alice", PASSWORD).name == "alice"


def test_rate_limit_per_source_across_user_names() -> None:
    now = [0.0]
    limiter = LoginLimiter(clock=lambda: now[0])
    for i in range(LoginLimiter.SOURCE_MAX_FAILURES + 1):
        limiter.record(f"user{i}", "10.0.0.9", ok=False)
    assert limiter.retry_after("someone-else", "10.0.0.9") > 0
    assert limiter.retry_after("someone-else", "10.0.0.10") == 0
    now[0] += LoginLimiter.SOURCE_WINDOW_S + 1
    assert limiter.retry_after("someone-else", "10.0.0.9") == 0


@pytest.mark.e2e
def test_store_files_open_nothing_without_the_password(store: Home) -> None:
    """Everything the store keeps about a user (verifier, sealed keystore) opens nothing."""
    db = sqlite3.connect(store.accounts_path)
    verifier, keystore_json = db.execute(
        "SELECT verifier, keystore FROM accounts WHERE name='alice'"
    ).fetchone()
    db.close()
    doc = json.loads(keystore_json)
    disk = b"".join(p.read_bytes() for p in store.accounts_path.parent.iterdir())
    assert PASSWORD.encode() not in disk
    # what the store could try: its verifier, or the login secret it sees at log-in
    login_secret = derive_secrets(PASSWORD, keystore_kdf(doc)).login_secret
    for guess in (bytes(verifier), login_secret, bytes(32)):
        with pytest.raises(KeystoreError, match="wrong password"):
            unseal(doc, guess)
    assert base64.b64decode(doc["ciphertext"])  # the keys are there, sealed
