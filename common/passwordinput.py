"""Reading passwords, and the strength checks added to common.passwords.check_password.

Reading: ``--password-stdin`` reads one line; one trailing line ending ("\\r\\n", "\\n" or
"\\r", as a Windows terminal or a file written there sends it) is not part of the password.
When standard input is a terminal the password is asked for without echo (getpass), and a
new one is asked twice.

Strength, on top of check_password (length >= 15, common bases, runs, short repeats): a
password that is any unit repeated (``passwordpassword``, ``correcthorsecorrecthorse``), that
uses a very small set of characters, or that is made only of well-known passwords or a
well-known passphrase, is refused.
"""

from __future__ import annotations

import getpass
import re
import sys
from typing import TextIO

from veilcam.common.errors import VeilcamError
from veilcam.common.passwords import COMMON_BASES, LEET, WeakPasswordError, check_password

MIN_DISTINCT = 6  # distinct letters/digits: "abcabcabcxyzxyz" and the like are refused
COMMON_PHRASES = frozenset(
    {
        "correcthorsebatterystaple",
        "thequickbrownfoxjumpsoverthelazydog",
        "iloveyoutoo",
        "letmeinplease",
        "opensesame",
        "trustnoone",
        "maytheforcebewithyou",
        "passwordpassword",
        "qwertyuiopasdfghjkl",
        "iamthebest",
        "thisismypassword",
        "mypasswordismypassword",
        "ilovemyfamily",
        "changemeplease",
        "welcometothejungle",
    }
)


def strip_line_ending(line: str) -> str:
    """``line`` without one trailing "\\r\\n", "\\n" or "\\r"."""
    for ending in ("\r\n", "\n", "\r"):
        if line.endswith(ending):
            return line[: -len(ending)]
    return line


def _made_of_common_words(letters: str) -> bool:
    """Whether ``letters`` splits entirely into words of COMMON_BASES (e.g. "adminpassword")."""
    if not letters:
        return False
    ok = [True] + [False] * len(letters)
    for end in range(1, len(letters) + 1):
        ok[end] = any(
            ok[start] and letters[start:end] in COMMON_BASES
            for start in range(max(0, end - 15), end)
        )
    return ok[-1]


def check_password_strength(password: str, user: str = "") -> None:
    """check_password, plus: no repeated unit of any length, enough distinct characters, not
    only well-known words or a well-known phrase. Raises WeakPasswordError saying why."""
    check_password(password, user)
    compact = re.sub(r"[\s\W_]+", "", password.lower())
    for period in range(1, len(compact) // 2 + 1):
        if len(compact) % period == 0 and compact == compact[:period] * (len(compact) // period):
            raise WeakPasswordError(
                "password is a shorter password repeated: repeating adds "
                "almost nothing; use a few unrelated words"
            )
    if len(set(compact)) < MIN_DISTINCT:
        raise WeakPasswordError(
            f"password uses a very small set of characters (fewer than "
            f"{MIN_DISTINCT} different letters or digits)"
        )
    letters = re.sub(r"[^a-z]+", "", password.lower().translate(LEET))
    digits_stripped = re.sub(
        r"[^a-z]+", "", re.sub(r"[\d\W_]+$", "", password.lower()).translate(LEET)
    )
    if letters in COMMON_PHRASES or digits_stripped in COMMON_PHRASES:
        raise WeakPasswordError("password is a well-known phrase")
    if _made_of_common_words(digits_stripped) or _made_of_common_words(letters):
        raise WeakPasswordError("password is made only of well-known passwords")


def read_password(
    use_stdin: bool,
    *,
    prompt: str = "Password: ",
    confirm: bool = False,
    stream: TextIO | None = None,
) -> str:
    """The password: from a terminal without echo (asked twice with ``confirm``), else one
    line of standard input. ``use_stdin`` is --password-stdin: a password is never an
    argument."""
    stream = stream or sys.stdin
    if not use_stdin:
        raise VeilcamError(
            "give the password on standard input with --password-stdin "
            "(never as an argument: arguments are visible to other users)"
        )
    if stream.isatty():
        password = getpass.getpass(prompt)
        if confirm and getpass.getpass("Again, to confirm: ") != password:
            raise VeilcamError("the two passwords differ; nothing was changed")
    else:
        password = strip_line_ending(stream.readline())
    if not password:
        raise VeilcamError("no password on standard input")
    return password
