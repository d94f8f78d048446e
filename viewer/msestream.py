"""The public H.264 stream of a camera to the browser, without re-encoding: fragmented MP4 over
a WebSocket, played by the page through Media Source Extensions (MSE).

What goes out is built from the verified public access units (AUs) of version-2 frames and
nothing else: an *init segment* (``ftyp`` + ``moov`` whose ``avcC`` holds the stream's SPS and
PPS) and then one *media fragment* per frame (``moof`` + ``mdat``), sent as soon as the frame
arrives. The ``mdat`` of a frame is its AU's NAL units, each prefixed with its 4-byte length
instead of the Annex-B start code (the MP4 form of the same bytes): no picture is decoded or
encoded here, so what the browser shows is what the camera signed.

Why a box writer of its own rather than PyAV's MP4 muxer: FFmpeg's ``mov`` muxer writes a
fragment only when the *next* packet arrives (it needs the sample's duration), and PyAV offers
no way to flush it (``av_write_frame(NULL)``), so every picture would reach the page one frame
late. The boxes needed for one H.264 track are few and fixed (ISO/IEC 14496-12 and -15);
tests/test_mse.py decodes the output back with PyAV.

Order and holes: an AU decodes only after every AU of its group of pictures (GOP) before it.
Each connection starts at a keyframe, and a new page gets the camera's current GOP from memory
(``LiveFeeds`` keeps the verified frames since the last keyframe) so its picture appears at
once. A frame that is missing (sequence jump), failed verification, or that this connection
could not keep up with is a *gap*: the page is told (``{"gap": ...}``) and nothing more is sent
until the next keyframe, which starts again with an init segment. Never an AU after a hole.

Messages on the socket (text ones are JSON objects):

* ``{"init": {"codec", "mime", "width", "height", "seq"}}``, then one binary message: the init
  segment. Sent at the start and again at every restart after a gap;
* binary: one media fragment per verified frame;
* ``{"waiting": reason}``: connected, no keyframe yet; ``{"gap": reason}``: a hole, see above;
* ``{"mjpeg": reason}``: this view is not for MSE (a JPEG camera, or an unlocked session whose
  zones are composed in the viewer process): the page uses the MJPEG stream; the socket closes;
* ``{"error": reason}``: e.g. an unknown camera; the socket closes.

Only verified frames go out; the signature badge stays the page's ``/api/status`` poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect
from veilcam.common.format import FORMAT_VERSION_H264, FrameMessage

if TYPE_CHECKING:
    from veilcam.viewer.client import ReceivedFrame
    from veilcam.viewer.framehub import FrameHub
    from veilcam.viewer.sessions import Sessions

log = logging.getLogger("veilcam.web")

TIMESCALE = 90_000  # ticks per second of the track (the usual one for video)
DEFAULT_INTERVAL_US = 33_333  # a frame's duration until two frames have been seen
MAX_INTERVAL_US = 2_000_000  # a longer pause between frames still counts as this much
TRACK_ID = 1
MAX_GOP_FRAMES = 300  # frames kept per camera for new pages (as the store's LIVE answer)
BACKLOG = 2 * MAX_GOP_FRAMES  # frames a connection may fall behind before it gets a gap
NAL_SPS, NAL_PPS = 7, 8
# profiles whose SPS (and avcC) carry chroma format and bit depths (ISO/IEC 14496-10 7.3.2.1.1)
HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
SAMPLE_SYNC = 0x02000000  # sample_depends_on = 2: an IDR, decodable on its own
SAMPLE_NON_SYNC = 0x01010000  # depends on others, sample_is_non_sync_sample


# ---------------------------------------------------------------------------- H.264 bitstream
def nal_units(au: bytes) -> list[bytes]:
    """The NAL units of an Annex-B access unit, without start codes (3 or 4 bytes) or the
    zero bytes that pad before one."""
    units: list[bytes] = []
    start = au.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        start = au.find(b"\x00\x00\x01", begin)
        unit = au[begin : start if start >= 0 else len(au)].rstrip(b"\x00")
        if unit:
            units.append(unit)
    return units


def nal_type(unit: bytes) -> int:
    return unit[0] & 0x1F


class _Bits:
    """Reads an RBSP (emulation prevention bytes removed) bit by bit, Exp-Golomb included."""

    def __init__(self, nal: bytes) -> None:
        self.data = nal.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def bit(self) -> int:
        if self.pos >= 8 * len(self.data):
            raise ValueError("the SPS ends too early")
        value = (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code in the SPS")
        value = 1
        for _ in range(zeros):
            value = (value << 1) | self.bit()
        return value - 1


@dataclass(frozen=True)
class SpsInfo:
    """What the MP4 sample entry and the MSE codec string need from an SPS."""

    profile: int
    constraints: int
    level: int
    chroma_format: int = 1
    bit_depth_luma: int = 8
    bit_depth_chroma: int = 8

    @property
    def codec(self) -> str:
        """The RFC 6381 codec string, e.g. ``avc1.64001f`` (High, level 3.1)."""
        return f"avc1.{self.profile:02x}{self.constraints:02x}{self.level:02x}"


def parse_sps(sps: bytes) -> SpsInfo:
    """Profile, constraint flags and level, and for the high profiles chroma format and bit
    depths. ValueError if it is not an SPS or ends too early."""
    if len(sps) < 4 or nal_type(sps) != NAL_SPS:
        raise ValueError("not a sequence parameter set")
    info = SpsInfo(sps[1], sps[2], sps[3])
    if info.profile not in HIGH_PROFILES:
        return info
    bits = _Bits(sps)
    bits.pos = 32  # NAL header, profile, constraints, level
    bits.ue()  # seq_parameter_set_id
    chroma = bits.ue()
    if chroma == 3:
        bits.bit()  # separate_colour_plane_flag
    luma, chroma_depth = bits.ue() + 8, bits.ue() + 8
    return SpsInfo(info.profile, info.constraints, info.level, chroma, luma, chroma_depth)


def avc_config(sps: bytes, pps: bytes) -> bytes:
    """The ``AVCDecoderConfigurationRecord`` (ISO/IEC 14496-15 5.3.3.1), 4-byte NAL lengths."""
    info = parse_sps(sps)
    out = bytes([1, info.profile, info.constraints, info.level, 0xFC | 3, 0xE0 | 1])
    out += struct.pack(">H", len(sps)) + sps + b"\x01" + struct.pack(">H", len(pps)) + pps
    if info.profile in HIGH_PROFILES:
        out += bytes(
            [
                0xFC | info.chroma_format,
                0xF8 | (info.bit_depth_luma - 8),
                0xF8 | (info.bit_depth_chroma - 8),
                0,  # numOfSequenceParameterSetExt
            ]
        )
    return out


def length_prefixed(units: list[bytes]) -> bytes:
    """NAL units as an MP4 sample: each one after its length (4 bytes, big-endian)."""
    return b"".join(struct.pack(">I", len(u)) + u for u in units)


# ---------------------------------------------------------------------------- ISO-BMFF boxes
def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


UNITY_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def init_segment(sps: bytes, pps: bytes, width: int, height: int) -> bytes:
    """``ftyp`` + ``moov`` of a fragmented MP4 with one H.264 video track and no samples."""
    ftyp = box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso5iso6avc1mp41")
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, 0),  # times, timescale, duration (unknown: live)
        struct.pack(">IH", 0x10000, 0x100), bytes(10), UNITY_MATRIX, bytes(24),
        struct.pack(">I", TRACK_ID + 1),
    )  # fmt: skip
    tkhd = full_box(
        b"tkhd", 0, 3,  # enabled, in the movie
        struct.pack(">IIIII", 0, 0, TRACK_ID, 0, 0), bytes(8),
        struct.pack(">HHHH", 0, 0, 0, 0), UNITY_MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )  # fmt: skip
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, TIMESCALE, 0, 0x55C4, 0))
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"veilcam public\x00")
    avc1 = box(
        b"avc1",
        bytes(6), struct.pack(">H", 1),  # data_reference_index
        bytes(16), struct.pack(">HH", width, height),
        struct.pack(">II", 0x480000, 0x480000), bytes(4), struct.pack(">H", 1),
        bytes(32), struct.pack(">Hh", 0x18, -1),
        box(b"avcC", avc_config(sps, pps)),
    )  # fmt: skip
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    minf = box(b"minf", full_box(b"vmhd", 0, 1, bytes(8)), dinf, stbl)
    trak = box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))
    trex = full_box(b"trex", 0, 0, struct.pack(">IIIII", TRACK_ID, 1, 0, 0, 0))
    return ftyp + box(b"moov", mvhd, trak, box(b"mvex", trex))


def media_fragment(
    sequence_number: int, decode_time: int, duration: int, sample: bytes, keyframe: bool
) -> bytes:
    """``moof`` + ``mdat`` holding one sample (one frame) that starts at ``decode_time``."""

    def moof(data_offset: int) -> bytes:
        trun = full_box(
            b"trun", 0, 0x000701,  # data offset, sample duration, size and flags present
            struct.pack(">Ii", 1, data_offset),
            struct.pack(">III", duration, len(sample), SAMPLE_SYNC if keyframe else SAMPLE_NON_SYNC),
        )  # fmt: skip
        traf = box(
            b"traf",
            full_box(b"tfhd", 0, 0x020000, struct.pack(">I", TRACK_ID)),  # default-base-is-moof
            full_box(b"tfdt", 1, 0, struct.pack(">Q", decode_time)),
            trun,
        )
        return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number)), traf)

    size = len(moof(0))
    return moof(size + 8) + box(b"mdat", sample)


# ---------------------------------------------------------------------------- one connection
Message = str | bytes


class LiveMuxer:
    """Turns one camera's frames, in the order received, into the socket's messages.

    Pure (no I/O): ``push`` returns the messages for one frame, ``hole`` those for a frame
    this connection did not get. Decode times run on without gaps from 0: each frame lasts
    the interval between the last two capture times, so a hole or a camera restart never
    leaves a gap in the page's buffered range."""

    def __init__(self) -> None:
        self.last_seq: int | None = None  # last frame sent; None: waiting for a keyframe
        self.params: tuple[bytes, bytes] | None = None  # SPS and PPS of the stream
        self.size: tuple[int, int] | None = None  # of the last init segment
        self.fragments = 0
        self.decode_time = 0
        self.interval_us = DEFAULT_INTERVAL_US
        self.last_capture_us: int | None = None
        self.started = False
        self.gaps = 0

    @property
    def streaming(self) -> bool:
        return self.last_seq is not None

    def hole(self, reason: str) -> list[Message]:
        """The stream cannot go on: tell the page once, then wait for a keyframe."""
        if not self.streaming:
            return []
        self.last_seq = None
        self.gaps += 1
        return [json.dumps({"gap": f"{reason}: waiting for a keyframe"})]

    def push(self, got: ReceivedFrame) -> list[Message]:
        msg = got.msg
        seq = msg.header.seq
        if not got.verified:
            return self.hole(f"frame #{seq} failed verification ({got.problem})")
        if msg.version != FORMAT_VERSION_H264:
            return self.hole(f"frame #{seq} is not H.264")
        out: list[Message] = []
        if self.last_seq is not None and seq != self.last_seq + 1:
            out += self.hole(f"frame #{self.last_seq + 1} is missing (next came #{seq})")
        size = (msg.header.width, msg.header.height)
        if self.streaming and msg.is_keyframe and size != self.size:
            self.last_seq = None  # the camera changed resolution: a new init segment
        if not self.streaming:
            if not msg.is_keyframe:
                if not self.started:
                    self.started = True
                    out.append(json.dumps({"waiting": "waiting for a keyframe"}))
                return out
            restart = self._restart(msg)
            if restart is None:
                return out + [json.dumps({"gap": f"keyframe #{seq} has no SPS/PPS"})]
            out += restart
        self._pace(msg.header.capture_time_us)
        units = nal_units(msg.public_image)
        duration = round(self.interval_us * TIMESCALE / 1_000_000)
        self.fragments += 1
        out.append(
            media_fragment(
                self.fragments, self.decode_time, duration, length_prefixed(units), msg.is_keyframe
            )
        )
        self.decode_time += duration
        self.last_seq = seq
        return out

    def _restart(self, msg: FrameMessage) -> list[Message] | None:
        """The init segment for a keyframe (its in-band SPS/PPS, else the last ones seen)."""
        units = nal_units(msg.public_image)
        sps = next((u for u in units if nal_type(u) == NAL_SPS), None)
        pps = next((u for u in units if nal_type(u) == NAL_PPS), None)
        if sps is not None and pps is not None:
            self.params = (sps, pps)
        if self.params is None:
            return None
        sps, pps = self.params
        try:
            codec = parse_sps(sps).codec
            init = init_segment(sps, pps, msg.header.width, msg.header.height)
        except ValueError:
            return None
        self.started = True
        self.size = (msg.header.width, msg.header.height)
        self.last_capture_us = None  # the pause before a restart is not a frame's duration
        doc = {
            "codec": codec,
            "mime": f'video/mp4; codecs="{codec}"',
            "width": msg.header.width,
            "height": msg.header.height,
            "seq": msg.header.seq,
        }
        return [json.dumps({"init": doc}), init]

    def _pace(self, capture_us: int) -> None:
        if self.last_capture_us is not None and capture_us > self.last_capture_us:
            self.interval_us = min(capture_us - self.last_capture_us, MAX_INTERVAL_US)
        self.last_capture_us = capture_us


# ---------------------------------------------------------------------------- frames to sockets
class Dropped:
    """In a subscription's queue: the connection fell behind and frames were dropped here."""


DROPPED = Dropped()


class Subscription:
    """The frames of one camera for one connection, in order; filled from the relay thread,
    read in the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, frames: list[ReceivedFrame]) -> None:
        self._loop = loop
        self._items: deque[ReceivedFrame | Dropped] = deque(frames)
        self._event = asyncio.Event()
        if frames:
            self._event.set()

    def deliver_threadsafe(self, got: ReceivedFrame) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self._loop.call_soon_threadsafe(self._put, got)

    def _put(self, got: ReceivedFrame) -> None:
        if len(self._items) >= BACKLOG:
            self._items.clear()
            self._items.append(DROPPED)
        self._items.append(got)
        self._event.set()

    async def get(self, timeout: float) -> ReceivedFrame | Dropped | None:
        """The next frame (or DROPPED), None after ``timeout`` seconds without one."""
        if not self._items:
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        return self._items.popleft() if self._items else None


class LiveFeeds:
    """Every frame the hub receives, per camera, for the MSE connections, and each camera's
    current GOP (its verified frames since the last keyframe, in sequence) for new ones.

    It hooks into ``FrameHub.on_frame`` (called in the relay thread after each frame) in
    front of the hook already set, from the first connection on (``attach``): the hub keeps
    only each camera's newest frame, and a connection needs all of them."""

    def __init__(self, hub: FrameHub) -> None:
        self.hub = hub
        self._lock = threading.Lock()
        self._gops: dict[str, list[ReceivedFrame]] = {}
        self._seen: dict[str, int] = {}  # camera -> hub counter of the last frame taken
        self._subscribers: dict[str, set[Subscription]] = {}
        self._next: Callable[[], None] | None = None

    def attach(self) -> None:
        """Chain in front of the hub's hook (idempotent; in the event loop)."""
        if self.hub.on_frame == self._on_frame:
            return
        with self._lock:
            self._seen = {c: latest.counter for c, latest in list(self.hub.latest.items())}
            self._next = self.hub.on_frame
            self.hub.on_frame = self._on_frame

    def _on_frame(self) -> None:
        """In the relay thread: take the new frame(s), then call the hook chained after."""
        try:
            with self._lock:
                for camera, latest in list(self.hub.latest.items()):
                    if latest.counter > self._seen.get(camera, 0):
                        self._seen[camera] = latest.counter
                        self._take(camera, latest.received)
        finally:
            if self._next is not None:
                self._next()

    def _take(self, camera: str, got: ReceivedFrame) -> None:
        gop = self._gops.setdefault(camera, [])
        msg = got.msg
        if got.verified and msg.version == FORMAT_VERSION_H264:
            if msg.is_keyframe:
                gop[:] = [got]
            elif gop and msg.header.seq == gop[-1].msg.header.seq + 1 and len(gop) < MAX_GOP_FRAMES:
                gop.append(got)
            else:
                gop.clear()  # a hole, or a GOP too long to keep: wait for the next keyframe
        else:
            gop.clear()
        for sub in self._subscribers.get(camera, ()):
            sub.deliver_threadsafe(got)

    def subscribe(self, camera: str) -> Subscription:
        """From now on, every frame of ``camera``, after its current GOP (in the event loop)."""
        with self._lock:
            sub = Subscription(asyncio.get_running_loop(), list(self._gops.get(camera, ())))
            self._subscribers.setdefault(camera, set()).add(sub)
        return sub

    def unsubscribe(self, camera: str, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.get(camera, set()).discard(sub)


class MseLive:
    """The WebSocket route ``/ws/live/CAMERA``: the public H.264 stream as fragmented MP4.

    A connection whose ``cookie`` names an unlocked session is told to use MJPEG: its view
    shows decrypted zones, composed in the viewer process."""

    def __init__(self, hub: FrameHub, sessions: Sessions, cookie: str) -> None:
        self.hub, self.sessions, self.cookie = hub, sessions, cookie
        self.feeds = LiveFeeds(hub)

    def unlocked(self, ws: WebSocket) -> bool:
        return self.sessions.get(ws.cookies.get(self.cookie)) is not None

    async def endpoint(self, ws: WebSocket) -> None:
        # Browsers send Origin on every WebSocket: another site's page may open a socket to
        # localhost (no CORS here), so only this page's own origin is let in. The Host header
        # was checked already (HostCheck).
        origin = ws.headers.get("origin")
        if origin is not None and origin != f"http://{ws.headers.get('host', '')}":
            await ws.close(code=1008)
            return
        await ws.accept()
        with contextlib.suppress(WebSocketDisconnect, OSError):
            await self._serve(ws, ws.path_params["camera"])

    async def _end(self, ws: WebSocket, doc: dict[str, str], code: int = 1000) -> None:
        await ws.send_text(json.dumps(doc))
        await ws.close(code)

    async def _serve(self, ws: WebSocket, camera: str) -> None:
        hub = self.hub
        if camera not in hub.cameras:
            return await self._end(ws, {"error": f"unknown camera {camera!r}"}, 1008)
        if self.unlocked(ws):
            return await self._end(ws, {"mjpeg": "an unlocked view is composed in the viewer"})
        self.feeds.attach()
        latest = hub.latest.get(camera)
        if latest is not None and latest.received.msg.version != FORMAT_VERSION_H264:
            return await self._end(ws, {"mjpeg": "this camera sends JPEG frames"})
        sub = self.feeds.subscribe(camera)
        closed = asyncio.ensure_future(ws.receive())  # the page sends nothing but its close
        muxer = LiveMuxer()
        try:
            while not hub.stop.is_set() and not closed.done():
                item = await sub.get(1.0)
                if item is None:
                    continue
                if isinstance(item, Dropped):
                    out = muxer.hole("this connection fell behind")
                elif item.verified and item.msg.version != FORMAT_VERSION_H264:
                    return await self._end(ws, {"mjpeg": "this camera sends JPEG frames"})
                else:
                    out = muxer.push(item)
                for message in out:
                    if isinstance(message, bytes):
                        await ws.send_bytes(message)
                    else:
                        await ws.send_text(message)
            if not closed.done():
                await ws.close(1001)  # the viewer is stopping
        finally:
            closed.cancel()
            self.feeds.unsubscribe(camera, sub)
            if muxer.gaps:
                log.info("MSE stream of %s: %d gap(s)", camera, muxer.gaps)
