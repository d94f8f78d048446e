"""H.264 mode (format version 2): header layout and parse checks, signatures over the access
units, zone-stream life, decoding quality, and counter blocks of the encrypted stream AUs."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import av
import cv2
import numpy as np
import pytest
from veilcam.camera_node.protect import Epoch
from veilcam.camera_node.videoenc import (
    H264Settings,
    PublicEncoder,
    ZoneStreams,
    _Canvas,
)
from veilcam.camera_node.zones import Zone
from veilcam.common.colorspace import bgr_to_yuv444, i420_to_bgr, yuv444_to_bgr
from veilcam.common.errors import FormatError, VerificationError
from veilcam.common.format import (
    FLAG_CHAIN_START,
    FLAG_KEYFRAME,
    ZERO_DIGEST,
    Ack,
    AckStatus,
    FrameHeader,
    FrameMessage,
    ImageCodec,
    StreamRecord,
    ZoneClass,
    ZoneRect,
    decode_message,
    decode_message_body,
)
from veilcam.common.signing import RejectReason
from veilcam.common.zonecrypt import counter_block, decrypt_stream_au, stream_counter_block

from tests.conftest import SAMPLE_CLIP, require_media
from tests.factory import H264Camera, textured

GOP = 4


def _pack_v2(
    *,
    flags: int = FLAG_KEYFRAME,
    seq: int = 5,
    codec: int = ImageCodec.H264,
    width: int = 320,
    height: int = 240,
    image_len: int = 100,
    gop_seq: int = 5,
    gop_index: int = 0,
    zones: list[tuple[int, int, int, int, int]] | None = None,
    streams: list[tuple[int, int, int]] | None = None,
    prev: bytes = b"\xdd" * 32,
    trailing: bytes = b"",
) -> bytes:
    """A version-2 header packed field by field from the table in docs/FORMAT.md, with no
    checks (so malformed ones can be made)."""
    zones = [(ZoneClass.FACE, 1, 2, 3, 4)] if zones is None else zones
    streams = [(ZoneClass.FACE, 1, 10)] if streams is None else streams
    out = b"VCFH" + bytes([2, flags, 4]) + b"cam1"
    out += struct.pack(">QQ", seq, 0x0A0B) + b"\xee" * 16 + prev
    out += struct.pack(">BHHI", codec, width, height, image_len) + b"\xaa" * 32
    out += struct.pack(">QIH", gop_seq, gop_index, len(zones))
    out += b"".join(struct.pack(">BHHHH", *z) for z in zones)
    out += bytes([len(streams)])
    out += b"".join(struct.pack(">BBI", c, f, n) + b"\xcc" * 32 for c, f, n in streams)
    return out + trailing


def test_header_layout_matches_docs_format_md_version_2() -> None:
    """Pins the version-2 byte layout (offsets for camera id 'cam1', L = 4)."""
    header = FrameHeader(
        "cam1",
        seq=5,
        capture_time_us=0x0A0B,
        epoch_id=b"\xee" * 16,
        prev_digest=b"\xdd" * 32,
        image_codec=ImageCodec.H264,
        width=320,
        height=240,
        image_len=100,
        image_sha256=b"\xaa" * 32,
        flags=FLAG_KEYFRAME,
        version=2,
        gop_seq=5,
        gop_index=0,
        zone_rects=(ZoneRect(ZoneClass.FACE, 1, 2, 3, 4),),
        streams=(StreamRecord(ZoneClass.FACE, 1, 10, b"\xcc" * 32),),
    )
    raw = header.to_bytes()
    assert raw == _pack_v2()
    L = 4
    assert raw[4] == 2 and raw[5] == FLAG_KEYFRAME and raw[71 + L] == 4
    assert raw[112 + L : 120 + L] == (5).to_bytes(8, "big")  # gop_seq
    assert raw[120 + L : 124 + L] == bytes(4)  # gop_index
    assert raw[124 + L : 126 + L] == b"\x00\x01"  # zone_count
    assert raw[126 + L : 135 + L] == bytes([2, 0, 1, 0, 2, 0, 3, 0, 4])
    assert raw[135 + L] == 1  # stream_count
    assert raw[136 + L : 142 + L] == bytes([2, 1, 0, 0, 0, 10])
    assert len(raw) == 136 + L + 38
    assert FrameHeader.from_bytes(raw) == header


def test_v2_round_trip_and_message_kinds() -> None:
    cam = H264Camera()
    msg, _ = cam.frame(zones=[Zone(40, 30, 64, 80, ZoneClass.FACE), Zone(0, 0, 8, 8, 1)])
    assert msg.version == 2 and msg.is_keyframe and msg.gop_seq == 0
    assert msg.header.flags == FLAG_CHAIN_START | FLAG_KEYFRAME
    assert [s.zone_class for s in msg.streams] == [ZoneClass.STATIC, ZoneClass.FACE]
    assert msg.zone_ciphertexts == () and len(msg.stream_ciphertexts) == 2
    parsed = FrameMessage.from_parts(msg.to_parts())
    assert parsed == msg and parsed.header.to_bytes() == msg.header_bytes
    assert decode_message(msg.to_parts()) == msg
    assert decode_message_body(b"F", msg.body_parts()) == msg
    assert Ack.for_message(msg, AckStatus.STORED).describe() == "frame cam1#0"
    cam.trust.verify_frame(parsed)
    cam.trust.verify_frame(parsed, at_capture_time=True)
    nxt, _ = cam.frame()
    assert not nxt.is_keyframe and nxt.gop_seq == 0 and nxt.header.gop_index == 1
    assert FrameMessage.from_body_parts(nxt.body_parts()) == nxt


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(gop_index=1), "disagree"),  # KEYFRAME with gop_index 1
        (dict(flags=0), "disagree"),  # gop_index 0 without KEYFRAME
        (dict(gop_seq=4), "disagree"),  # KEYFRAME with gop_seq != seq
        (dict(flags=0, gop_seq=6, gop_index=1), "after the frame's seq"),
        (dict(flags=0, gop_seq=5, gop_index=1), "disagree"),  # gop_seq == seq, not a keyframe
        (dict(zones=[(ZoneClass.PERSON, 0, 0, 4, 4)]), "no stream"),
        (dict(streams=[(ZoneClass.FACE, 0, 10)]), "aligned"),
        (dict(zones=[(ZoneClass.FACE, 300, 0, 21, 4)]), "outside"),
        (dict(zones=[(ZoneClass.FACE, 0, 0, 0, 4)]), "empty or outside"),
        (dict(zones=[(9, 0, 0, 4, 4)]), "unknown zone"),
        (dict(trailing=b"\x00"), "trailing"),
        (dict(streams=[(2, 1, 10), (2, 1, 10)]), "strictly increasing"),
        (dict(streams=[(3, 1, 10), (2, 1, 10)]), "strictly increasing"),
        (dict(streams=[(c, 1, 10) for c in (1, 2, 3, 4, 5, 5)]), "at most 5"),
        (dict(streams=[(2, 3, 10)]), "unknown flags"),
        (dict(streams=[(2, 1, 0)]), "empty"),
        (dict(streams=[(2, 1, 64 * 2**20 + 1)]), "exceeds"),
        (dict(streams=[(7, 1, 10)]), "unknown stream"),
        (dict(flags=FLAG_KEYFRAME | 0x04), "unknown frame flags"),
        (dict(codec=ImageCodec.JPEG), "must be an H.264"),
        (dict(width=321), "odd"),
        (dict(image_len=0), "empty"),
        (dict(prev=ZERO_DIGEST), "chain-start"),
        (dict(flags=FLAG_KEYFRAME | FLAG_CHAIN_START), "chain-start"),
    ],
)
def test_every_v2_parse_check_refuses_with_a_reason(fields, message) -> None:
    FrameHeader.from_bytes(_pack_v2())  # the unmodified one parses
    with pytest.raises(FormatError, match=message):
        FrameHeader.from_bytes(_pack_v2(**fields))


def test_truncated_v2_headers_are_refused_at_every_length() -> None:
    raw = _pack_v2(zones=[(2, 1, 2, 3, 4)] * 3, streams=[(2, 1, 10), (3, 0, 20)], flags=0,
                   gop_seq=3, gop_index=2)  # fmt: skip
    FrameHeader.from_bytes(raw)
    for n in range(len(raw)):
        with pytest.raises(FormatError):
            FrameHeader.from_bytes(raw[:n])


def test_v1_refuses_h264_codec_and_keyframe_flag() -> None:
    from tests.factory import Camera

    v1 = Camera().frame().header_bytes
    L = 4
    with pytest.raises(FormatError, match="needs a version 2"):
        FrameHeader.from_bytes(v1[: 71 + L] + b"\x04" + v1[72 + L :])
    with pytest.raises(FormatError, match="unknown frame flags"):
        FrameHeader.from_bytes(v1[:5] + bytes([v1[5] | FLAG_KEYFRAME]) + v1[6:])
    with pytest.raises(FormatError, match="not a version 1 zone codec"):
        FrameHeader.from_bytes(v1[: 114 + L + 1] + b"\x04" + v1[114 + L + 2 :])


def test_writer_refuses_what_readers_refuse() -> None:
    """A camera never signs a header that a reader would refuse."""
    good = FrameHeader.from_bytes(_pack_v2())
    for change in (
        dict(gop_index=3),
        dict(streams=()),
        dict(zone_rects=(ZoneRect(ZoneClass.FACE, 318, 0, 4, 4),)),
        dict(image_codec=ImageCodec.JPEG),
    ):
        with pytest.raises(FormatError):
            dataclasses.replace(good, **change).to_bytes()


def test_message_parts_must_match_the_stream_records() -> None:
    msg, _ = H264Camera().frame()
    parts = msg.to_parts()
    with pytest.raises(FormatError, match="carries 0 stream access units"):
        FrameMessage.from_parts(parts[:-1])
    with pytest.raises(FormatError, match="carries 2 stream"):
        FrameMessage.from_parts([*parts, b"x"])
    with pytest.raises(FormatError, match=r"stream\[0\] access unit is"):
        FrameMessage.from_parts([*parts[:-1], parts[-1] + b"x"])
    with pytest.raises(FormatError, match="public access unit is"):
        FrameMessage.from_parts([*parts[:3], parts[3][:-1], *parts[4:]])


def _with(msg: FrameMessage, **changes) -> FrameMessage:
    return FrameMessage.from_parts(dataclasses.replace(msg, **changes).to_parts())


def test_tampered_access_units_and_header_are_detected() -> None:
    cam = H264Camera()
    msg, _ = cam.frame(zones=[Zone(40, 30, 64, 80, ZoneClass.FACE), Zone(200, 100, 50, 40, 3)])
    other, _ = cam.frame(zones=[Zone(40, 30, 64, 80, ZoneClass.FACE), Zone(200, 100, 50, 40, 3)])
    au = bytearray(msg.public_image)
    au[len(au) // 2] ^= 1
    cases = {
        RejectReason.IMAGE_HASH_MISMATCH: [_with(msg, public_image=bytes(au))],
        RejectReason.ZONE_HASH_MISMATCH: [
            _with(
                msg,
                stream_ciphertexts=(
                    msg.stream_ciphertexts[0][:-1] + bytes([msg.stream_ciphertexts[0][-1] ^ 1]),
                    *msg.stream_ciphertexts[1:],
                ),
            ),  # fmt: skip
            # swapped between the records (lengths differ: checked without re-parsing)
            dataclasses.replace(msg, stream_ciphertexts=msg.stream_ciphertexts[::-1]),
        ],
        RejectReason.BAD_SIGNATURE: [
            dataclasses.replace(msg, header_bytes=other.header_bytes, header=other.header),
        ],
    }
    # a stream AU of the same length from another frame (the swap keeps every length)
    for i in range(2):
        if len(other.stream_ciphertexts[i]) == len(msg.stream_ciphertexts[i]):
            swapped = list(msg.stream_ciphertexts)
            swapped[i] = other.stream_ciphertexts[i]
            cases[RejectReason.ZONE_HASH_MISMATCH].append(
                _with(msg, stream_ciphertexts=tuple(swapped))
            )
    # every header byte after the magic and version, flipped, breaks parse or signature
    for pos in range(5, len(msg.header_bytes)):
        raw = bytearray(msg.header_bytes)
        raw[pos] ^= 0x10
        try:
            forged = FrameMessage.from_body_parts([bytes(raw), *msg.body_parts()[1:]])
        except FormatError:
            continue
        with pytest.raises(VerificationError) as exc:
            cam.trust.verify_frame(forged)
        assert exc.value.reason in (RejectReason.BAD_SIGNATURE, RejectReason.UNKNOWN_CAMERA)
    for reason, forged_list in cases.items():
        for forged in forged_list:
            with pytest.raises(VerificationError) as exc:
                cam.trust.verify_frame(forged)
            assert exc.value.reason == reason
    cam.trust.verify_frame(msg)


def test_public_keyframes_every_gop_and_gop_fields() -> None:
    cam = H264Camera(gop=4)
    msgs = [cam.frame()[0] for _ in range(10)]
    assert [m.is_keyframe for m in msgs] == [i % 4 == 0 for i in range(10)]
    assert [m.gop_seq for m in msgs] == [0, 0, 0, 0, 4, 4, 4, 4, 8, 8]
    assert [m.header.gop_index for m in msgs] == [i % 4 for i in range(10)]
    for m in msgs:  # Annex B, SPS in-band on every IDR (decoding can start there)
        assert m.public_image.startswith(b"\x00\x00\x00\x01")
        nal_types = _nal_types(m.public_image)
        assert (7 in nal_types and 8 in nal_types and 5 in nal_types) == m.is_keyframe


def _nal_types(au: bytes) -> list[int]:
    return [au[i + 3] & 0x1F for i in range(len(au) - 3) if au[i : i + 3] == b"\x00\x00\x01"]


def _flags(msg: FrameMessage) -> dict[ZoneClass, bool]:
    return {s.zone_class: s.is_keyframe for s in msg.streams}


def test_zone_stream_life() -> None:
    """Start with an IDR mid-GOP; an AU in every frame while active; IDRs aligned on public
    keyframes; end at the keyframe after a GOP without zones of the class."""
    cam = H264Camera(gop=4)
    face, person = Zone(40, 30, 64, 80, ZoneClass.FACE), Zone(200, 100, 50, 40, ZoneClass.PERSON)
    plan = [[face], [face], [face, person], [face], [], [], [], [], [], []]
    msgs = [cam.frame(zones=z)[0] for z in plan]
    flags = [_flags(m) for m in msgs]
    assert flags[0] == {ZoneClass.FACE: True}
    assert flags[1] == {ZoneClass.FACE: False}
    assert flags[2] == {ZoneClass.FACE: False, ZoneClass.PERSON: True}  # mid-GOP start: IDR
    assert flags[3] == {ZoneClass.FACE: False, ZoneClass.PERSON: False}  # no person: still on
    # frame 4 is a public keyframe: both had zones in the GOP 0-3, so both go on, as IDRs
    assert msgs[4].is_keyframe and flags[4] == {ZoneClass.FACE: True, ZoneClass.PERSON: True}
    assert flags[5] == flags[6] == flags[7] == {ZoneClass.FACE: False, ZoneClass.PERSON: False}
    # frame 8: keyframe after a GOP (4-7) with no zone at all: both streams ended
    assert msgs[8].is_keyframe and flags[8] == {} and flags[9] == {}
    # flat frames cost next to nothing
    assert all(len(ct) < 200 for m in msgs[5:8] for ct in m.stream_ciphertexts)
    # a class back after its stream ended starts again with an IDR, mid-GOP
    back, _ = cam.frame(zones=[face])
    assert not back.is_keyframe and _flags(back) == {ZoneClass.FACE: True}


def test_zone_streams_alone_follow_the_life_rules() -> None:
    streams = ZoneStreams(64, 48, 10.0, H264Settings())
    img = textured(64, 48)
    z = Zone(8, 8, 16, 16, ZoneClass.PLATE)
    assert streams.encode(img, [], True) == [] and streams.active == []
    out = streams.encode(img, [z], False)
    assert [(a.zone_class, a.keyframe) for a in out] == [(ZoneClass.PLATE, True)]
    assert streams.started == 1
    for _ in range(3):
        assert [a.keyframe for a in streams.encode(img, [], False)] == [False]
    assert [a.keyframe for a in streams.encode(img, [], True)] == [True]  # seen in that GOP
    for _ in range(3):
        streams.encode(img, [], False)
    assert streams.encode(img, [], True) == [] and streams.ended == 1
    streams.close()


def _decode(dec: Any, au: bytes) -> np.ndarray:
    frames = dec.decode(av.Packet(au))
    assert len(frames) == 1, "the decoder held a frame back"
    frame = frames[0]
    if frame.format.name == "yuv444p":  # a zone stream
        return yuv444_to_bgr(frame.to_ndarray())
    assert frame.format.name == "yuv420p"  # the public stream
    return i420_to_bgr(frame.to_ndarray())


def _clip_frames(n: int, width: int, height: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(require_media(SAMPLE_CLIP)))
    frames: list[np.ndarray] = []
    while len(frames) < n:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    cap.release()
    assert frames
    return frames


def test_decoded_public_and_zone_streams_at_quality() -> None:
    """Public AUs decode to the redacted frame at > 35 dB (CRF 23); a class stream gives the
    zone pixels back at >= 40 dB inside its zones (zone CRF 19), frame by frame."""
    width, height = 640, 360
    cam = H264Camera(gop=10, fps=30.0)
    public_dec = av.CodecContext.create("h264", "r")
    class_dec: dict[ZoneClass, av.CodecContext] = {}
    public_psnr, zone_psnr = [], []
    for i, image in enumerate(_clip_frames(24, width, height)):
        zones = [
            Zone(100 + 3 * i, 60, 90, 110, ZoneClass.FACE),
            Zone(300, 40, 150, 300, ZoneClass.PERSON),
            Zone(0, 330, 640, 30, ZoneClass.STATIC),
        ]
        original = image.copy()
        msg, _ = cam.frame(image=image, zones=zones)
        redacted = original.copy()
        for z in zones:
            cam.redactor(redacted[z.y : z.y + z.h, z.x : z.x + z.w])
        public_psnr.append(cv2.PSNR(_decode(public_dec, msg.public_image), redacted))
        for stream, ct in zip(msg.streams, msg.stream_ciphertexts, strict=True):
            au = decrypt_stream_au(
                cam.epoch.class_keys[stream.zone_class], msg.header.seq, stream.zone_class, ct
            )
            dec = class_dec.setdefault(stream.zone_class, av.CodecContext.create("h264", "r"))
            picture = _decode(dec, au)
            for z in msg.header.zone_rects:
                if z.zone_class == stream.zone_class:
                    box = (slice(z.y, z.y + z.h), slice(z.x, z.x + z.w))
                    zone_psnr.append(cv2.PSNR(picture[box], original[box]))
            # outside its zones the picture holds only what the public one does (the redacted
            # surroundings of its zones) or flat grey: nothing of another class's zones
            mask = np.ones((height, width), bool)
            for z in msg.header.zone_rects:
                if z.zone_class == stream.zone_class:
                    mask[max(0, z.y - 2) : z.y + z.h + 2, max(0, z.x - 2) : z.x + z.w + 2] = False
            as_public = np.abs(picture.astype(int) - redacted).max(axis=2) <= 40
            as_grey = np.abs(picture.astype(int) - 128).max(axis=2) <= 12
            assert (as_public | as_grey)[mask].mean() > 0.999
            for z in msg.header.zone_rects:
                if z.zone_class != stream.zone_class:
                    box = (slice(z.y, z.y + z.h), slice(z.x, z.x + z.w))
                    assert cv2.PSNR(picture[box], original[box]) < 25  # not its pixels
    assert min(public_psnr) > 35, public_psnr
    assert min(zone_psnr) >= 40, sorted(zone_psnr)[:5]


def _smooth(seed: int) -> np.ndarray:
    """A test picture 4:2:0 can carry (``textured`` has per-pixel colour noise, which chroma
    subsampling alone takes down to ~16 dB)."""
    return cv2.GaussianBlur(textured(seed=seed), (7, 7), 2.0)


def test_a_viewer_without_an_epoch_key_still_decodes_the_public_stream() -> None:
    """A key rotation mid-GOP changes only the key of each stream AU (the header names the
    epoch): the public stream decodes on for a viewer that cannot open the new epoch, and the
    class stream decodes straight through the rotation for one holding both epochs' keys."""
    cam = H264Camera(gop=6)
    old_epoch = cam.epoch
    public_dec = av.CodecContext.create("h264", "r")
    face_dec = av.CodecContext.create("h264", "r")
    face = Zone(40, 30, 64, 80, ZoneClass.FACE)
    keys_held = {old_epoch.epoch_id: old_epoch.class_keys}  # the viewer without the new epoch
    epochs = []
    for i in range(12):
        if i == 3:
            cam.epoch = Epoch.new()  # the camera's rotation, not at a keyframe
            all_keys = {**keys_held, cam.epoch.epoch_id: cam.epoch.class_keys}
        image = _smooth(seed=i)
        msg, _ = cam.frame(image=image, zones=[face])
        epochs.append(msg.header.epoch_id)
        assert _decode(public_dec, msg.public_image).shape == (240, 320, 3)  # no key needed
        assert (msg.header.epoch_id in keys_held) == (i < 3)
        held = all_keys if i >= 3 else keys_held
        key = held[msg.header.epoch_id][ZoneClass.FACE]
        (stream,) = msg.streams
        au = decrypt_stream_au(key, msg.header.seq, stream.zone_class, msg.stream_ciphertexts[0])
        picture = _decode(face_dec, au)
        box = (slice(face.y, face.y + face.h), slice(face.x, face.x + face.w))
        assert cv2.PSNR(picture[box], image[box]) > 25  # the right picture
    assert epochs[2] == old_epoch.epoch_id != epochs[3] == epochs[11]


def test_stream_counter_blocks_are_unique_across_frames_and_classes() -> None:
    """Every encrypted stream AU starts at its own counter block, never a zone's or another
    stream's, under every class key of an epoch."""
    cam = H264Camera(gop=5)
    zones = [Zone(c * 30, 10, 20, 20, c) for c in ZoneClass]
    seen: set[bytes] = set()
    total = 0
    for _ in range(12):
        msg, _ = cam.frame(zones=zones)
        assert len(msg.streams) == len(ZoneClass)
        for stream, ct in zip(msg.streams, msg.stream_ciphertexts, strict=True):
            first = int.from_bytes(stream_counter_block(msg.header.seq, stream.zone_class), "big")
            blocks = {(first + i).to_bytes(16, "big") for i in range((len(ct) + 15) // 16)}
            total += len(blocks)
            seen |= blocks
    assert len(seen) == total
    assert not seen & {counter_block(s, i) for s in range(12) for i in range(256)}


def test_odd_frame_sizes_lose_their_last_column_and_row() -> None:
    cam = H264Camera()
    msg, _ = cam.frame(image=textured(322, 242)[:241, :321], zones=[Zone(300, 200, 21, 41, 2)])
    assert (msg.header.width, msg.header.height) == (320, 240)
    assert msg.header.zone_rects == (ZoneRect(ZoneClass.FACE, 300, 200, 20, 40),)


def test_public_encoder_gives_one_access_unit_per_frame_at_once() -> None:
    enc = PublicEncoder(64, 48, 30.0, 3, H264Settings())
    dec = av.CodecContext.create("h264", "r")
    for i in range(7):
        out = enc.encode(textured(64, 48, seed=i))
        assert out.keyframe == (i % 3 == 0) and out.gop_index == i % 3
        _decode(dec, out.au)
    enc.close()


@pytest.mark.parametrize("big", [False, True], ids=["box-by-box", "whole-frame"])
def test_zone_canvas_is_grey_public_context_and_original_zones_exactly(big: bool) -> None:
    """The 4:4:4 picture of a class stream, frame after frame with the zones moving: the
    original pixels inside its zones, the public pixels in the rest of their macroblocks, flat
    grey elsewhere (the last frame's boxes grey again), whether it converts box by box or the
    whole canvas (zones over WHOLE_FRAME_SHARE of the frame)."""
    width, height = 320, 192
    canvas = _Canvas(width, height)
    rng = np.random.default_rng(7)
    for i in range(4):
        original = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        public = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        zones = [Zone(5 + 20 * i, 9 + 7 * i, 150 if big else 30, 120 if big else 21, 1)]
        if i % 2:
            zones.append(Zone(250, 150, 70, 42, 1))  # to the edges: boxes clipped to the frame
        expected = np.full((height, width, 3), 128, np.uint8)
        for z in zones:
            x0, y0 = z.x // 16 * 16, z.y // 16 * 16
            x1, y1 = min(width, -(-(z.x + z.w) // 16) * 16), min(height, -(-(z.y + z.h) // 16) * 16)
            expected[y0:y1, x0:x1] = public[y0:y1, x0:x1]
        for z in zones:
            expected[z.y : z.y + z.h, z.x : z.x + z.w] = original[z.y : z.y + z.h, z.x : z.x + z.w]
        planes = canvas.paint(original, public, zones)
        assert np.array_equal(planes, bgr_to_yuv444(expected)), i


def test_yuv444_conversion_into_a_buffer_and_back() -> None:
    """``bgr_to_yuv444`` writes the same planes into a given buffer as into a new one, refuses
    a buffer of another shape, and ``yuv444_to_bgr`` of a region inverts it within rounding."""
    image = cv2.GaussianBlur(textured(seed=3), (5, 5), 1.0)[:96, :160]
    out = np.empty((3, 96, 160), np.uint8)
    assert bgr_to_yuv444(image, out=out) is out
    ycrcb = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
    assert np.array_equal(out, np.stack((ycrcb[..., 0], ycrcb[..., 2], ycrcb[..., 1])))
    with pytest.raises(ValueError, match="C-contiguous"):
        bgr_to_yuv444(image, out=np.empty((3, 96, 161), np.uint8))
    back = yuv444_to_bgr(out[:, 10:50, 20:90])
    assert np.abs(back.astype(int) - image[10:50, 20:90]).max() <= 2
