"""Password policy: long passwords pass; short, common, repetitive ones fail with a reason."""

from __future__ import annotations

import pytest
from veilcam.common.passwords import WeakPasswordError, check_password


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery",
        "tangerine-lamp-oxbow-47",
        "Ein Passwort ohne Sonderzeichen",
        "x7#Kq9!mZ2@vL5$w",
    ],
)
def test_good_passwords_pass(password: str) -> None:
    check_password(password, user="alice")


@pytest.mark.parametrize(
    "password, reason",
    [
        ("Tr0ub4dor&3", "too short"),
        ("aaaaaaaaaaaaaaaaaaaa", "repeated"),
        ("abcabcabcabcabcabc", "repeated"),
        ("password1234567890", "well-known"),
        ("P@ssword!!!!!!!!!!!", "well-known"),
        ("qwertyuiopasdfghjkl", "keyboard"),
        ("1234567890123456", "run"),
        ("alice-alice-alice-1", "mostly 'alice'"),
        ("x" * 300, "too long"),
    ],
)
def test_weak_passwords_fail_with_reason(password: str, reason: str) -> None:
    with pytest.raises(WeakPasswordError, match=reason):
        check_password(password, user="alice")


# --------------------------------------------------------------------------- passwords


@pytest.mark.parametrize(
    "password, reason",
    [
        ("passwordpassword", "repeated"),
        ("correcthorsecorrecthorse", "repeated"),
        ("ababababcdcdcdcdab", "small set"),
        ("correct horse battery staple", "well-known phrase"),
        ("adminpassword12345", "well-known passwords"),
        ("Tr0ub4dor&3", "too short"),  # the 15-character minimum stays
    ],
)
def test_weak_passwords_the_extra_checks_refuse(password: str, reason: str) -> None:
    from veilcam.common.passwordinput import check_password_strength

    with pytest.raises(WeakPasswordError, match=reason):
        check_password_strength(password, user="alice")


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery",
        "tangerine-lamp-oxbow-47",
        "Ein Passwort ohne Sonderzeichen",
        "x7#Kq9!mZ2@vL5$w",
    ],
)
def test_good_passwords_pass_the_extra_checks(password: str) -> None:
    from veilcam.common.passwordinput import check_password_strength

    check_password_strength(password, user="alice")


def test_one_trailing_line_ending_is_not_part_of_the_password() -> None:
    import io

    from veilcam.common.passwordinput import read_password

    for line, expected in (
        ("pw from windows\r\n", "pw from windows"),
        ("pw\n", "pw"),
        ("pw\r", "pw"),
        ("pw", "pw"),
        ("pw \n", "pw "),
    ):
        assert read_password(True, stream=io.StringIO(line)) == expected


def test_a_terminal_gets_no_echo_and_a_new_password_is_asked_twice(monkeypatch) -> None:
    import getpass
    import io

    from veilcam.common.errors import VeilcamError
    from veilcam.common.passwordinput import read_password

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["first secret pass", "first secret pass", "one", "two"])
    prompts = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt: prompts.append(prompt) or next(answers))
    assert read_password(True, confirm=True, stream=Tty()) == "first secret pass"
    assert len(prompts) == 2
    with pytest.raises(VeilcamError, match="differ"):
        read_password(True, confirm=True, stream=Tty())


def test_user_add_refuses_a_repeated_password_and_strips_a_carriage_return(tmp_path) -> None:
    from veilcam.common.keystore import open_keystore

    from tests.conftest import PASSWORD, SAMPLE_CLIP, cli, make_home

    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    r = cli(
        "user", "add", "carol", "--home", str(home), "--password-stdin", stdin="passwordpassword\n"
    )
    assert r.returncode == 2 and "repeated" in r.stderr, r.stderr
    r = cli(
        "user", "add", "carol", "--home", str(home), "--password-stdin", stdin=PASSWORD + "\r\n"
    )
    assert r.returncode == 0, r.stderr
    assert open_keystore(home / "users" / "carol" / "keystore.json", PASSWORD).name == "carol"


def test_user_passwd_reseals_the_keystore(tmp_path) -> None:
    from veilcam.common.errors import KeystoreError
    from veilcam.common.keystore import open_keystore, parse_keystore

    from tests.conftest import PASSWORD, SAMPLE_CLIP, cli, make_home

    home = make_home(tmp_path, SAMPLE_CLIP)  # alice, with PASSWORD
    path = home / "users" / "alice" / "keystore.json"
    before = parse_keystore(path.read_text())
    new = "tangerine-lamp-oxbow-47"
    r = cli(
        "user",
        "passwd",
        "alice",
        "--home",
        str(home),
        "--password-stdin",
        stdin=f"not her password\n{new}\n",
    )
    assert r.returncode == 2 and "wrong password" in r.stderr
    r = cli(
        "user",
        "passwd",
        "alice",
        "--home",
        str(home),
        "--password-stdin",
        stdin=f"{PASSWORD}\npasswordpassword\n",
    )
    assert r.returncode == 2 and "repeated" in r.stderr
    r = cli(
        "user",
        "passwd",
        "alice",
        "--home",
        str(home),
        "--password-stdin",
        stdin=f"{PASSWORD}\r\n{new}\r\n",
    )
    assert r.returncode == 0, r.stderr
    # this home holds the store's accounts: the account changes with the keystore, and says so
    assert "changed the store's account of alice" in r.stdout, r.stdout
    after = parse_keystore(path.read_text())
    assert after["public_key"] == before["public_key"]  # same keys: grants stay valid
    assert after["kdf"]["salt"] != before["kdf"]["salt"]
    assert open_keystore(path, new).name == "alice"
    with pytest.raises(KeystoreError):
        open_keystore(path, PASSWORD)
    assert path.stat().st_mode & 0o077 == 0
    from veilcam.common.home import Home
    from veilcam.common.keystore import derive_secrets, keystore_kdf
    from veilcam.store_node.accounts import AccountStore

    with AccountStore.open_in(Home(home)) as accounts:
        new_secret = derive_secrets(new, keystore_kdf(after)).login_secret
        assert accounts.check_login("alice", new_secret) is not None
        old_secret = derive_secrets(PASSWORD, keystore_kdf(before)).login_secret
        assert accounts.check_login("alice", old_secret) is None


def test_register_refuses_a_weak_password_before_reaching_the_store(tmp_path) -> None:
    """'register' applies the same strength checks as 'user add' (no store is running here:
    the refusal comes first)."""
    from tests.conftest import SAMPLE_CLIP, cli, make_home

    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    r = cli("register", "dana", "--home", str(home), "--password-stdin", stdin="passwordpassword\n")
    assert r.returncode == 2 and "repeated" in r.stderr and "Traceback" not in r.stderr
