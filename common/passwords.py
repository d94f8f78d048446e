"""Password policy after NIST SP 800-63B: length over composition, and no obviously weak ones.

No composition rules (no "one digit and one symbol"). A password must be at least
MIN_LENGTH characters (the guidance for a password used alone: 15), at most MAX_LENGTH, and
must not be a well-known or trivially guessable one: a common password (also with digits or
symbols appended or repeated), one character or a short pattern repeated, a keyboard or
alphabet run, or the user's own name or the product's name with little else.
"""

from __future__ import annotations

import re

from veilcam.common.errors import VeilcamError

MIN_LENGTH = 15
MAX_LENGTH = 256

# Frequent bases of breached passwords (lower-case, letters only): a password that is one of
# these, repeated or followed by digits/symbols, is refused whatever its length.
COMMON_BASES = frozenset(
    """
password passw0rd qwerty qwertyuiop asdfgh asdfghjkl zxcvbnm abc abcdef letmein welcome
admin administrator iloveyou monkey dragon master sunshine princess football baseball
shadow superman batman trustno login starwars whatever freedom hello charlie donald
secret security camera changeme default guest root user test access pass mustang michael
jennifer hunter ashley soccer killer computer internet summer winter spring autumn
""".split()
)

KEYBOARD_ROWS = ("1234567890", "qwertyuiopasdfghjklzxcvbnm", "abcdefghijklmnopqrstuvwxyz")
LEET = str.maketrans(
    {"@": "a", "4": "a", "0": "o", "1": "i", "3": "e", "$": "s", "5": "s", "7": "t", "!": "i"}
)


class WeakPasswordError(VeilcamError):
    """The password breaks the policy; the message says what to change."""


def _is_run(text: str) -> bool:
    if len(text) < 6:
        return False
    for row in KEYBOARD_ROWS:
        for seq in (row, row[::-1]):
            if text in seq * 3:
                return True
    return False


def check_password(password: str, user: str = "") -> None:
    """Raise WeakPasswordError saying what is wrong, or return."""
    if len(password) < MIN_LENGTH:
        raise WeakPasswordError(
            f"password too short: use at least {MIN_LENGTH} characters "
            "(a few unrelated words make a good one)"
        )
    if len(password) > MAX_LENGTH:
        raise WeakPasswordError(f"password too long: at most {MAX_LENGTH} characters")
    lower = password.lower()
    compact = re.sub(r"[\s\W_]+", "", lower)
    if len(set(compact)) <= 3:
        raise WeakPasswordError("password is one or a few characters repeated")
    for period in range(1, 6):
        if (
            len(compact) >= 2 * period
            and compact == (compact[:period] * len(compact))[: len(compact)]
        ):
            raise WeakPasswordError("password is a short pattern repeated")
    stem = re.sub(r"[\d\W_]+$", "", lower).translate(LEET)  # "P@ssword!!1" -> "password"
    letters = re.sub(r"[^a-z]+", " ", stem).split()
    if letters and all(word in COMMON_BASES for word in letters) and len(set(letters)) <= 2:
        raise WeakPasswordError(
            "password is a well-known password with digits or symbols around it"
        )
    if (
        _is_run(compact)
        or _is_run(re.sub(r"[^a-z]", "", lower))
        or _is_run(re.sub(r"\D", "", lower))
    ):
        raise WeakPasswordError("password is a keyboard or alphabet run")
    for word in filter(None, {user.lower(), "veilcam"}):
        rest = compact.replace(re.sub(r"[\s\W_]+", "", word), "")
        if len(rest) < 8:
            raise WeakPasswordError(f"password is mostly {word!r}: choose something unrelated")
