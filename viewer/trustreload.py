"""Viewers re-read certificates and the CRL when they change, as the store does.

The store polls ``Home.identity_stamp()`` every ``IDENTITY_CHECK_S`` and rebuilds its trusted
cameras with ``Home.trusted_cameras()`` (store_node/node.py, ``StoreNode.reload_identities``);
a viewer does the same with the same two calls and interval, so renewing a camera's
certificate (``veilcam cert issue camera:NAME``, then copying identities/certs/ here) or
revoking one takes effect in a running viewer within a second, without a restart.
"""

from __future__ import annotations

import logging
import time

from veilcam.common.errors import VeilcamError
from veilcam.common.home import Home
from veilcam.store_node.node import IDENTITY_CHECK_S

log = logging.getLogger("veilcam.viewer")


class TrustReloader:
    """Call ``poll()`` often (the receiving loop does); it reloads at most every
    IDENTITY_CHECK_S, and only when a certificate or the CRL changed. ``client`` is anything
    with a ``trust`` attribute (a viewer.client.RelayClient)."""

    def __init__(self, home: Home, client) -> None:
        self.home = home
        self.client = client
        self.stamp = home.identity_stamp()
        self.next_check = time.monotonic() + IDENTITY_CHECK_S
        self.reloads = 0

    def poll(self) -> bool:
        now = time.monotonic()
        if now < self.next_check:
            return False
        self.next_check = now + IDENTITY_CHECK_S
        try:
            stamp = self.home.identity_stamp()
            if stamp == self.stamp:
                return False
            trust = self.home.trusted_cameras()
        except (VeilcamError, OSError) as exc:  # half-copied files: try again next time
            log.error("cannot reload certificates (%s); keeping the ones loaded", exc)
            return False
        self.stamp = stamp
        self.client.trust = trust
        self.reloads += 1
        log.info(
            "certificates or CRL changed: reloaded, %d trusted camera(s)", len(trust.camera_ids)
        )
        return True


# verification failures that mean "this viewer trusts another key for that camera than the
# one signing now": most often an outdated certificate or CRL here, not a bad store
OUTDATED_TRUST_REASONS = frozenset({"bad_signature", "unknown_camera", "certificate_expired"})
OUTDATED_TRUST_HINT = (
    "the likely cause is an outdated camera certificate or CRL on this "
    "machine: copy identities/certs/ (with archive/) and identities/ca/crl.pem "
    "from the admin machine (docs/GUIDE.md, 'Certificates'); the viewer "
    "reloads them within a second"
)
