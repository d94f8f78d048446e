"""A user's password-protected keystore: an X25519 private key sealed with AES-256-GCM.

The sealing key comes from the password through scrypt (memory-hard, ~0.1 s) and then HKDF
with a purpose label, so further secrets (a login verifier for the store) can be derived from
the same password run without ever revealing the decryption key. The AEAD tag makes a wrong
password an error, not noise; the user name, public key and KDF parameters are the associated
data, so none of them can be swapped unnoticed.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from common.errors import KeystoreError
from common.keywrap import Identity
from common.secretfiles import write_secret

KEYSTORE_FORMAT = "veilcam-keystore"
KEYSTORE_VERSION = 1
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MIN_PASSWORD_LEN = 8


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise KeystoreError(f"keystore field {what!r} is not valid base64") from None


def _sealing_key(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    master = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode("utf-8"))
    return HKDFExpand(hashes.SHA256(), 32, b"veilcam keystore v1 / sealing key").derive(master)


def _aad(doc: dict) -> bytes:
    fields = {k: doc[k] for k in ("format", "version", "user", "public_key", "kdf")}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")


def create_keystore(path: Path, user: str, password: str) -> bytes:
    """Create a new key pair for ``user`` sealed under ``password``; returns the raw public key."""
    if len(password) < MIN_PASSWORD_LEN:
        raise KeystoreError(f"password too short: at least {MIN_PASSWORD_LEN} characters")
    private = X25519PrivateKey.generate()
    public_raw = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
    salt, nonce = os.urandom(16), os.urandom(12)
    doc = {"format": KEYSTORE_FORMAT, "version": KEYSTORE_VERSION, "user": user,
           "public_key": _b64(public_raw),
           "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)}}
    private_raw = private.private_bytes(serialization.Encoding.Raw,
                                        serialization.PrivateFormat.Raw,
                                        serialization.NoEncryption())
    key = _sealing_key(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    doc["cipher"] = "AES-256-GCM"
    doc["nonce"] = _b64(nonce)
    doc["ciphertext"] = _b64(AESGCM(key).encrypt(nonce, private_raw, _aad(doc)))
    write_secret(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    return public_raw


def open_keystore(path: Path, password: str) -> Identity:
    """Unseal a keystore. Raises KeystoreError for a wrong password or a damaged file."""
    try:
        doc = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise KeystoreError(f"keystore {path} not found") from None
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"keystore {path} is unreadable: {exc}") from None
    try:
        if doc["format"] != KEYSTORE_FORMAT or doc["version"] != KEYSTORE_VERSION:
            raise KeystoreError(f"{path} is not a version-{KEYSTORE_VERSION} veilcam keystore")
        kdf = doc["kdf"]
        if kdf["name"] != "scrypt" or doc["cipher"] != "AES-256-GCM":
            raise KeystoreError(f"keystore {path} uses an unsupported KDF or cipher")
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        if not (2**14 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise KeystoreError(f"keystore {path} has out-of-range scrypt parameters")
        salt = _unb64(kdf["salt"], "kdf.salt")
        nonce, ciphertext = _unb64(doc["nonce"], "nonce"), _unb64(doc["ciphertext"], "ciphertext")
        user, aad = str(doc["user"]), _aad(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise KeystoreError(f"keystore {path} is missing or has a bad field: {exc}") from None
    key = _sealing_key(password, salt, n, r, p)
    try:
        private_raw = AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise KeystoreError(f"wrong password for user {user!r}") from None
    return Identity(user, X25519PrivateKey.from_private_bytes(private_raw))
