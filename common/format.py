"""The veilcam wire format, versions 1 and 2: frames, key envelopes and acknowledgements.

Version 1 frames carry a JPEG (or PNG, raw) public image and one encrypted crop per zone;
version 2 frames (H.264 mode) carry one H.264 access unit of the public stream and one
encrypted access unit per active zone-class stream. Key envelopes, gap notices and
acknowledgements are version 1 in both modes.

This is the only module that builds or parses message bytes; nodes go through these value
objects. The layout is documented byte for byte in docs/FORMAT.md: change both together.

A message travels as a ZeroMQ multipart message. Its first part is a *topic* (camera id, a
NUL byte, and one kind letter) so that subscribers can filter per camera; the remaining parts
are what gets signed, archived and verified. ``from_parts`` validates every length and field
and raises ``FormatError``; it never trusts a field for anything but locating the others.
Authenticity is checked separately (``common.signing``) over the raw header bytes.

Each message class carries its ``kind`` letter and names itself by its ``ack_key`` (what an
acknowledgement refers to); ``decode_message`` (topic-led parts) and ``decode_message_body``
(kind and body parts, as archived or spooled) are the one place that picks the class.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, TypeAlias, TypeVar

from veilcam.common.errors import FormatError

FORMAT_VERSION = 1  # frames in JPEG mode, key envelopes, gap notices
FORMAT_VERSION_H264 = 2  # frames in H.264 mode (public and zone streams as access units)
FRAME_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_H264)  # what readers accept

FRAME_MAGIC = b"VCFH"
ENVELOPE_MAGIC = b"VCKE"
ACK_MAGIC = b"VCAK"

KIND_FRAME = b"F"
KIND_ENVELOPE = b"K"
KIND_GAP = b"G"
GAP_MAGIC = b"VCGN"

# How an acknowledgement names a message: (kind, seq) for frames and gap notices (their first
# seq), (kind, epoch id) for key envelopes. A message's ``ack_key`` and ``Ack.key`` agree.
AckKey: TypeAlias = tuple[bytes, int | bytes]

SIGNATURE_LEN = 64
DIGEST_LEN = 32
EPOCH_ID_LEN = 16
KEY_ID_LEN = 16
ZERO_DIGEST = bytes(DIGEST_LEN)

MAX_CAMERA_ID_LEN = 64
MAX_ZONES = 256
MAX_RECIPIENT_ENTRIES = 4096
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_ZONE_BYTES = 64 * 1024 * 1024
MAX_SEALED_KEY_LEN = 4096

# Sequence numbers and microsecond times travel as u64 but must stay below 2^63: the archive
# index keeps them as SQLite (signed 64-bit) integers, and a larger one must be refused as
# malformed here, not crash the store that indexes it (or its recovery at every restart).
MAX_U63 = 2**63 - 1

CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # \Z: no trailing newline

FLAG_CHAIN_START = 0x01  # prev_digest is zero: the camera declares a new hash chain (no history)
FLAG_KEYFRAME = 0x02  # version 2: the public AU is an IDR, decoding can start here
STREAM_FLAG_KEYFRAME = 0x01  # version 2 stream record: this stream's AU is an IDR
MAX_STREAMS = 5  # version 2: one stream per zone class at most


class ZoneClass(IntEnum):
    """What a zone hides. Content keys are per class, so grants can differ per class."""

    STATIC = 1
    FACE = 2
    PERSON = 3
    PLATE = 4
    FULL = 5  # the whole frame, covered because the detector was late or failed (fail closed)

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def grantable(cls) -> list[ZoneClass]:
        """The classes a grant or a config names. FULL is never granted by itself: its key
        goes to whoever holds all of these (it uncovers everything on its frames)."""
        return [cls.STATIC, cls.FACE, cls.PERSON, cls.PLATE]

    @classmethod
    def from_label(cls, label: str) -> ZoneClass:
        """'face' or 'faces', 'person' or 'people', 'plate(s)', 'static'."""
        text = label.strip().lower()
        text = {"faces": "face", "people": "person", "persons": "person", "plates": "plate"}.get(
            text, text
        )
        try:
            zone_class = cls[text.upper()]
        except KeyError:
            zone_class = None
        if zone_class not in cls.grantable():
            raise ValueError(
                f"unknown zone class {label!r} (expected one of: "
                f"{', '.join(c.label for c in cls.grantable())})"
            )
        return zone_class


class ImageCodec(IntEnum):
    JPEG = 1
    PNG = 2
    RAW_BGR = 3
    H264 = 4  # version 2 only: one H.264 access unit, Annex B byte stream


class KemSuite(IntEnum):
    """HPKE suites for wrapping epoch keys (RFC 9180 identifiers in docs/FORMAT.md)."""

    X25519_HKDF_SHA256_AES256GCM = 1
    MLKEM768X25519_HKDF_SHA256_AES256GCM = 2


def validate_camera_id(camera_id: str) -> str:
    if not isinstance(camera_id, str) or not CAMERA_ID_RE.fullmatch(camera_id):
        raise FormatError(
            f"invalid camera id {camera_id!r}: 1-64 characters of "
            "letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    return camera_id


def topic_for(camera_id: str, kind: bytes) -> bytes:
    """Subscription topic: ``camera_id NUL kind``. Subscribe to ``camera_id NUL`` for one camera."""
    return camera_id.encode("ascii") + b"\x00" + kind


def sha256(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


class _Reader:
    """Bounds-checked reader over a header; every short read is a FormatError naming the field."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int, name: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise FormatError(
                f"{self.what} truncated at field {name!r}: needs {n} bytes at "
                f"offset {self.pos}, only {len(self.data) - self.pos} left"
            )
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self, name: str) -> int:
        return self.take(1, name)[0]

    def u16(self, name: str) -> int:
        return struct.unpack(">H", self.take(2, name))[0]

    def u32(self, name: str) -> int:
        return struct.unpack(">I", self.take(4, name))[0]

    def u64(self, name: str) -> int:
        return struct.unpack(">Q", self.take(8, name))[0]

    def camera_id(self) -> str:
        n = self.u8("camera_id_len")
        raw = self.take(n, "camera_id")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise FormatError(f"{self.what}: camera id is not ASCII") from None
        return validate_camera_id(text)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FormatError(f"{self.what} has {len(self.data) - self.pos} trailing bytes")


_E = TypeVar("_E", bound=IntEnum)


def _enum(enum_cls: type[_E], value: int, what: str) -> _E:
    try:
        return enum_cls(value)
    except ValueError:
        raise FormatError(f"unknown {what} {value}") from None


def _u63(value: int, what: str) -> int:
    if value > MAX_U63:
        raise FormatError(f"{what} {value} is not below 2^63")
    return value


def _camera_id_bytes(camera_id: str) -> bytes:
    raw = validate_camera_id(camera_id).encode("ascii")
    return bytes([len(raw)]) + raw


# --------------------------------------------------------------------------- frames

ZONE_RECORD = struct.Struct(">BBHHHHI32s")  # class, codec, x, y, w, h, ct_len, ct_sha256
ZONE_RECT_RECORD = struct.Struct(">BHHHH")  # version 2: class, x, y, w, h
STREAM_RECORD = struct.Struct(">BBI32s")  # version 2: class, flags, au_len, au_sha256
V2_GOP = struct.Struct(">QI")  # version 2: gop_seq, gop_index


@dataclass(frozen=True)
class ZoneRecord:
    """One privacy zone as bound by the frame signature: where, what, and its ciphertext hash.

    The zone's index is its position in the header; together with the frame's sequence number
    it builds the AES-CTR counter block (common.zonecrypt).
    """

    zone_class: ZoneClass
    codec: ImageCodec
    x: int
    y: int
    w: int
    h: int
    ciphertext_len: int
    ciphertext_sha256: bytes

    def to_bytes(self) -> bytes:
        return ZONE_RECORD.pack(
            self.zone_class,
            self.codec,
            self.x,
            self.y,
            self.w,
            self.h,
            self.ciphertext_len,
            self.ciphertext_sha256,
        )


@dataclass(frozen=True)
class ZoneRect:
    """Version 2: one privacy zone as a rectangle of its class's stream. Its pixels are pasted
    from the decoded picture of that class's stream (whose AU the frame carries encrypted)."""

    zone_class: ZoneClass
    x: int
    y: int
    w: int
    h: int

    def to_bytes(self) -> bytes:
        return ZONE_RECT_RECORD.pack(self.zone_class, self.x, self.y, self.w, self.h)


@dataclass(frozen=True)
class StreamRecord:
    """Version 2: the AU of one zone-class stream in this frame, as bound by the signature:
    its class, whether it is an IDR, and the length and SHA-256 of its *encrypted* bytes."""

    zone_class: ZoneClass
    flags: int
    au_len: int
    au_sha256: bytes

    @property
    def is_keyframe(self) -> bool:
        return bool(self.flags & STREAM_FLAG_KEYFRAME)

    def to_bytes(self) -> bytes:
        return STREAM_RECORD.pack(self.zone_class, self.flags, self.au_len, self.au_sha256)


def _check_rect(i: int, x: int, y: int, w: int, h: int, width: int, height: int) -> None:
    if w == 0 or h == 0 or x + w > width or y + h > height:
        raise FormatError(
            f"zone[{i}] rectangle {x},{y},{w}x{h} is empty or outside the {width}x{height} frame"
        )


@dataclass(frozen=True)
class FrameHeader:
    """The signed header of a frame. ``version`` 1 (JPEG mode) uses ``zones`` (one encrypted
    crop each); version 2 (H.264 mode) uses ``zone_rects``, ``streams``, ``gop_seq`` and
    ``gop_index`` and leaves ``zones`` empty."""

    camera_id: str
    seq: int
    capture_time_us: int
    epoch_id: bytes
    prev_digest: bytes
    image_codec: ImageCodec
    width: int
    height: int
    image_len: int
    image_sha256: bytes
    zones: tuple[ZoneRecord, ...] = ()
    flags: int = 0
    version: int = FORMAT_VERSION
    gop_seq: int = 0
    gop_index: int = 0
    zone_rects: tuple[ZoneRect, ...] = ()
    streams: tuple[StreamRecord, ...] = ()

    @property
    def is_keyframe(self) -> bool:
        """Version 2: the KEYFRAME flag; every version-1 frame is a still image."""
        return self.version == FORMAT_VERSION or bool(self.flags & FLAG_KEYFRAME)

    def to_bytes(self) -> bytes:
        if len(self.epoch_id) != EPOCH_ID_LEN or len(self.prev_digest) != DIGEST_LEN:
            raise FormatError("epoch id must be 16 bytes and prev digest 32 bytes")
        if self.version not in FRAME_VERSIONS:
            raise FormatError(f"frame format version {self.version} is not supported")
        for name, value in (
            ("seq", self.seq),
            ("capture time", self.capture_time_us),
            ("gop_seq", self.gop_seq),
        ):
            _u63(value, f"frame {name}")  # readers refuse more: never sign it
        if len(self.zones) > MAX_ZONES or len(self.zone_rects) > MAX_ZONES:
            raise FormatError(
                f"{max(len(self.zones), len(self.zone_rects))} zones in one frame; "
                f"at most {MAX_ZONES}"
            )
        if self.version == FORMAT_VERSION_H264:
            self.check_v2()
        out = [
            FRAME_MAGIC,
            bytes([self.version, self.flags]),
            _camera_id_bytes(self.camera_id),
            struct.pack(">QQ", self.seq, self.capture_time_us),
            self.epoch_id,
            self.prev_digest,
            struct.pack(">BHHI", self.image_codec, self.width, self.height, self.image_len),
            self.image_sha256,
        ]
        if self.version == FORMAT_VERSION:
            out.append(struct.pack(">H", len(self.zones)))
            out.extend(z.to_bytes() for z in self.zones)
        else:
            out.append(V2_GOP.pack(self.gop_seq, self.gop_index))
            out.append(struct.pack(">H", len(self.zone_rects)))
            out.extend(z.to_bytes() for z in self.zone_rects)
            out.append(bytes([len(self.streams)]))
            out.extend(s.to_bytes() for s in self.streams)
        return b"".join(out)

    def check_v2(self) -> None:
        """The version-2 rules between fields (docs/FORMAT.md, "Checks"), raising FormatError.
        Run on parse and before writing, so no camera signs a header a reader refuses."""
        if self.zones:
            raise FormatError("a version 2 frame carries zone rectangles, not zone crops")
        if self.image_codec != ImageCodec.H264:
            raise FormatError(
                f"a version 2 frame's public image must be an H.264 access unit "
                f"(codec {ImageCodec.H264.value}), not {self.image_codec.name}"
            )
        if self.width % 2 or self.height % 2:
            raise FormatError(
                f"frame size {self.width}x{self.height} is odd: H.264 4:2:0 needs even sizes"
            )
        if self.flags & ~(FLAG_CHAIN_START | FLAG_KEYFRAME):
            raise FormatError(f"unknown frame flags 0x{self.flags:02x}")
        if not 0 < self.image_len:
            raise FormatError("the public access unit is empty")
        keyframe = bool(self.flags & FLAG_KEYFRAME)
        self._check_gop(keyframe)
        classes = self._check_streams(keyframe)
        for i, z in enumerate(self.zone_rects):
            _check_rect(i, z.x, z.y, z.w, z.h, self.width, self.height)
            if z.zone_class not in classes:
                raise FormatError(
                    f"zone[{i}] is of class {z.zone_class.label}, which has no stream in this frame"
                )

    def _check_gop(self, keyframe: bool) -> None:
        """KEYFRAME <=> gop_index == 0 <=> gop_seq == seq, and gop_seq <= seq."""
        if keyframe != (self.gop_index == 0) or keyframe != (self.gop_seq == self.seq):
            raise FormatError(
                f"keyframe flag {int(keyframe)}, gop_index {self.gop_index} and gop_seq "
                f"#{self.gop_seq} of frame #{self.seq} disagree (a keyframe has gop_index 0 "
                "and gop_seq equal to its seq, any other frame neither)"
            )
        if self.gop_seq > self.seq:
            raise FormatError(f"gop_seq #{self.gop_seq} is after the frame's seq #{self.seq}")

    def _check_streams(self, keyframe: bool) -> list[ZoneClass]:
        """Stream records: count, strict class order, flags, lengths, keyframe alignment."""
        if len(self.streams) > MAX_STREAMS:
            raise FormatError(f"{len(self.streams)} zone streams; at most {MAX_STREAMS}")
        classes = [s.zone_class for s in self.streams]
        if any(b <= a for a, b in zip(classes, classes[1:], strict=False)):
            raise FormatError("stream records are not in strictly increasing class order")
        for i, s in enumerate(self.streams):
            if s.flags & ~STREAM_FLAG_KEYFRAME:
                raise FormatError(f"stream[{i}] has unknown flags 0x{s.flags:02x}")
            if not 0 < s.au_len <= MAX_ZONE_BYTES:
                raise FormatError(
                    f"stream[{i}] access unit of {s.au_len} bytes is empty or exceeds "
                    f"{MAX_ZONE_BYTES}"
                )
            if keyframe and not s.is_keyframe:
                raise FormatError(
                    f"stream[{i}] ({s.zone_class.label}) is no keyframe on a public keyframe "
                    "(zone streams must be aligned to it)"
                )
        return classes

    @classmethod
    def from_bytes(cls, data: bytes) -> FrameHeader:
        r = _Reader(bytes(data), "frame header")
        if r.take(4, "magic") != FRAME_MAGIC:
            raise FormatError("not a veilcam frame header (bad magic)")
        version = r.u8("version")
        if version not in FRAME_VERSIONS:
            raise FormatError(
                f"frame format version {version} is not supported "
                f"(this build reads versions {', '.join(map(str, FRAME_VERSIONS))})"
            )
        flags = r.u8("flags")
        known = FLAG_CHAIN_START | (FLAG_KEYFRAME if version == FORMAT_VERSION_H264 else 0)
        if flags & ~known:
            raise FormatError(f"unknown frame flags 0x{flags:02x}")
        camera_id = r.camera_id()
        seq = _u63(r.u64("seq"), "frame seq")
        capture_time_us = _u63(r.u64("capture_time_us"), "frame capture time")
        epoch_id = r.take(EPOCH_ID_LEN, "epoch_id")
        prev_digest = r.take(DIGEST_LEN, "prev_digest")
        codec = _enum(ImageCodec, r.u8("image_codec"), "image codec")
        width, height, image_len = r.u16("width"), r.u16("height"), r.u32("image_len")
        if not (0 < width and 0 < height):
            raise FormatError(f"frame size {width}x{height} is empty")
        if image_len > MAX_IMAGE_BYTES:
            raise FormatError(f"public image of {image_len} bytes exceeds {MAX_IMAGE_BYTES}")
        image_sha256 = r.take(DIGEST_LEN, "image_sha256")
        common: dict[str, Any] = dict(
            camera_id=camera_id,
            seq=seq,
            capture_time_us=capture_time_us,
            epoch_id=epoch_id,
            prev_digest=prev_digest,
            image_codec=codec,
            width=width,
            height=height,
            image_len=image_len,
            image_sha256=image_sha256,
            flags=flags,
        )
        if version == FORMAT_VERSION_H264:
            if codec != ImageCodec.H264:  # checked again in check_v2; said first here
                raise FormatError(
                    f"a version 2 frame's public image must be an H.264 access unit "
                    f"(codec {ImageCodec.H264.value}), not {codec.name}"
                )
            header = cls._v2_rest(r, common)
        else:
            if codec == ImageCodec.H264:
                raise FormatError("an H.264 public image needs a version 2 frame")
            header = cls._v1_rest(r, common)
        if (flags & FLAG_CHAIN_START) != (prev_digest == ZERO_DIGEST) * FLAG_CHAIN_START:
            raise FormatError("chain-start flag and zero prev digest disagree")
        return header

    @classmethod
    def _v1_rest(cls, r: _Reader, common: dict[str, Any]) -> FrameHeader:
        width, height = common["width"], common["height"]
        n_zones = r.u16("zone_count")
        if n_zones > MAX_ZONES:
            raise FormatError(f"{n_zones} zones in one frame; at most {MAX_ZONES}")
        zones = []
        for i in range(n_zones):
            zf = ZONE_RECORD.unpack(r.take(ZONE_RECORD.size, f"zone[{i}]"))
            zclass = _enum(ZoneClass, zf[0], f"zone[{i}] class")
            zcodec = _enum(ImageCodec, zf[1], f"zone[{i}] codec")
            if zcodec == ImageCodec.H264:
                raise FormatError(f"zone[{i}] codec H.264 is not a version 1 zone codec")
            x, y, w, h, ct_len = zf[2:7]
            _check_rect(i, x, y, w, h, width, height)
            if ct_len > MAX_ZONE_BYTES:
                raise FormatError(
                    f"zone[{i}] ciphertext of {ct_len} bytes exceeds {MAX_ZONE_BYTES}"
                )
            zones.append(ZoneRecord(zclass, zcodec, x, y, w, h, ct_len, zf[7]))
        r.end()
        return cls(**common, zones=tuple(zones))

    @classmethod
    def _v2_rest(cls, r: _Reader, common: dict[str, Any]) -> FrameHeader:
        gop_seq = _u63(r.u64("gop_seq"), "gop seq")
        gop_index = r.u32("gop_index")
        n_zones = r.u16("zone_count")
        if n_zones > MAX_ZONES:
            raise FormatError(f"{n_zones} zones in one frame; at most {MAX_ZONES}")
        rects = []
        for i in range(n_zones):
            zf = ZONE_RECT_RECORD.unpack(r.take(ZONE_RECT_RECORD.size, f"zone[{i}]"))
            zclass = _enum(ZoneClass, zf[0], f"zone[{i}] class")
            rects.append(ZoneRect(zclass, *zf[1:]))
        n_streams = r.u8("stream_count")
        if n_streams > MAX_STREAMS:
            raise FormatError(f"{n_streams} zone streams; at most {MAX_STREAMS}")
        streams = []
        for i in range(n_streams):
            sf = STREAM_RECORD.unpack(r.take(STREAM_RECORD.size, f"stream[{i}]"))
            zclass = _enum(ZoneClass, sf[0], f"stream[{i}] class")
            streams.append(StreamRecord(zclass, *sf[1:]))
        r.end()
        header = cls(
            **common,
            version=FORMAT_VERSION_H264,
            gop_seq=gop_seq,
            gop_index=gop_index,
            zone_rects=tuple(rects),
            streams=tuple(streams),
        )
        header.check_v2()
        return header


def frame_digest(header_bytes: bytes) -> bytes:
    """The frame's link in its camera's hash chain: SHA-256 of the raw header bytes."""
    return sha256(header_bytes)


@dataclass(frozen=True)
class FrameMessage:
    """A signed frame: header, Ed25519 signature, public image, then (version 1) one
    ciphertext per zone or (version 2) one encrypted access unit per stream record.

    ``header_bytes`` are kept exactly as received: the signature and the hash chain are over
    them, never over a re-encoding.
    """

    kind: ClassVar[bytes] = KIND_FRAME
    label: ClassVar[str] = "frame"

    header: FrameHeader
    header_bytes: bytes
    signature: bytes
    public_image: bytes
    zone_ciphertexts: tuple[bytes, ...] = field(default=())
    stream_ciphertexts: tuple[bytes, ...] = field(default=())

    @property
    def camera_id(self) -> str:
        return self.header.camera_id

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def digest(self) -> bytes:
        return frame_digest(self.header_bytes)

    @property
    def ack_key(self) -> AckKey:
        """What an acknowledgement names this frame by: its kind and sequence number."""
        return (KIND_FRAME, self.header.seq)

    @property
    def is_keyframe(self) -> bool:
        """Whether decoding can start at this frame: version 2, the public AU is an IDR (the
        KEYFRAME flag); every version-1 frame is a still image."""
        return self.header.is_keyframe

    @property
    def gop_seq(self) -> int:
        """The sequence number of the keyframe this frame's group of pictures starts at
        (version 1: the frame's own)."""
        return (
            self.header.gop_seq if self.header.version == FORMAT_VERSION_H264 else self.header.seq
        )

    @property
    def streams(self) -> tuple[StreamRecord, ...]:
        """Version 2: the zone-class stream records, in the order of ``stream_ciphertexts``."""
        return self.header.streams

    def body_parts(self) -> list[bytes]:
        """The parts that are archived verbatim (everything but the topic)."""
        return [
            self.header_bytes,
            self.signature,
            self.public_image,
            *self.zone_ciphertexts,
            *self.stream_ciphertexts,
        ]

    def to_parts(self) -> list[bytes]:
        return [topic_for(self.camera_id, KIND_FRAME), *self.body_parts()]

    @classmethod
    def from_parts(cls, parts: list[bytes]) -> FrameMessage:
        if len(parts) < 4:
            raise FormatError(
                f"frame message has {len(parts)} parts; needs at least 4 "
                "(topic, header, signature, public image)"
            )
        msg = cls.from_body_parts([bytes(p) for p in parts[1:]])
        if bytes(parts[0]) != topic_for(msg.camera_id, KIND_FRAME):
            raise FormatError("frame topic does not match the camera id in its header")
        return msg

    @classmethod
    def from_body_parts(cls, parts: list[bytes]) -> FrameMessage:
        if len(parts) < 3:
            raise FormatError(f"frame body has {len(parts)} parts; needs at least 3")
        header_bytes, signature, image = (bytes(p) for p in parts[:3])
        header = FrameHeader.from_bytes(header_bytes)
        if len(signature) != SIGNATURE_LEN:
            raise FormatError(
                f"frame signature is {len(signature)} bytes; expected {SIGNATURE_LEN}"
            )
        extra = tuple(bytes(p) for p in parts[3:])
        if header.version == FORMAT_VERSION_H264:
            if len(extra) != len(header.streams):
                raise FormatError(
                    f"frame header lists {len(header.streams)} zone streams but the message "
                    f"carries {len(extra)} stream access units"
                )
            if len(image) != header.image_len:
                raise FormatError(
                    f"public access unit is {len(image)} bytes; header says {header.image_len}"
                )
            for i, (stream, au) in enumerate(zip(header.streams, extra, strict=True)):
                if len(au) != stream.au_len:
                    raise FormatError(
                        f"stream[{i}] access unit is {len(au)} bytes; header says {stream.au_len}"
                    )
            return cls(header, header_bytes, signature, image, (), extra)
        if len(extra) != len(header.zones):
            raise FormatError(
                f"frame header lists {len(header.zones)} zones but the message "
                f"carries {len(extra)} zone ciphertexts"
            )
        if len(image) != header.image_len:
            raise FormatError(f"public image is {len(image)} bytes; header says {header.image_len}")
        for i, (zone, ct) in enumerate(zip(header.zones, extra, strict=True)):
            if len(ct) != zone.ciphertext_len:
                raise FormatError(
                    f"zone[{i}] ciphertext is {len(ct)} bytes; header says {zone.ciphertext_len}"
                )
        return cls(header, header_bytes, signature, image, extra)


# --------------------------------------------------------------------------- key envelopes


@dataclass(frozen=True)
class SealedKey:
    """One epoch content key of one zone class, sealed (HPKE) to one recipient."""

    recipient_key_id: bytes
    zone_class: ZoneClass
    sealed: bytes


@dataclass(frozen=True)
class EnvelopeBody:
    camera_id: str
    epoch_id: bytes
    created_us: int
    first_seq: int
    suite: KemSuite
    entries: tuple[SealedKey, ...]

    def to_bytes(self) -> bytes:
        if len(self.entries) > MAX_RECIPIENT_ENTRIES:
            raise FormatError(f"{len(self.entries)} sealed keys; at most {MAX_RECIPIENT_ENTRIES}")
        out = [
            ENVELOPE_MAGIC,
            bytes([FORMAT_VERSION, self.suite]),
            _camera_id_bytes(self.camera_id),
            self.epoch_id,
            struct.pack(">QQH", self.created_us, self.first_seq, len(self.entries)),
        ]
        for e in self.entries:
            if len(e.recipient_key_id) != KEY_ID_LEN:
                raise FormatError("recipient key id must be 16 bytes")
            out.append(e.recipient_key_id + struct.pack(">BH", e.zone_class, len(e.sealed)))
            out.append(e.sealed)
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> EnvelopeBody:
        r = _Reader(bytes(data), "key envelope")
        if r.take(4, "magic") != ENVELOPE_MAGIC:
            raise FormatError("not a veilcam key envelope (bad magic)")
        version = r.u8("version")
        if version != FORMAT_VERSION:
            raise FormatError(f"key envelope version {version} is not supported")
        suite = _enum(KemSuite, r.u8("suite"), "key-wrapping suite")
        camera_id = r.camera_id()
        epoch_id = r.take(EPOCH_ID_LEN, "epoch_id")
        created_us = _u63(r.u64("created_us"), "envelope creation time")
        first_seq = _u63(r.u64("first_seq"), "envelope first seq")
        count = r.u16("entry_count")
        if count > MAX_RECIPIENT_ENTRIES:
            raise FormatError(f"{count} sealed keys; at most {MAX_RECIPIENT_ENTRIES}")
        entries = []
        for i in range(count):
            key_id = r.take(KEY_ID_LEN, f"entry[{i}].key_id")
            zclass = _enum(ZoneClass, r.u8(f"entry[{i}].class"), f"entry[{i}] zone class")
            n = r.u16(f"entry[{i}].sealed_len")
            if n > MAX_SEALED_KEY_LEN:
                raise FormatError(f"entry[{i}] sealed key of {n} bytes is too long")
            entries.append(SealedKey(key_id, zclass, r.take(n, f"entry[{i}].sealed")))
        r.end()
        return cls(camera_id, epoch_id, created_us, first_seq, suite, tuple(entries))


@dataclass(frozen=True)
class KeyEnvelope:
    """A signed key envelope: one epoch's content keys, sealed once per recipient and class."""

    kind: ClassVar[bytes] = KIND_ENVELOPE
    label: ClassVar[str] = "key envelope"

    body: EnvelopeBody
    body_bytes: bytes
    signature: bytes

    @property
    def camera_id(self) -> str:
        return self.body.camera_id

    @property
    def ack_key(self) -> AckKey:
        """What an acknowledgement names this envelope by: its kind and epoch id."""
        return (KIND_ENVELOPE, self.body.epoch_id)

    def body_parts(self) -> list[bytes]:
        return [self.body_bytes, self.signature]

    def to_parts(self) -> list[bytes]:
        return [topic_for(self.camera_id, KIND_ENVELOPE), *self.body_parts()]

    @classmethod
    def from_parts(cls, parts: list[bytes]) -> KeyEnvelope:
        if len(parts) != 3:
            raise FormatError(
                f"key envelope has {len(parts)} parts; expected 3 (topic, body, signature)"
            )
        env = cls.from_body_parts([bytes(p) for p in parts[1:]])
        if bytes(parts[0]) != topic_for(env.camera_id, KIND_ENVELOPE):
            raise FormatError("key envelope topic does not match its camera id")
        return env

    @classmethod
    def from_body_parts(cls, parts: list[bytes]) -> KeyEnvelope:
        if len(parts) != 2:
            raise FormatError(f"key envelope body has {len(parts)} parts; expected 2")
        body_bytes, signature = bytes(parts[0]), bytes(parts[1])
        if len(signature) != SIGNATURE_LEN:
            raise FormatError(
                f"envelope signature is {len(signature)} bytes; expected {SIGNATURE_LEN}"
            )
        return cls(EnvelopeBody.from_bytes(body_bytes), body_bytes, signature)


# --------------------------------------------------------------------------- gap notices


class GapReason(IntEnum):
    SPOOL_FULL = 1  # the camera's spool overflowed and it dropped its oldest frames
    SOURCE_OFFLINE = 2  # version 2: the camera's source (an IP camera) delivered nothing


GAP_VERSION_OFFLINE = 2  # a notice with a time range (reason SOURCE_OFFLINE)
GAP_V1 = struct.Struct(">QQBQ")  # first_seq, last_seq, reason, created_us
GAP_V2_SPAN = struct.Struct(">QQ")  # version 2: from_us, to_us
# An offline notice names the frame before the outage by its seq, as a spool-full notice may
# name a dropped frame; both can be pending at once, so an offline notice is acknowledged as
# 2^63 + seq (seqs stay below 2^63: the two never meet).
OFFLINE_ACK_BIT = 2**63


@dataclass(frozen=True)
class GapNotice:
    """A camera's signed statement about a hole in its recording, so ``veilcam verify``
    reports it as declared, not as tampering.

    Version 1, reason SPOOL_FULL: the camera dropped frames ``first_seq..last_seq`` itself.
    Version 2, reason SOURCE_OFFLINE: no frames are missing; the source delivered nothing from
    ``from_us`` (capture time of frame ``first_seq``, the last before the loss) to ``to_us``
    (capture time of frame ``last_seq`` = ``first_seq + 1``, the first after it; or, with
    ``last_seq == first_seq``, the time the camera stopped while the source was still down)."""

    kind: ClassVar[bytes] = KIND_GAP
    label: ClassVar[str] = "gap notice"

    camera_id: str
    first_seq: int
    last_seq: int
    reason: GapReason
    created_us: int
    body_bytes: bytes = b""
    signature: bytes = b""
    from_us: int = 0  # version 2 (SOURCE_OFFLINE) only
    to_us: int = 0

    @property
    def version(self) -> int:
        return GAP_VERSION_OFFLINE if self.reason == GapReason.SOURCE_OFFLINE else FORMAT_VERSION

    @property
    def offline(self) -> bool:
        return self.reason == GapReason.SOURCE_OFFLINE

    def encode_body(self) -> bytes:
        self._check()
        body = (
            GAP_MAGIC
            + bytes([self.version])
            + _camera_id_bytes(self.camera_id)
            + GAP_V1.pack(self.first_seq, self.last_seq, self.reason, self.created_us)
        )
        if self.offline:
            body += GAP_V2_SPAN.pack(self.from_us, self.to_us)
        return body

    def _check(self) -> None:
        """The rules between fields, on parse and before signing (docs/FORMAT.md)."""
        for name, value in (
            ("first seq", self.first_seq),
            ("last seq", self.last_seq),
            ("creation time", self.created_us),
            ("from time", self.from_us),
            ("to time", self.to_us),
        ):
            _u63(value, f"gap notice {name}")
        if not self.offline:
            if self.last_seq < self.first_seq:
                raise FormatError(f"gap notice range #{self.first_seq}..#{self.last_seq} is empty")
            return
        if self.last_seq not in (self.first_seq, self.first_seq + 1):
            raise FormatError(
                f"offline notice names frames #{self.first_seq} and #{self.last_seq}: the "
                "frame after the outage must be the next one (or the same, at a stop)"
            )
        if self.to_us < self.from_us:
            raise FormatError(
                f"offline notice ends ({self.to_us} us) before it starts ({self.from_us} us)"
            )

    @property
    def ack_key(self) -> AckKey:
        """What an acknowledgement names this notice by: its kind and first seq (plus 2^63 for
        an offline notice, which may name the same frame as a spool-full one)."""
        return (KIND_GAP, self.first_seq | (OFFLINE_ACK_BIT if self.offline else 0))

    def describe(self) -> str:
        """One line for logs and ``veilcam verify``."""
        if self.offline:
            after = (
                f"between frames #{self.first_seq} and #{self.last_seq}"
                if self.last_seq != self.first_seq
                else f"after frame #{self.first_seq}, until the camera stopped"
            )
            return (
                f"camera offline {_clock(self.from_us)}-{_clock(self.to_us)} UTC "
                f"({(self.to_us - self.from_us) / 1e6:.1f} s {after}; source lost, declared "
                "by the camera)"
            )
        return f"frames #{self.first_seq}..#{self.last_seq} dropped ({self.reason.name.lower()})"

    def body_parts(self) -> list[bytes]:
        return [self.body_bytes, self.signature]

    def to_parts(self) -> list[bytes]:
        return [topic_for(self.camera_id, KIND_GAP), *self.body_parts()]

    @classmethod
    def from_body_parts(cls, parts: list[bytes]) -> GapNotice:
        if len(parts) != 2 or len(parts[1]) != SIGNATURE_LEN:
            raise FormatError("gap notice needs a body and a 64-byte signature")
        body = bytes(parts[0])
        r = _Reader(body, "gap notice")
        if r.take(4, "magic") != GAP_MAGIC:
            raise FormatError("not a veilcam gap notice (bad magic)")
        version = r.u8("version")
        if version not in (FORMAT_VERSION, GAP_VERSION_OFFLINE):
            raise FormatError(f"gap notice version {version} is not supported")
        camera_id = r.camera_id()
        first, last = r.u64("first_seq"), r.u64("last_seq")
        reason = _enum(GapReason, r.u8("reason"), "gap reason")
        created = r.u64("created_us")
        from_us, to_us = (r.u64("from_us"), r.u64("to_us")) if version > 1 else (0, 0)
        r.end()
        notice = cls(camera_id, first, last, reason, created, body, bytes(parts[1]), from_us, to_us)
        if notice.version != version:
            raise FormatError(
                f"gap notice version {version} cannot carry reason {reason.name.lower()}"
            )
        notice._check()
        return notice

    @classmethod
    def from_parts(cls, parts: list[bytes]) -> GapNotice:
        if len(parts) != 3:
            raise FormatError(f"gap notice has {len(parts)} parts; expected 3")
        notice = cls.from_body_parts([bytes(p) for p in parts[1:]])
        if bytes(parts[0]) != topic_for(notice.camera_id, KIND_GAP):
            raise FormatError("gap notice topic does not match its camera id")
        return notice


def _clock(time_us: int) -> str:
    """HH:MM:SS (UTC) of a capture time, for a gap's span."""
    seconds = time_us // 1_000_000
    return f"{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# --------------------------------------------------------------------------- message kinds

Message: TypeAlias = FrameMessage | KeyEnvelope | GapNotice

# The message class of each kind letter (topic suffix, archive and spool record kind).
MESSAGE_CLASSES: dict[bytes, type[FrameMessage] | type[KeyEnvelope] | type[GapNotice]] = {
    cls.kind: cls for cls in (FrameMessage, KeyEnvelope, GapNotice)
}


def decode_message(parts: list[bytes]) -> Message:
    """Parse a topic-led multipart message into a frame, a key envelope or a gap notice, by
    the kind letter that ends its topic (``camera_id NUL kind``)."""
    if not parts:
        raise FormatError("empty message")
    topic = bytes(parts[0])
    cls = MESSAGE_CLASSES.get(topic[-1:]) if topic[-2:-1] == b"\x00" else None
    if cls is None:
        raise FormatError(f"unknown message topic {topic[:80]!r}")
    return cls.from_parts(parts)


message_from_parts = decode_message  # the older name, still used by some callers


def decode_message_body(kind: bytes, parts: list[bytes]) -> Message:
    """Parse a message's body parts (no topic), as an archive record or a spool file holds
    them with their kind letter."""
    cls = MESSAGE_CLASSES.get(bytes(kind))
    if cls is None:
        raise FormatError(f"unknown message kind {bytes(kind)[:8]!r}")
    return cls.from_body_parts(parts)


# --------------------------------------------------------------------------- acknowledgements


class AckStatus(IntEnum):
    STORED = 0  # durably written (fsynced) in the archive
    DUPLICATE = 1  # already in the archive; nothing written
    REJECTED = 2  # not authentic or not acceptable; reason says why


ACK_STRUCT = struct.Struct(">4sBcQ")  # magic, status, kind, seq (frames) or 0 (envelopes)


@dataclass(frozen=True)
class Ack:
    """The store's answer to one camera message, sent after the write is durable."""

    status: AckStatus
    kind: bytes
    seq: int
    camera_id: str
    reason: str = ""
    epoch_id: bytes = b""

    @classmethod
    def for_message(cls, msg: Message, status: AckStatus, reason: str = "") -> Ack:
        """The acknowledgement of ``msg``, naming it by its ``ack_key``."""
        kind, name = msg.ack_key
        if isinstance(name, bytes):  # a key envelope: named by epoch id, seq field 0
            return cls(status, kind, 0, msg.camera_id, reason, name)
        return cls(status, kind, name, msg.camera_id, reason)

    @property
    def key(self) -> AckKey:
        """The ``ack_key`` of the message this acknowledges."""
        return (self.kind, self.epoch_id if self.kind == KIND_ENVELOPE else self.seq)

    def describe(self) -> str:
        """The acknowledged message for a log line: "frame cam1#12", "key envelope cam1/ab12cd34"."""
        label = MESSAGE_CLASSES[self.kind].label
        if self.kind == KIND_ENVELOPE:
            return f"{label} {self.camera_id}/{self.epoch_id.hex()[:8]}"
        if self.kind == KIND_GAP and self.seq >= OFFLINE_ACK_BIT:
            return f"offline notice {self.camera_id}#{self.seq - OFFLINE_ACK_BIT}"
        return f"{label} {self.camera_id}#{self.seq}"

    def to_parts(self) -> list[bytes]:
        return [
            ACK_STRUCT.pack(ACK_MAGIC, self.status, self.kind, self.seq),
            self.camera_id.encode("ascii"),
            self.epoch_id,
            self.reason.encode("utf-8"),
        ]

    @classmethod
    def from_parts(cls, parts: list[bytes]) -> Ack:
        if len(parts) != 4 or len(parts[0]) != ACK_STRUCT.size:
            raise FormatError("malformed acknowledgement")
        magic, status, kind, seq = ACK_STRUCT.unpack(bytes(parts[0]))
        if magic != ACK_MAGIC or kind not in MESSAGE_CLASSES:
            raise FormatError("malformed acknowledgement (bad magic or kind)")
        return cls(
            _enum(AckStatus, status, "ack status"),
            kind,
            seq,
            bytes(parts[1]).decode("ascii", "replace"),
            bytes(parts[3]).decode("utf-8", "replace"),
            bytes(parts[2]),
        )


# --------------------------------------------------------------------------- part lists

MAX_PARTS = 1024


def pack_parts(kind: bytes, parts: list[bytes]) -> bytes:
    """``kind (1) | part_count u16 | (part_len u32 | part)*``: message parts in one blob
    (archive records, the camera's spool)."""
    if len(parts) > MAX_PARTS:
        raise ValueError(f"{len(parts)} parts in one record; at most {MAX_PARTS}")
    out = [kind, struct.pack(">H", len(parts))]
    for part in parts:
        out.append(struct.pack(">I", len(part)))
        out.append(bytes(part))
    return b"".join(out)


def unpack_parts(body: bytes) -> tuple[bytes, list[bytes]]:
    if len(body) < 3:
        raise FormatError("record body shorter than its kind and part count")
    kind = body[:1]
    if kind not in MESSAGE_CLASSES:
        raise FormatError(f"unknown record kind {kind!r}")
    (count,) = struct.unpack(">H", body[1:3])
    if count > MAX_PARTS:
        raise FormatError(f"record claims {count} parts")
    pos, parts = 3, []
    for i in range(count):
        if pos + 4 > len(body):
            raise FormatError(f"record truncated at part {i} length")
        (n,) = struct.unpack(">I", body[pos : pos + 4])
        pos += 4
        if pos + n > len(body):
            raise FormatError(f"record part {i} claims {n} bytes; only {len(body) - pos} left")
        parts.append(body[pos : pos + n])
        pos += n
    if pos != len(body):
        raise FormatError(f"record has {len(body) - pos} trailing bytes")
    return kind, parts
