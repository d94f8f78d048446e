"""Zone encryption, signatures, hash chain and key wrapping: the properties docs/SECURITY.md lists."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from veilcam.camera_node.chainstate import RESERVE_BLOCK, ChainStateFile
from veilcam.camera_node.protect import Epoch
from veilcam.camera_node.zones import Zone
from veilcam.common.errors import NotARecipientError, VerificationError
from veilcam.common.format import (
    ZERO_DIGEST,
    EnvelopeBody,
    FrameMessage,
    KeyEnvelope,
    SealedKey,
    ZoneClass,
)
from veilcam.common.imagecodec import decode_image
from veilcam.common.signing import ChainLink, ChainTracker, RejectReason
from veilcam.common.zonecrypt import (
    BLOCK_LEN,
    MAX_BLOCKS_PER_ZONE,
    counter_block,
    decrypt_stream_au,
    decrypt_zone,
    encrypt_stream_au,
    encrypt_zone,
    stream_counter_block,
)

from tests.factory import Camera, textured


def _blocks(seq: int, zone: int, length: int) -> set[bytes]:
    first = int.from_bytes(counter_block(seq, zone), "big")
    n = (length + BLOCK_LEN - 1) // BLOCK_LEN
    return {(first + i).to_bytes(16, "big") for i in range(n)}


def test_counter_blocks_never_repeat_across_frames_and_zones() -> None:
    """Every AES block of every zone of many frames uses a distinct counter under one key."""
    cam = Camera()
    seen: set[bytes] = set()
    total = 0
    for _ in range(40):
        msg = cam.frame(
            zones=[
                Zone(0, 0, 100, 80, ZoneClass.FACE),
                Zone(50, 40, 120, 90, ZoneClass.FACE),  # overlapping
                Zone(200, 10, 60, 60, ZoneClass.STATIC),
            ]
        )
        for index, ct in enumerate(msg.zone_ciphertexts):
            blocks = _blocks(msg.header.seq, index, len(ct))
            total += len(blocks)
            seen |= blocks
    assert len(seen) == total


def test_counter_block_layout_is_seq_zone_counter() -> None:
    assert counter_block(0x0102030405060708, 0x0A0B0C0D) == bytes.fromhex(
        "01020304050607080a0b0c0d00000000"
    )
    with pytest.raises(ValueError):
        counter_block(2**64, 0)


def test_stream_counter_block_layout_is_seq_high_bit_class_counter() -> None:
    assert stream_counter_block(0x0102030405060708, ZoneClass.PERSON) == bytes.fromhex(
        "01020304050607088000000300000000"
    )
    with pytest.raises(ValueError):
        stream_counter_block(1, 0)
    with pytest.raises(ValueError):
        stream_counter_block(2**64, ZoneClass.FACE)


def test_stream_and_zone_counter_blocks_never_collide() -> None:
    """Under one key, the counter ranges of any stream AU (any seq, any class) and of any
    version-1 zone (any seq, index < 256) are disjoint, even at their largest length: the
    middle word of a stream block is >= 2^31, a zone's < 256, and the 32-bit block counter
    below it never carries into it (lengths are capped at 2^32 blocks)."""
    for seq in (0, 1, 2**32, 2**63 - 1):
        zone_ranges = [
            (int.from_bytes(counter_block(seq, i), "big"), MAX_BLOCKS_PER_ZONE) for i in range(256)
        ]
        stream_ranges = [
            (int.from_bytes(stream_counter_block(seq, c), "big"), MAX_BLOCKS_PER_ZONE)
            for c in ZoneClass
        ]
        ranges = sorted(zone_ranges + stream_ranges)
        for (a, n), (b, _) in zip(ranges, ranges[1:], strict=False):
            assert a + n <= b, "two counter ranges overlap"
        # and a range never reaches the next frame's blocks
        assert ranges[-1][0] + ranges[-1][1] <= int.from_bytes(counter_block(seq + 1, 0), "big")
    key = Epoch.new().class_keys[ZoneClass.FACE]
    data = bytes(1000)
    # same key, same seq: a stream AU's keystream differs from every zone's
    stream_ks = encrypt_stream_au(key, 7, ZoneClass.FACE, data)
    assert all(encrypt_zone(key, 7, i, data) != stream_ks for i in range(256))
    assert decrypt_stream_au(key, 7, ZoneClass.FACE, stream_ks) == data
    assert decrypt_stream_au(key, 7, ZoneClass.PERSON, stream_ks) != data


def test_content_keys_differ_per_epoch_and_class() -> None:
    """A restart starts a new epoch: a new random key per class, so counters may restart."""
    keys = [k for _ in range(20) for k in Epoch.new().class_keys.values()]
    assert len(set(keys)) == len(keys) == 20 * len(ZoneClass)


def test_sequence_numbers_never_repeat_across_restarts(tmp_path: Path) -> None:
    """Clean stop continues the chain; a crash resumes past every number that might be used."""
    path = tmp_path / "state.json"
    state = ChainStateFile(path)
    for seq in range(5):
        state.advance(seq, bytes([seq]) * 32)
    state.close_clean()
    again = ChainStateFile(path)
    assert again.next_seq == 5 and again.prev_digest == bytes([4]) * 32
    for seq in range(5, 12):
        again.advance(seq, bytes([seq]) * 32)
    # crash: no close_clean
    after_crash = ChainStateFile(path)
    assert after_crash.next_seq >= 12 and after_crash.next_seq == 5 + RESERVE_BLOCK
    assert after_crash.prev_digest == ZERO_DIGEST


def test_ctr_round_trip_and_wrong_position_gives_other_bytes() -> None:
    key = Epoch.new().class_keys[ZoneClass.FACE]
    data = bytes(range(256)) * 10
    ct = encrypt_zone(key, 7, 1, data)
    assert ct != data and decrypt_zone(key, 7, 1, ct) == data
    assert decrypt_zone(key, 7, 2, ct) != data
    assert decrypt_zone(key, 8, 1, ct) != data


def test_zone_ciphertext_holds_no_plaintext_pixels() -> None:
    cam = Camera()
    image = textured()
    msg = cam.frame(image=image, zones=[Zone(40, 30, 64, 80, ZoneClass.FACE)])
    original = image[30:110, 40:104].tobytes()
    ct = msg.zone_ciphertexts[0]
    assert original[:64] not in ct and original[1000:1064] not in ct


def test_signed_frame_verifies_and_unlocks_exactly() -> None:
    from veilcam.camera_node.protect import EncodeSettings
    from veilcam.common.format import ImageCodec

    cam = Camera()
    image = textured()
    msg = cam.frame(image=image, settings=EncodeSettings(zone_codec=ImageCodec.PNG))
    cam.trust.verify_frame(msg)
    body = cam.envelope().body
    keys = cam.identities[0].unwrap_envelope(body)
    for i, zone in enumerate(msg.header.zones):
        payload = decrypt_zone(keys[zone.zone_class], msg.header.seq, i, msg.zone_ciphertexts[i])
        pixels = decode_image(payload, zone.codec, zone.w, zone.h)
        assert np.array_equal(pixels, image[zone.y : zone.y + zone.h, zone.x : zone.x + zone.w])


def _with(msg: FrameMessage, **changes) -> FrameMessage:
    return dataclasses.replace(msg, **changes)


def test_forged_frame_rejected() -> None:
    cam = Camera()
    msg = cam.frame()
    forged = _with(msg, signature=bytes(64))
    with pytest.raises(VerificationError) as err:
        cam.trust.verify_frame(forged)
    assert err.value.reason == "bad_signature"


@pytest.mark.parametrize("field", ["seq", "capture_time_us", "epoch_id", "zones"])
def test_changed_header_field_breaks_signature(field: str) -> None:
    cam = Camera()
    msg = cam.frame()
    h = msg.header
    new = {
        "seq": h.seq + 1,
        "capture_time_us": h.capture_time_us + 1,
        "epoch_id": bytes(16),
        "zones": (dataclasses.replace(h.zones[0], x=h.zones[0].x + 1), *h.zones[1:]),
    }[field]
    header = dataclasses.replace(h, **{field: new})
    tampered = _with(msg, header=header, header_bytes=header.to_bytes())
    with pytest.raises(VerificationError, match="signature"):
        cam.trust.verify_frame(tampered)


def test_swapped_zone_ciphertext_or_image_rejected() -> None:
    cam = Camera()
    msg = cam.frame()
    flipped = bytearray(msg.zone_ciphertexts[0])
    flipped[10] ^= 1
    with pytest.raises(VerificationError) as err:
        cam.trust.verify_frame(
            _with(msg, zone_ciphertexts=(bytes(flipped), msg.zone_ciphertexts[1]))
        )
    assert err.value.reason == "zone_hash_mismatch"
    other = cam.frame(image=textured(seed=5))
    with pytest.raises(VerificationError) as err:
        cam.trust.verify_frame(_with(msg, public_image=other.public_image))
    assert err.value.reason == "image_hash_mismatch"


def test_frame_from_unknown_camera_rejected() -> None:
    stranger = Camera("cam1")  # same id, another key
    with pytest.raises(VerificationError) as err:
        Camera("cam1").trust.verify_frame(stranger.frame())
    assert err.value.reason == "bad_signature"
    with pytest.raises(VerificationError) as err:
        Camera("cam1").trust.verify_frame(Camera("cam9").frame())
    assert err.value.reason == "unknown_camera"


def test_replayed_and_reordered_frames_rejected_by_chain() -> None:
    cam = Camera()
    frames = [cam.frame() for _ in range(4)]
    chain = ChainTracker()
    assert chain.check(frames[0]) == "first"
    chain.accept(frames[0])
    assert chain.check(frames[1]) == "next"
    chain.accept(frames[1])
    with pytest.raises(VerificationError) as err:
        chain.check(frames[1])
    assert err.value.reason == "replay"
    assert chain.check(frames[3]) == "gap"


def test_chain_links_are_classified_in_the_order_replay_start_next_or_fork_gap() -> None:
    cam = Camera()
    frames = [cam.frame() for _ in range(3)]
    chain = ChainTracker()
    assert chain.classify(frames[0]) is ChainLink.FIRST
    chain.accept(frames[0])
    assert chain.classify(frames[0]) is ChainLink.REPLAY  # classify never raises
    assert chain.classify(frames[2]) is ChainLink.GAP
    cam.prev = bytes(32)  # the camera restarts without state: a new chain, at a higher seq
    restart = cam.frame()
    assert chain.classify(restart) is ChainLink.CHAIN_START
    fork = Camera()
    fork.key, fork.camera_id, fork.seq, fork.prev = cam.key, cam.camera_id, 1, bytes(31) + b"\x01"
    assert chain.classify(fork.frame()) is ChainLink.CHAIN_BREAK
    # the values are the strings logs, metrics labels and reports always showed
    assert ChainLink.CHAIN_START == "chain_start" and RejectReason.CHAIN_BREAK == "chain_break"


def test_fork_with_same_seq_successor_breaks_chain() -> None:
    a, b = Camera(), Camera()
    b.key, b.trust, b.camera_id = a.key, a.trust, a.camera_id
    first = a.frame()
    b.seq, b.prev = 1, bytes(31) + b"\x01"  # a validly signed frame #1 linking elsewhere
    chain = ChainTracker()
    chain.accept(first)
    with pytest.raises(VerificationError) as err:
        chain.check(b.frame())
    assert err.value.reason == "chain_break"


def test_non_recipient_cannot_unlock() -> None:
    cam = Camera(users=1)
    outsider = Camera(users=1).identities[0]
    with pytest.raises(NotARecipientError, match="not a recipient"):
        outsider.unwrap_envelope(cam.envelope().body)


def test_class_grant_limits_keys() -> None:
    cam = Camera(users=1)
    keys = cam.identities[0].unwrap_envelope(cam.envelope(classes={ZoneClass.FACE}).body)
    assert set(keys) == {ZoneClass.FACE}


def test_sealed_key_cannot_be_moved_to_another_epoch() -> None:
    """HPKE info binds camera, epoch, class and recipient: a store cannot re-target a key."""
    cam = Camera(users=1)
    body = cam.envelope().body
    moved = EnvelopeBody(
        body.camera_id, bytes(16), body.created_us, body.first_seq, body.suite, body.entries
    )
    with pytest.raises(VerificationError, match="does not open"):
        cam.identities[0].unwrap_envelope(moved)
    swapped = EnvelopeBody(
        body.camera_id,
        body.epoch_id,
        body.created_us,
        body.first_seq,
        body.suite,
        tuple(SealedKey(e.recipient_key_id, ZoneClass.PLATE, e.sealed) for e in body.entries[:1]),
    )
    with pytest.raises(VerificationError):
        cam.identities[0].unwrap_envelope(swapped)


def test_tampered_envelope_rejected() -> None:
    cam = Camera()
    env = cam.envelope()
    body = bytearray(env.body_bytes)
    body[-1] ^= 1
    tampered = KeyEnvelope(EnvelopeBody.from_bytes(bytes(body)), bytes(body), env.signature)
    with pytest.raises(VerificationError, match="signature"):
        cam.trust.verify_envelope(tampered)


def test_envelope_serialisation_is_stable() -> None:
    env = Camera(users=3).envelope()
    assert EnvelopeBody.from_bytes(env.body_bytes).to_bytes() == env.body_bytes
    assert json.dumps(len(env.body.entries)) == "15"


def test_whole_frame_key_goes_only_to_holders_of_every_class() -> None:
    """A fail-closed whole-frame zone uncovers everything: a faces-only user must not open it."""
    cam = Camera(users=1)
    faces_only = cam.identities[0].unwrap_envelope(cam.envelope(classes={ZoneClass.FACE}).body)
    assert ZoneClass.FULL not in faces_only
    everything = cam.identities[0].unwrap_envelope(
        cam.envelope(classes=set(ZoneClass.grantable())).body
    )
    assert ZoneClass.FULL in everything
