"""The tampering matrix: one row per field of the frame header (docs/FORMAT.md), per byte region
of a signed message, and per way of cutting or padding a multipart message, each with the reason
the store and the viewer must give. Shared by test_tampering.py (store process and viewer)."""

from __future__ import annotations

import struct
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from veilcam.camera_node.protect import EncodeSettings, protect_frame, sign_gap_notice
from veilcam.camera_node.redact import make_redactor
from veilcam.common.format import FrameMessage, KeyEnvelope

from tests.factory import Camera, textured
from tests.security.make_corpus import OFF, ZONE_LEN, H, W, small_zones, zone_field

DROPPED = "dropped"  # the viewer's answer to a malformed message: counted, logged, not shown


@dataclass
class Side:
    """What a row needs: the deployment's camera (real signing key) and a signed frame that
    verifies and was never sent (``base``), plus the epoch's envelope."""

    cam: Camera
    base: FrameMessage
    envelope: KeyEnvelope

    def frame(self) -> FrameMessage:
        return frame_now(self.cam)


def frame_now(cam: Camera, seed: int | None = None) -> FrameMessage:
    """The camera's next small signed frame, captured now (so the certificate covers it)."""
    msg = protect_frame(
        textured(W, H, seed=cam.seq % 7 if seed is None else seed),
        small_zones(),
        camera_id=cam.camera_id,
        seq=cam.seq,
        capture_time_us=time.time_ns() // 1000,
        epoch=cam.epoch,
        prev_digest=cam.prev,
        redactor=make_redactor("pixelate"),
        settings=EncodeSettings(),
        signing_key=cam.key,
    )
    cam.seq += 1
    cam.prev = msg.digest
    return msg


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Side], list[bytes]]
    store: str | None  # reason token the store counts; None: not sent to the store
    viewer: str | None  # reason the viewer reports (or DROPPED); None: not sent to the viewer


def _patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


def header(offset: int, new: bytes) -> Callable[[Side], list[bytes]]:
    def make(s: Side) -> list[bytes]:
        p = s.base.to_parts()
        return [p[0], _patch(p[1], offset, new), *p[2:]]

    return make


def header_xor(offset: int, mask: int = 0x01) -> Callable[[Side], list[bytes]]:
    def make(s: Side) -> list[bytes]:
        p = s.base.to_parts()
        return [p[0], _patch(p[1], offset, bytes([p[1][offset] ^ mask])), *p[2:]]

    return make


def parts(fn: Callable[[list[bytes]], list[bytes]]) -> Callable[[Side], list[bytes]]:
    return lambda s: fn(s.base.to_parts())


def _xor_at(data: bytes, offset: int) -> bytes:
    return _patch(data, offset, bytes([data[offset] ^ 0x01]))


def u16(v: int) -> bytes:
    return struct.pack(">H", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def _zones_swapped(s: Side) -> list[bytes]:
    p = s.base.to_parts()
    z, h = OFF["zones"], p[1]
    swapped = h[:z] + h[z + ZONE_LEN : z + 2 * ZONE_LEN] + h[z : z + ZONE_LEN]
    return [p[0], swapped, p[2], p[3], p[5], p[4]]


def _signed_by_another_key(s: Side) -> list[bytes]:
    p = s.base.to_parts()
    return [p[0], p[1], Camera(s.cam.camera_id).key.sign(p[1]), *p[3:]]


def _other_camera_with_topic(s: Side) -> list[bytes]:
    p = s.base.to_parts()
    return [b"cam2\x00F", _patch(p[1], OFF["camera_id"], b"cam2"), *p[2:]]


def _envelope(fn: Callable[[list[bytes]], list[bytes]]) -> Callable[[Side], list[bytes]]:
    return lambda s: fn(s.envelope.to_parts())


ENV_EPOCH = 7 + 4  # envelope body offsets for camera id "cam1"
ENV_CREATED = ENV_EPOCH + 16
ENV_FIRST_ENTRY = ENV_EPOCH + 34


def _gap(tamper: bool) -> Callable[[Side], list[bytes]]:
    def make(s: Side) -> list[bytes]:
        p = sign_gap_notice(s.cam.key, s.cam.camera_id, 1, 2).to_parts()
        return [p[0], _xor_at(p[1], 4 + 1 + 1 + 4 + 7), p[2]] if tamper else p

    return make


M, SIG, IMG, ZH = "malformed", "bad_signature", "image_hash_mismatch", "zone_hash_mismatch"


def _row(id_: str, make, store: str | None, viewer: str | None = "same") -> Case:
    if viewer == "same":
        viewer = DROPPED if store == M else store
    return Case(id_, make, store, viewer)


CASES: list[Case] = [
    # ---- frame header, field by field (docs/FORMAT.md, "Frame header")
    _row("magic", header(OFF["magic"], b"XCFH"), M),
    _row("version", header(OFF["version"], b"\x02"), M),
    _row("flags-unknown-bit", header(OFF["flags"], b"\x80"), M),
    _row("flags-chain-start-with-prev-digest", header(OFF["flags"], b"\x01"), M),
    _row("camera_id_len", header(OFF["camera_id_len"], b"\x03"), M),
    _row("camera_id-other-name-topic-kept", header(OFF["camera_id"], b"cam2"), M),
    _row(
        "camera_id-and-topic-other-camera",
        _other_camera_with_topic,
        "wrong_camera_identity",
        "unknown_camera",
    ),
    _row("camera_id-invalid", header(OFF["camera_id"], b"-am1"), M),
    _row("seq", header_xor(OFF["seq"] + 7), SIG),
    _row("seq-2^63", header(OFF["seq"], u64(2**63)), M),
    _row("capture_time_us", header_xor(OFF["capture_time_us"] + 7), SIG),
    _row("capture_time_us-year-148108", header(OFF["capture_time_us"], u64(2**62)), SIG),
    _row("epoch_id", header_xor(OFF["epoch_id"] + 5), SIG),
    _row("prev_digest", header_xor(OFF["prev_digest"] + 31), SIG),
    _row("prev_digest-zeroed-without-flag", header(OFF["prev_digest"], bytes(32)), M),
    _row("image_codec-other", header(OFF["image_codec"], b"\x02"), SIG),
    _row("image_codec-unknown", header(OFF["image_codec"], b"\x00"), M),
    _row("width", header(OFF["width"], u16(W - 1)), SIG),
    _row("width-zero", header(OFF["width"], u16(0)), M),
    _row("height", header(OFF["height"], u16(H - 1)), SIG),
    _row("height-zone-no-longer-inside", header(OFF["height"], u16(H - 8)), M),
    _row("image_len", header(OFF["image_len"], u32(0)), M),
    _row("image_len-64mib-plus-1", header(OFF["image_len"], u32(64 * 2**20 + 1)), M),
    _row("image_sha256", header_xor(OFF["image_sha256"] + 16), SIG),
    _row("zone_count-plus-1", header(OFF["zone_count"], u16(3)), M),
    _row("zone_count-minus-1", header(OFF["zone_count"], u16(1)), M),
    _row("zone_count-0", header(OFF["zone_count"], u16(0)), M),
    *[
        _row(f"zone{i}-{name}", header_xor(zone_field(i, name) + off), SIG)
        for i in (0, 1)
        for name, off in (("x", 1), ("y", 1), ("w", 1), ("h", 1), ("ciphertext_sha256", 0))
    ],
    _row("zone0-class-other", header(zone_field(0, "class"), b"\x03"), SIG),
    _row("zone1-class-other", header(zone_field(1, "class"), b"\x04"), SIG),
    _row("zone0-class-full", header(zone_field(0, "class"), b"\x05"), SIG),
    _row("zone0-class-unknown", header(zone_field(0, "class"), b"\x09"), M),
    _row("zone1-codec-other", header(zone_field(1, "codec"), b"\x03"), SIG),  # it is PNG
    _row("zone1-codec-unknown", header(zone_field(1, "codec"), b"\x00"), M),
    _row("zone1-rect-outside-frame", header(zone_field(1, "x"), u16(W)), M),
    _row("zone0-w-zero", header(zone_field(0, "w"), u16(0)), M),
    _row("zone0-ciphertext_len", header(zone_field(0, "ciphertext_len"), u32(1)), M),
    _row(
        "zone1-ciphertext_len-64mib-plus-1",
        header(zone_field(1, "ciphertext_len"), u32(64 * 2**20 + 1)),
        M,
    ),
    _row("zone-index-records-and-parts-swapped", _zones_swapped, SIG),
    _row("header-trailing-byte", parts(lambda p: [p[0], p[1] + b"\x00", *p[2:]]), M),
    _row("header-truncated", parts(lambda p: [p[0], p[1][:-1], *p[2:]]), M),
    # ---- byte regions
    _row(
        "public-image-byte", parts(lambda p: [*p[:3], _xor_at(p[3], len(p[3]) // 2), *p[4:]]), IMG
    ),
    _row("public-image-first-byte", parts(lambda p: [*p[:3], _xor_at(p[3], 0), *p[4:]]), IMG),
    _row("public-image-truncated", parts(lambda p: [*p[:3], p[3][:-1], *p[4:]]), M),
    _row("zone0-ciphertext-byte", parts(lambda p: [*p[:4], _xor_at(p[4], 0), p[5]]), ZH),
    _row("zone1-ciphertext-last-byte", parts(lambda p: [*p[:5], _xor_at(p[5], len(p[5]) - 1)]), ZH),
    _row("zone1-ciphertext-extended", parts(lambda p: [*p[:5], p[5] + b"\x00"]), M),
    _row("signature-byte", parts(lambda p: [p[0], p[1], _xor_at(p[2], 17), *p[3:]]), SIG),
    _row("signature-zeroed", parts(lambda p: [p[0], p[1], bytes(64), *p[3:]]), SIG),
    _row("signature-truncated", parts(lambda p: [p[0], p[1], p[2][:63], *p[3:]]), M),
    _row("signed-by-another-key", _signed_by_another_key, SIG),
    # ---- the multipart message cut short or padded
    _row("missing-last-zone-part", parts(lambda p: p[:-1]), M),
    _row("missing-image-and-zones", parts(lambda p: p[:3]), M),
    _row("only-topic-and-header", parts(lambda p: p[:2]), M),
    _row("only-topic", parts(lambda p: p[:1]), M),
    _row("extra-part", parts(lambda p: [*p, b"extra"]), M),
    _row("extra-empty-part", parts(lambda p: [*p, b""]), M),
    _row("zone-part-duplicated", parts(lambda p: [*p, p[-1]]), M),
    _row("topic-kind-envelope", parts(lambda p: [b"cam1\x00K", *p[1:]]), M),
    _row("topic-kind-gap", parts(lambda p: [b"cam1\x00G", *p[1:]]), M),
    _row("topic-kind-unknown", parts(lambda p: [b"cam1\x00Z", *p[1:]]), M),
    # ---- key envelopes and gap notices
    _row(
        "envelope-created_us",
        _envelope(lambda p: [p[0], _xor_at(p[1], ENV_CREATED + 7), p[2]]),
        SIG,
        DROPPED,
    ),
    _row(
        "envelope-epoch_id",
        _envelope(lambda p: [p[0], _xor_at(p[1], ENV_EPOCH), p[2]]),
        SIG,
        DROPPED,
    ),
    _row(
        "envelope-sealed-key-byte",
        _envelope(lambda p: [p[0], _xor_at(p[1], ENV_FIRST_ENTRY + 19 + 40), p[2]]),
        SIG,
        DROPPED,
    ),
    _row("envelope-signature", _envelope(lambda p: [p[0], p[1], _xor_at(p[2], 0)]), SIG, DROPPED),
    _row("envelope-magic", _envelope(lambda p: [p[0], _patch(p[1], 0, b"VCKX"), p[2]]), M),
    _row("envelope-extra-part", _envelope(lambda p: [*p, b""]), M),
    _row("gap-notice-first_seq", _gap(tamper=True), SIG, DROPPED),
    _row("gap-notice-valid-on-the-relay", _gap(tamper=False), None, DROPPED),
]


def case_params(side: str) -> list:
    import pytest

    return [pytest.param(c, id=c.id) for c in CASES if getattr(c, side) is not None]


def scrape_rejects(port: int) -> Counter:
    """The store's own reject counters by reason (its Prometheus endpoint)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return Counter(
        {
            s.labels["reason"]: int(s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "veilcam_store_messages_rejected_total"
        }
    )


def wait_rejects_change(port: int, before: Counter, timeout: float = 30) -> Counter:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = scrape_rejects(port)
        if now != before:
            return now - before
        time.sleep(0.02)
    raise AssertionError(f"the store counted no rejection within {timeout:.0f} s")
