"""Turning verified frames back into original pixels for one unlocked user.

Keys never leave this process: the user's identity unwraps each epoch's class keys from the
camera-signed key envelope, and zones are decrypted only from frames whose signature and
hashes were checked (CTR ciphertexts are malleable; the signature is the integrity).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import numpy as np
from veilcam.common.errors import FormatError, NotARecipientError
from veilcam.common.format import EnvelopeBody, FrameMessage, ZoneClass
from veilcam.common.imagecodec import decode_image
from veilcam.common.keywrap import Identity
from veilcam.common.zonecrypt import decrypt_zone

log = logging.getLogger("veilcam.unlock")

EnvelopeLookup = Callable[[str, bytes], EnvelopeBody | None]


class Unlocker:
    """Per user: caches each epoch's class keys (or the fact that there are none for them)."""

    def __init__(self, identity: Identity, lookup: EnvelopeLookup) -> None:
        self.identity = identity
        self.lookup = lookup
        self._keys: dict[tuple[str, bytes], dict[ZoneClass, bytes]] = {}
        self.last_problem = ""
        # camera -> why this user opens nothing of its current epoch (not a recipient: never
        # granted or revoked); cleared when an epoch of that camera opens again
        self.no_grant: dict[str, str] = {}

    def forget(self) -> None:
        """Drop the private keys and every cached content key (a session that ended)."""
        self._keys.clear()
        self.identity = None  # type: ignore[assignment]
        self.lookup = lambda camera_id, epoch_id: None

    @property
    def user(self) -> str:
        return self.identity.name if self.identity is not None else ""

    def keys_for(self, camera_id: str, epoch_id: bytes) -> dict[ZoneClass, bytes]:
        cache_key = (camera_id, epoch_id)
        if cache_key in self._keys:
            return self._keys[cache_key]
        if self.identity is None:
            return {}  # forgotten: the session ended
        body = self.lookup(camera_id, epoch_id)
        if body is None:
            self.last_problem = (
                f"no key envelope yet for camera {camera_id} epoch {epoch_id.hex()[:8]}"
            )
            return {}  # not cached: it may arrive later
        try:
            keys = self.identity.unwrap_envelope(body)
            self.last_problem = ""
            self.no_grant.pop(camera_id, None)
        except NotARecipientError as exc:
            if self.last_problem != str(exc):
                log.warning("%s", exc)
            self.last_problem = str(exc)
            self.no_grant[camera_id] = (
                f"no current grant for camera {camera_id} (revoked, "
                "or never granted): its zones stay redacted"
            )
            keys = {}
        self._keys[cache_key] = keys
        return keys

    def unlock(self, msg: FrameMessage, image: np.ndarray) -> list[bool]:
        """Paste every zone this user may see back into ``image`` (a decoded public frame).

        ``msg`` must already be verified. Returns, per zone, whether it was unlocked.
        """
        keys = self.keys_for(msg.camera_id, msg.header.epoch_id)
        done = []
        for i, (zone, ct) in enumerate(zip(msg.header.zones, msg.zone_ciphertexts, strict=True)):
            key = keys.get(zone.zone_class)
            if key is None:
                done.append(False)
                continue
            payload = decrypt_zone(key, msg.header.seq, i, ct)
            try:
                pixels = decode_image(payload, zone.codec, zone.w, zone.h)
            except FormatError as exc:
                log.error(
                    "frame %s#%d zone[%d] does not decode after decryption (%s)",
                    msg.camera_id,
                    msg.header.seq,
                    i,
                    exc,
                )
                done.append(False)
                continue
            image[zone.y : zone.y + zone.h, zone.x : zone.x + zone.w] = pixels
            done.append(True)
        return done


def no_grant_reason(home, user: str, camera_id: str) -> str:
    """Why ``user`` opens nothing of ``camera_id`` now, for the message shown to them: the
    grant file when this home has it (the admin's or a single-machine home), else a guess."""
    from veilcam.common.grants import grant_path

    path = grant_path(home.grants_dir, user, camera_id)
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return (
            f"no current grant for camera {camera_id} (revoked, or never granted): its "
            "zones stay redacted"
        )
    if doc.get("revoked"):
        return f"access to camera {camera_id} was revoked: its zones stay redacted"
    return (
        f"no grant for camera {camera_id} in its current key epoch (granted since? the "
        "camera starts a new epoch within seconds): its zones stay redacted"
    )
