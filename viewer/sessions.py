"""Unlocked browser sessions, by the random token in their HttpOnly cookie.

The token is all the browser holds: the keys stay in the Unlocker here and are dropped
(``Unlocker.forget``) when the session ends, by Lock, idle time, maximum age or the sweeper.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from veilcam.common.lifecycle import StopFlag
from veilcam.viewer.unlock import Unlocker

log = logging.getLogger("veilcam.web")


@dataclass
class Session:
    unlocker: Unlocker
    created: float
    used: float


class Sessions:
    """Unlocked sessions by cookie token. A session ends after ``idle_s`` without a request (an
    open stream counts as requests) or ``max_s`` after the unlock, whichever comes first; its
    keys are dropped with it and the streams fall back to the public view."""

    def __init__(
        self,
        idle_s: float = 15 * 60,
        max_s: float = 12 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock  # monotonic seconds: idle and maximum session age
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.idle_s, self.max_s = idle_s, max_s

    def create(self, unlocker: Unlocker) -> str:
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._by_token[token] = Session(unlocker, now, now)
        return token

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.used > self.idle_s or now - session.created > self.max_s

    def sweep(self) -> int:
        """End every expired session now, dropping its keys (not only when its cookie comes
        back): called on every request and by a timer. Returns how many ended."""
        now = self.clock()
        with self._lock:
            ended = [(t, s) for t, s in self._by_token.items() if self._expired(s, now)]
            for token, _ in ended:
                del self._by_token[token]
        for _, session in ended:
            log.info("session of user %s expired; locked", session.unlocker.user)
            session.unlocker.forget()
        return len(ended)

    def get(self, token: str | None) -> Unlocker | None:
        self.sweep()
        if not token:
            return None
        with self._lock:
            session = self._by_token.get(token)
            if session is None:
                return None
            session.used = self.clock()
            return session.unlocker

    def owns(self, token: str | None, owner: str) -> bool:
        """Whether ``token`` is the live session ``owner`` (a token) names."""
        if not token or not owner:
            return False
        return (
            secrets.compare_digest(token.encode(), owner.encode()) and self.get(token) is not None
        )

    def drop(self, token: str | None) -> None:
        with self._lock:
            session = self._by_token.pop(token or "", None)
        if session is not None:
            session.unlocker.forget()

    def start_sweeper(self, stop: StopFlag, every_s: float = 30.0) -> threading.Thread:
        """A timer that ends expired sessions even when no request comes."""

        def run() -> None:
            while not stop.wait(every_s):
                self.sweep()

        thread = threading.Thread(target=run, name="session-sweeper", daemon=True)
        thread.start()
        return thread
