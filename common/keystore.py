"""A user's password-protected keystore: private keys sealed with AES-256-GCM.

One scrypt run (memory-hard, ~0.1 s) turns the password into a master secret; HKDF with two
purpose labels splits it into the **sealing key** (opens the keystore, stays on the user's
machine) and the **login secret** (what the store checks, through a slow verifier of its own).
HKDF outputs are independent, so the store, which sees the login secret, learns nothing that
opens the keystore, and the password never leaves the client.

The keystore holds an X25519 key and an ML-KEM-768 key (the latter for the hybrid
post-quantum key-wrapping suite). The AEAD tag makes a wrong password an error, not noise; the
user name, public keys and KDF parameters are associated data, so none can be swapped.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from veilcam.common.errors import KeystoreError
from veilcam.common.keywrap import Identity
from veilcam.common.passwords import check_password
from veilcam.common.secretfiles import write_secret

KEYSTORE_FORMAT = "veilcam-keystore"
KEYSTORE_VERSION = 1
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


@dataclass(frozen=True)
class KdfParams:
    salt: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def to_json(self) -> dict:
        return {"name": "scrypt", "n": self.n, "r": self.r, "p": self.p, "salt": _b64(self.salt)}

    @classmethod
    def from_json(cls, kdf: dict) -> KdfParams:
        if kdf.get("name") != "scrypt":
            raise KeystoreError("keystore uses an unsupported KDF")
        params = cls(_unb64(kdf["salt"], "kdf.salt"), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
        if not (
            2**14 <= params.n <= 2**20
            and 1 <= params.r <= 32
            and 1 <= params.p <= 16
            and 8 <= len(params.salt) <= 64
        ):
            raise KeystoreError("keystore has out-of-range scrypt parameters")
        return params


@dataclass(frozen=True)
class PasswordSecrets:
    sealing_key: bytes
    login_secret: bytes


def derive_secrets(password: str, kdf: KdfParams) -> PasswordSecrets:
    master = Scrypt(salt=kdf.salt, length=32, n=kdf.n, r=kdf.r, p=kdf.p).derive(
        password.encode("utf-8")
    )

    def expand(label: bytes) -> bytes:
        return HKDFExpand(hashes.SHA256(), 32, label).derive(master)

    return PasswordSecrets(
        expand(b"veilcam keystore v1 / sealing key"), expand(b"veilcam keystore v1 / login secret")
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise KeystoreError(f"keystore field {what!r} is not valid base64") from None


def _aad(doc: dict) -> bytes:
    fields = {
        k: doc[k] for k in ("format", "version", "user", "public_key", "pq_public_key", "kdf")
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class NewKeystore:
    doc: dict
    public_raw: bytes
    pq_public_raw: bytes
    login_secret: bytes

    def to_bytes(self) -> bytes:
        return (json.dumps(self.doc, indent=2) + "\n").encode("utf-8")


def new_keystore(user: str, password: str, check_policy: bool = True) -> NewKeystore:
    """Generate key pairs for ``user`` and seal them under ``password`` (checked by policy)."""
    if check_policy:
        check_password(password, user)  # WeakPasswordError says what to change
    private = X25519PrivateKey.generate()
    pq_private = mlkem.MLKEM768PrivateKey.generate()
    public_raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    pq_public_raw = pq_private.public_key().public_bytes_raw()
    kdf = KdfParams(os.urandom(16))
    secrets = derive_secrets(password, kdf)
    doc = {
        "format": KEYSTORE_FORMAT,
        "version": KEYSTORE_VERSION,
        "user": user,
        "public_key": _b64(public_raw),
        "pq_public_key": _b64(pq_public_raw),
        "kdf": kdf.to_json(),
        "cipher": "AES-256-GCM",
    }
    nonce = os.urandom(12)
    secret = (
        private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        + pq_private.private_bytes_raw()
    )
    doc["nonce"] = _b64(nonce)
    doc["ciphertext"] = _b64(AESGCM(secrets.sealing_key).encrypt(nonce, secret, _aad(doc)))
    return NewKeystore(doc, public_raw, pq_public_raw, secrets.login_secret)


def create_keystore(path: Path, user: str, password: str) -> NewKeystore:
    """Create a keystore file (0600) for ``user``."""
    ks = new_keystore(user, password)
    write_secret(path, ks.to_bytes())
    return ks


def parse_keystore(data: bytes | str, where: str = "keystore") -> dict:
    try:
        doc = json.loads(data)
        if (
            not isinstance(doc, dict)
            or doc.get("format") != KEYSTORE_FORMAT
            or doc.get("version") != KEYSTORE_VERSION
        ):
            raise KeystoreError(f"{where} is not a version-{KEYSTORE_VERSION} veilcam keystore")
        KdfParams.from_json(doc["kdf"])
        for key in ("user", "public_key", "pq_public_key", "cipher", "nonce", "ciphertext"):
            if not isinstance(doc[key], str):
                raise KeystoreError(f"{where}: field {key!r} is not a string")
    except KeystoreError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise KeystoreError(f"{where} is missing or has a bad field: {exc}") from None
    return doc


def keystore_kdf(doc: dict) -> KdfParams:
    return KdfParams.from_json(doc["kdf"])


def unseal(doc: dict, sealing_key: bytes) -> Identity:
    if doc["cipher"] != "AES-256-GCM":
        raise KeystoreError("keystore uses an unsupported cipher")
    nonce, ciphertext = _unb64(doc["nonce"], "nonce"), _unb64(doc["ciphertext"], "ciphertext")
    try:
        secret = AESGCM(sealing_key).decrypt(nonce, ciphertext, _aad(doc))
    except InvalidTag:
        raise KeystoreError(f"wrong password for user {doc['user']!r}") from None
    if len(secret) != 32 + 64:
        raise KeystoreError("keystore holds keys of the wrong size")
    return Identity(
        doc["user"],
        X25519PrivateKey.from_private_bytes(secret[:32]),
        mlkem.MLKEM768PrivateKey.from_seed_bytes(secret[32:]),
    )


def open_keystore(path: Path, password: str) -> Identity:
    """Unseal a keystore file. Raises KeystoreError for a wrong password or a damaged file."""
    try:
        data = Path(path).read_text("utf-8")
    except FileNotFoundError:
        raise KeystoreError(f"keystore {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeystoreError(f"keystore {path} is unreadable: {exc}") from None
    doc = parse_keystore(data, f"keystore {path}")
    return unseal(doc, derive_secrets(password, keystore_kdf(doc)).sealing_key)
