"""Wire format v1 (v2: tests/test_h264.py): round trips, and every malformed message rejected with FormatError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from veilcam.camera_node.protect import sign_gap_notice
from veilcam.common.errors import FormatError
from veilcam.common.format import (
    Ack,
    AckStatus,
    FrameHeader,
    FrameMessage,
    KeyEnvelope,
    decode_message,
    decode_message_body,
    message_from_parts,
)

from tests.factory import Camera


def test_frame_round_trip_keeps_header_bytes_exactly() -> None:
    msg = Camera().frame()
    parsed = FrameMessage.from_parts(msg.to_parts())
    assert parsed.header_bytes == msg.header_bytes
    assert parsed.header == msg.header
    assert parsed.zone_ciphertexts == msg.zone_ciphertexts
    assert FrameHeader.from_bytes(msg.header.to_bytes()) == msg.header


def test_envelope_round_trip() -> None:
    cam = Camera(users=2)
    env = cam.envelope()
    parsed = KeyEnvelope.from_parts(env.to_parts())
    assert parsed.body == env.body and parsed.signature == env.signature
    assert len(parsed.body.entries) == 2 * 5  # 4 grantable classes + the whole-frame one


def test_ack_round_trip() -> None:
    ack = Ack(AckStatus.REJECTED, b"F", 42, "cam1", "bad_signature")
    assert Ack.from_parts(ack.to_parts()) == ack


def test_each_kind_decodes_to_its_class_and_acks_name_it_by_its_ack_key() -> None:
    cam = Camera()
    env, frame = cam.envelope(), cam.frame()
    notice = sign_gap_notice(cam.key, "cam1", 3, 5)
    assert frame.ack_key == (b"F", frame.header.seq)
    assert env.ack_key == (b"K", env.body.epoch_id)
    assert notice.ack_key == (b"G", 3)
    for msg in (frame, env, notice):
        parts = msg.to_parts()
        assert parts[0] == b"cam1\x00" + msg.kind
        assert type(decode_message(parts)) is type(msg)
        assert decode_message(parts).ack_key == msg.ack_key
        assert decode_message_body(msg.kind, msg.body_parts()).ack_key == msg.ack_key
        ack = Ack.from_parts(Ack.for_message(msg, AckStatus.REJECTED, "why").to_parts())
        assert ack.key == msg.ack_key and ack.reason == "why"
    assert Ack.for_message(env, AckStatus.STORED).seq == 0
    assert Ack.for_message(frame, AckStatus.STORED).describe() == "frame cam1#0"
    assert Ack.for_message(notice, AckStatus.STORED).describe() == "gap notice cam1#3"
    assert (
        Ack.for_message(env, AckStatus.STORED).describe()
        == f"key envelope cam1/{env.body.epoch_id.hex()[:8]}"
    )
    with pytest.raises(FormatError, match="unknown message kind"):
        decode_message_body(b"Z", frame.body_parts())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p[:3], "needs at least 4"),
        (lambda p: [p[0], b"XXXX" + p[1][4:], *p[2:]], "bad magic"),
        (lambda p: [p[0], p[1][:4] + b"\x03" + p[1][5:], *p[2:]], "version 3"),
        # a version-1 header relabelled version 2 does not parse as one
        (lambda p: [p[0], p[1][:4] + b"\x02" + p[1][5:], *p[2:]], "image must be an H.264"),
        (lambda p: [p[0], p[1][:-1], *p[2:]], "truncated"),
        (lambda p: [p[0], p[1] + b"\x00", *p[2:]], "trailing"),
        (lambda p: [p[0], p[1], p[2][:-1], *p[3:]], "signature is 63 bytes"),
        (lambda p: [p[0], p[1], p[2], p[3] + b"x", *p[4:]], "public image is"),
        (lambda p: p[:-1], "carries 1 zone"),
        (lambda p: [*p[:-1], p[-1] + b"x"], r"zone\[1\] ciphertext is"),
        (lambda p: [b"cam2\x00F", *p[1:]], "topic does not match"),
    ],
)
def test_malformed_frame_rejected_with_reason(mutate, message) -> None:
    parts = Camera().frame().to_parts()
    with pytest.raises(FormatError, match=message):
        FrameMessage.from_parts(mutate(parts))


def test_unknown_topic_rejected() -> None:
    with pytest.raises(FormatError, match="unknown message topic"):
        message_from_parts([b"cam1\x00Z", b"x"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_frames_only_raise_format_error(data) -> None:
    parts = _BASE_PARTS
    index = data.draw(st.integers(0, len(parts) - 1))
    raw = bytearray(parts[index])
    for _ in range(data.draw(st.integers(1, 4))):
        if not raw:
            break
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    mutated = list(parts)
    mutated[index] = bytes(raw)
    try:
        message_from_parts(mutated)
    except FormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=0, max_size=6))
def test_random_parts_only_raise_format_error(parts) -> None:
    for topic in (b"cam1\x00F", b"cam1\x00K"):
        try:
            message_from_parts([topic, *parts])
        except FormatError:
            pass


_BASE_PARTS = Camera().frame().to_parts()


def test_header_layout_matches_docs_format_md() -> None:
    """Pins the byte layout documented in docs/FORMAT.md (offsets for camera id 'cam1')."""
    from veilcam.common.format import ImageCodec, ZoneClass, ZoneRecord

    zone = ZoneRecord(ZoneClass.FACE, ImageCodec.PNG, 1, 2, 3, 4, 5, b"\xcc" * 32)
    header = FrameHeader(
        "cam1",
        seq=0x0102,
        capture_time_us=0x0A0B,
        epoch_id=b"\xee" * 16,
        prev_digest=b"\xdd" * 32,
        image_codec=ImageCodec.JPEG,
        width=640,
        height=360,
        image_len=0x99,
        image_sha256=b"\xaa" * 32,
        zones=(zone,),
    )
    raw = header.to_bytes()
    L = 4
    assert raw[:7] == b"VCFH\x01\x00\x04" and raw[7 : 7 + L] == b"cam1"
    assert raw[7 + L : 15 + L] == (0x0102).to_bytes(8, "big")
    assert raw[15 + L : 23 + L] == (0x0A0B).to_bytes(8, "big")
    assert raw[23 + L : 39 + L] == b"\xee" * 16 and raw[39 + L : 71 + L] == b"\xdd" * 32
    assert raw[71 + L : 80 + L] == bytes([1]) + (640).to_bytes(2, "big") + (360).to_bytes(
        2, "big"
    ) + (0x99).to_bytes(4, "big")
    assert raw[80 + L : 112 + L] == b"\xaa" * 32 and raw[112 + L : 114 + L] == b"\x00\x01"
    assert raw[114 + L :] == bytes([2, 2, 0, 1, 0, 2, 0, 3, 0, 4, 0, 0, 0, 5]) + b"\xcc" * 32
    assert len(raw) == 114 + L + 46


def test_a_camera_never_signs_a_number_readers_refuse() -> None:
    """seq, capture time and gop_seq above 2^63 - 1 are malformed for every reader: the
    writer refuses them too (a store's CHAIN answer once pushed a camera there)."""
    import dataclasses

    from veilcam.common.format import FrameHeader, ImageCodec

    header = FrameHeader(
        "cam1", 5, 1, bytes(16), bytes(32), ImageCodec.JPEG, 2, 2, 1, bytes(32), flags=1
    )  # a chain start: zero prev digest
    assert FrameHeader.from_bytes(header.to_bytes()).seq == 5
    for field_name in ("seq", "capture_time_us"):
        with pytest.raises(FormatError, match="2\\^63"):
            dataclasses.replace(header, **{field_name: 2**63}).to_bytes()
