"""User keystores: the password unlocks, a wrong one fails loudly, nothing leaks into the file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from veilcam.common.errors import KeystoreError
from veilcam.common.keystore import create_keystore, open_keystore


def test_right_password_opens_keystore(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    created = create_keystore(path, "alice", "correct horse battery")
    identity = open_keystore(path, "correct horse battery")
    assert identity.name == "alice"
    from veilcam.common.keywrap import key_id_of

    assert identity.key_id == key_id_of(created.public_raw)
    assert identity.pq_private_key.public_key().public_bytes_raw() == created.pq_public_raw


def test_wrong_password_fails_with_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    create_keystore(path, "alice", "correct horse battery")
    with pytest.raises(KeystoreError, match="wrong password for user 'alice'"):
        open_keystore(path, "correct horse batterz")


def test_keystore_is_owner_only_and_holds_no_password(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    create_keystore(path, "alice", "correct horse battery")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"correct horse" not in path.read_bytes()


def test_swapping_the_public_key_in_a_keystore_is_detected(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    create_keystore(a, "alice", "correct horse battery")
    create_keystore(b, "bob", "another long password")
    doc = json.loads(a.read_text())
    doc["public_key"] = json.loads(b.read_text())["public_key"]
    a.write_text(json.dumps(doc))
    with pytest.raises(KeystoreError, match="wrong password"):
        open_keystore(a, "correct horse battery")


@pytest.mark.parametrize("content", ["", "{", "[]", '{"format": "veilcam-keystore"}'])
def test_corrupt_keystore_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ks.json"
    path.write_text(content)
    with pytest.raises(KeystoreError, match="keystore"):
        open_keystore(path, "whatever password")


def test_short_password_refused(tmp_path: Path) -> None:
    from veilcam.common.passwords import WeakPasswordError

    with pytest.raises(WeakPasswordError, match="too short"):
        create_keystore(tmp_path / "ks.json", "alice", "short")
