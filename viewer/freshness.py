"""Is a live frame live? A store that relays yesterday's validly signed, chained frames must
not make the page say LIVE: the viewer compares each frame's capture time with its own clock.

A frame is *stale* when it is older than ``max_age_s`` (default 2 s, ``veilcam view
--max-age S``) plus the clock difference between this machine and the store, measured at
start with the store's ``TIME`` query (the same measurement as ``veilcam doctor``'s clock
check). Playback is old by definition and never judged.
"""

from __future__ import annotations

import logging
import time

from veilcam.common import deployment
from veilcam.common.errors import VeilcamError

log = logging.getLogger("veilcam.viewer")

DEFAULT_MAX_AGE_S = 2.0


class Freshness:
    def __init__(
        self, max_age_s: float = DEFAULT_MAX_AGE_S, skew_s: float = 0.0, margin_s: float = 0.0
    ) -> None:
        self.max_age_s = max_age_s
        self.skew_s = skew_s
        self.allowed_s = max_age_s + abs(skew_s) + margin_s

    @classmethod
    def measured(
        cls, home, max_age_s: float = DEFAULT_MAX_AGE_S, timeout_s: float = 2.0
    ) -> Freshness:
        """Allow the clock difference with the store of ``home``'s viewer.toml, measured over
        a link of its own (a late answer must not reach another query's socket)."""
        from veilcam.common.queryclient import StoreLink, measure_skew

        try:
            link = StoreLink(home, deployment.viewer_config(home).viewer.query)
            try:
                skew, margin = measure_skew(link, timeout_s)
            finally:
                link.close()
        except VeilcamError as exc:  # ClockUnknown, or no link at all
            log.warning(
                "clock difference with the store not measured (%s): live frames older "
                "than %.1f s are marked stale",
                exc,
                max_age_s,
            )
            return cls(max_age_s)
        fresh = cls(max_age_s, skew, margin)
        log.info(
            "this machine's clock is %.2f s %s the store's: live frames older than %.1f s "
            "are marked stale",
            abs(skew),
            "behind" if skew > 0 else "ahead of",
            fresh.allowed_s,
        )
        return fresh

    def judge(self, capture_time_us: int, now: float | None = None) -> dict:
        """``{"age_s": seconds since capture, "stale": older than allowed}``."""
        age = (time.time() if now is None else now) - capture_time_us / 1e6
        return {"age_s": round(age, 3), "stale": age > self.allowed_s}
