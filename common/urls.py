"""Source URLs as they may be shown: passwords replaced by ``***``.

An IP camera's URL usually carries its password (``rtsp://admin:secret@10.0.0.5/stream``, or a
``password=`` query parameter on some vendors' firmware). Every log line, metric, stats file and
doctor message shows :func:`redact_url` of it, never the URL itself, and an error raised while
opening a stream (FFmpeg puts the URL in its messages) is passed through :func:`redact_text`.
"""

from __future__ import annotations

import re

SECRET_QUERY_KEYS = ("password", "passwd", "pass", "pwd", "secret", "token", "auth")

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@\s:]*):[^/@\s]*@")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:" + "|".join(SECRET_QUERY_KEYS) + r")=)[^&;#\s'\"]*", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """``url`` with the password of its user info and any password-like query value
    replaced by ``***`` (the user name stays: it helps find a misconfigured camera)."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """Every URL inside ``text`` (an error message, say) redacted as by :func:`redact_url`."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}***", text)
