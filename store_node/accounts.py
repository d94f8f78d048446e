"""User accounts on the store: a slow login verifier and the user's sealed keystore, nothing more.

The client derives a login secret from the password (common.keystore.derive_secrets); the store
keeps only ``scrypt(login_secret, salt)`` and the keystore, which it cannot open (the sealing
key is a different HKDF output of the same password run). A log-in answers the same way for a
wrong password and an unknown user, with the same work done, and failures are rate-limited per
user and per source address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from veilcam.common import deployment
from veilcam.common.errors import VeilcamError
from veilcam.common.home import Home, check_user_name
from veilcam.common.keystore import KdfParams, keystore_kdf, parse_keystore

VERIFIER_N, VERIFIER_R, VERIFIER_P = 2**14, 8, 1
LOGIN_FAILED = "wrong user name or password"


def _verifier(login_secret: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=VERIFIER_N, r=VERIFIER_R, p=VERIFIER_P).derive(
        login_secret
    )


class AccountStore:
    def __init__(self, path: Path, secret: bytes) -> None:
        """``secret`` (the store's own, 32 bytes) makes the decoy salts of unknown users."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # sealed keystores invite offline guessing: owner-only, before SQLite creates it
        # (SQLite gives its -wal and -shm files the database file's permissions)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._secret = secret
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS accounts (name TEXT PRIMARY KEY, "
            "verifier BLOB NOT NULL, verifier_salt BLOB NOT NULL, "
            "keystore TEXT NOT NULL, created_us INTEGER NOT NULL)"
        )
        self._decoy = _verifier(b"decoy", b"decoy salt 16 b.")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> AccountStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @classmethod
    def open_in(cls, home: Home) -> AccountStore:
        """The account directory of the store whose home is ``home`` (created if missing)."""
        return cls(home.accounts_path, deployment.account_secret(home))

    @classmethod
    def add_account(cls, home: Home, name: str, login_secret: bytes, keystore_json: str) -> None:
        """Register ``name`` in ``home``'s account directory, as the REGISTER query does."""
        with cls.open_in(home) as accounts:
            accounts.register(name, login_secret, keystore_json)

    @classmethod
    def keystore_in(cls, home: Home, name: str) -> dict | None:
        """``name``'s sealed keystore from ``home``'s account directory; None without such an
        account, or without a directory (none is created)."""
        if not home.accounts_path.exists():
            return None
        with cls.open_in(home) as accounts:
            return accounts.keystore(name)

    def register(self, name: str, login_secret: bytes, keystore_json: str) -> None:
        check_user_name(name)
        doc = parse_keystore(keystore_json, f"keystore of {name!r}")
        if doc["user"] != name:
            raise VeilcamError("the keystore belongs to another user name")
        if len(login_secret) != 32:
            raise VeilcamError("login secret must be 32 bytes")
        salt = os.urandom(16)
        with self._lock:
            try:
                self.db.execute(
                    "INSERT INTO accounts VALUES (?,?,?,?,?)",
                    (
                        name,
                        _verifier(login_secret, salt),
                        salt,
                        keystore_json,
                        time.time_ns() // 1000,
                    ),
                )
            except sqlite3.IntegrityError:
                raise VeilcamError(f"user {name!r} already exists") from None

    def kdf_for(self, name: str) -> dict:
        """The keystore's KDF parameters; for an unknown name, a stable decoy (same shape)."""
        row = self.db.execute("SELECT keystore FROM accounts WHERE name=?", (name,)).fetchone()
        if row:
            return keystore_kdf(json.loads(row[0])).to_json()
        decoy = hmac.new(self._secret, b"decoy salt\x00" + name.encode(), hashlib.sha256)
        return KdfParams(decoy.digest()[:16]).to_json()

    def check_login(self, name: str, login_secret: bytes) -> str | None:
        """The sealed keystore if the login secret is right, else None (same work either way)."""
        row = self.db.execute(
            "SELECT verifier, verifier_salt, keystore FROM accounts WHERE name=?", (name,)
        ).fetchone()
        if row is None:
            hmac.compare_digest(_verifier(login_secret, b"decoy salt 16 b."), self._decoy)
            return None
        ok = hmac.compare_digest(_verifier(login_secret, bytes(row[1])), bytes(row[0]))
        return row[2] if ok else None

    def keystore(self, name: str) -> dict | None:
        row = self.db.execute("SELECT keystore FROM accounts WHERE name=?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def change_password(
        self, name: str, old_login_secret: bytes, new_login_secret: bytes, keystore_json: str
    ) -> bool:
        """Replace ``name``'s login verifier and keystore, if ``old_login_secret`` is right
        (False otherwise, after the same work as a log-in). The new keystore must be the
        user's and hold the same public keys: a password change re-seals the keys, it never
        swaps them (grants name the keys). Raises VeilcamError for a keystore that is not."""
        doc = parse_keystore(keystore_json, f"new keystore of {name!r}")
        if doc["user"] != name:
            raise VeilcamError("the keystore belongs to another user name")
        if len(new_login_secret) != 32:
            raise VeilcamError("login secret must be 32 bytes")
        with self._lock:
            row = self.db.execute(
                "SELECT verifier, verifier_salt, keystore FROM accounts WHERE name=?", (name,)
            ).fetchone()
            if row is None:
                hmac.compare_digest(_verifier(old_login_secret, b"decoy salt 16 b."), self._decoy)
                return False
            if not hmac.compare_digest(_verifier(old_login_secret, bytes(row[1])), bytes(row[0])):
                return False
            old = json.loads(row[2])
            if (doc["public_key"], doc["pq_public_key"]) != (
                old["public_key"],
                old["pq_public_key"],
            ):
                raise VeilcamError(
                    "the new keystore holds other keys than the account's: a password change "
                    "re-seals the same keys (register a new user for new keys)"
                )
            salt = os.urandom(16)
            changed = self.db.execute(
                "UPDATE accounts SET verifier=?, verifier_salt=?, keystore=? "
                "WHERE name=? AND verifier=?",
                (_verifier(new_login_secret, salt), salt, keystore_json, name, bytes(row[0])),
            ).rowcount
        return changed == 1


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    window_start: float = 0.0


class LoginLimiter:
    """Per user: after 5 straight failures, a lock doubling from 1 s up to 15 min.
    Per source address: more than 20 failures in a minute locks that source for a minute."""

    USER_FREE_FAILURES = 5
    USER_MAX_LOCK_S = 900.0
    SOURCE_MAX_FAILURES = 20
    SOURCE_WINDOW_S = 60.0

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.users: dict[str, _Failures] = {}
        self.sources: dict[str, _Failures] = {}

    def retry_after(self, user: str, source: str) -> float:
        now = self.clock()
        waits = [
            f.locked_until - now
            for f in (self.users.get(user), self.sources.get(source))
            if f is not None
        ]
        return max([0.0, *waits])

    def record(self, user: str, source: str, ok: bool) -> None:
        now = self.clock()
        if ok:
            self.users.pop(user, None)
            return
        u = self.users.setdefault(user, _Failures())
        u.count += 1
        if u.count >= self.USER_FREE_FAILURES:
            u.locked_until = now + min(
                self.USER_MAX_LOCK_S, 2.0 ** (u.count - self.USER_FREE_FAILURES)
            )
        s = self.sources.setdefault(source, _Failures(window_start=now))
        if now - s.window_start > self.SOURCE_WINDOW_S:
            s.count, s.window_start = 0, now
        s.count += 1
        if s.count > self.SOURCE_MAX_FAILURES:
            s.locked_until = now + self.SOURCE_WINDOW_S


class LoginRefused(VeilcamError):
    """A log-in or password change refused; ``reason`` is the counter it goes to
    (``login_failed``, ``login_rate_limited``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AccountGate:
    """What the store's LOGIN and PASSWD queries do with an account: check the login secret
    under the same rate limit (``LoginLimiter``: per user and per source address), then
    answer the keystore or change the password. A wrong secret and an unknown user are
    refused alike."""

    def __init__(self, accounts: AccountStore, limiter: LoginLimiter | None = None) -> None:
        self.accounts = accounts
        self.limiter = limiter or LoginLimiter()

    def _check_rate(self, name: str, source: str) -> None:
        wait = self.limiter.retry_after(name, source)
        if wait > 0:
            raise LoginRefused(
                "login_rate_limited", f"too many failed log-ins; try again in {wait:.0f} s"
            )

    def login(self, name: str, login_secret: bytes, source: str) -> str:
        """The sealed keystore (JSON); LoginRefused if refused."""
        self._check_rate(name, source)
        keystore = self.accounts.check_login(name, login_secret)
        self.limiter.record(name, source, keystore is not None)
        if keystore is None:
            raise LoginRefused("login_failed", LOGIN_FAILED)
        return keystore

    def change_password(
        self,
        name: str,
        old_login_secret: bytes,
        new_login_secret: bytes,
        keystore_json: str,
        source: str,
    ) -> None:
        """Replace the verifier and keystore; LoginRefused for a wrong old secret (counted as
        a failed log-in), VeilcamError for a keystore that is not this account's."""
        self._check_rate(name, source)
        ok = self.accounts.change_password(name, old_login_secret, new_login_secret, keystore_json)
        self.limiter.record(name, source, ok)
        if not ok:
            raise LoginRefused("login_failed", LOGIN_FAILED)
