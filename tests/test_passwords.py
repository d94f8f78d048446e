"""Password policy: long passwords pass; short, common, repetitive ones fail with a reason."""

from __future__ import annotations

import pytest

from common.passwords import WeakPasswordError, check_password


@pytest.mark.parametrize("password", ["correct horse battery", "tangerine-lamp-oxbow-47",
                                      "Ein Passwort ohne Sonderzeichen", "x7#Kq9!mZ2@vL5$w"])
def test_good_passwords_pass(password: str) -> None:
    check_password(password, user="alice")


@pytest.mark.parametrize("password, reason", [
    ("Tr0ub4dor&3", "too short"),
    ("aaaaaaaaaaaaaaaaaaaa", "repeated"),
    ("abcabcabcabcabcabc", "repeated"),
    ("password1234567890", "well-known"),
    ("P@ssword!!!!!!!!!!!", "well-known"),
    ("qwertyuiopasdfghjkl", "keyboard"),
    ("1234567890123456", "run"),
    ("alice-alice-alice-1", "mostly 'alice'"),
    ("x" * 300, "too long"),
])
def test_weak_passwords_fail_with_reason(password: str, reason: str) -> None:
    with pytest.raises(WeakPasswordError, match=reason):
        check_password(password, user="alice")
