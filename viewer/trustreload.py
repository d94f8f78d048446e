"""Viewers re-read certificates and the CRL when they change, as the store does.

Both use ``common.deployment.TrustWatcher``: it compares the files' stamp every
IDENTITY_CHECK_S and reloads the trusted cameras only when a certificate or the CRL changed, so
renewing a camera's certificate (``veilcam cert issue camera:NAME``, then copying
identities/certs/ here) or revoking one takes effect in a running viewer within a second,
without a restart.
"""

from __future__ import annotations

from veilcam.common.deployment import Trust, TrustWatcher
from veilcam.common.home import Home


def watch_trust(home: Home, client) -> TrustWatcher:
    """A watcher that hands each reloaded set of trusted cameras to ``client`` (anything with
    a ``trust`` attribute: a viewer.client.RelayClient). Call its ``poll()`` often."""

    def apply(trust: Trust) -> None:
        client.trust = trust.cameras

    return TrustWatcher(home, on_change=apply)


# verification failures that mean "this viewer trusts another key for that camera than the
# one signing now": most often an outdated certificate or CRL here, not a bad store
OUTDATED_TRUST_REASONS = frozenset({"bad_signature", "unknown_camera", "certificate_expired"})
OUTDATED_TRUST_HINT = (
    "the likely cause is an outdated camera certificate or CRL on this "
    "machine: copy identities/certs/ (with archive/) and identities/ca/crl.pem "
    "from the admin machine (docs/GUIDE.md, 'Certificates'); the viewer "
    "reloads them within a second"
)
