"""The structure of a redacted H.264 export's MP4, checked box by box before its samples are.

A redacted export is a remux: its samples are the camera's signed access units, and
`veilcam verify` compares them one by one (viewer/export.py). That comparison is only worth
something if every sample the file holds is one it sees, in the order and at the times a
player uses, and if nothing in the file changes how the pictures are shown. MP4 can do all of
that behind a demuxer's back: an edit list hides or repeats samples, composition offsets
reorder them, a track matrix mirrors or rotates the picture, `clap` crops it, fragments and
extra tracks or sample descriptions add pictures. So the file must have exactly the structure
veilcam's remux writes (viewer/export.py `_Remux`, FFmpeg's mov muxer): these boxes and no
other, a single identity edit, an identity matrix, one H.264 sample description.
"""

from __future__ import annotations

import mmap
import struct

Data = bytes | mmap.mmap  # a file read whole, or mapped (an hour of video need not fit in memory)

# the boxes each container may hold in a veilcam remux (anything else is refused)
ALLOWED_CHILDREN: dict[bytes, set[bytes]] = {
    b"": {b"ftyp", b"free", b"mdat", b"moov"},
    b"moov": {b"mvhd", b"trak", b"udta"},
    b"trak": {b"tkhd", b"edts", b"mdia"},
    b"edts": {b"elst"},
    b"mdia": {b"mdhd", b"hdlr", b"minf"},
    b"minf": {b"vmhd", b"dinf", b"stbl"},
    b"stbl": {b"stsd", b"stts", b"stss", b"stsc", b"stsz", b"stco", b"co64"},
}
EXACTLY_ONE = {b"moov", b"mdat", b"trak", b"tkhd", b"mdia", b"minf", b"stbl", b"stsd", b"stts"}
IDENTITY_MATRIX = (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
SAMPLE_ENTRY_CHILDREN = {b"avcC", b"btrt"}  # no clap, pasp, colr...: nothing that alters display
VISUAL_SAMPLE_ENTRY_LEN = 78  # bytes of an avc1 entry before its child boxes


def _boxes(data: Data, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in data[start:end]."""
    out = []
    off = start
    while off < end:
        if off + 8 > end:
            raise ValueError("a box header runs past its container")
        size, kind = struct.unpack(">I4s", data[off : off + 8])
        header = 8
        if size == 1:
            if off + 16 > end:
                raise ValueError("a large box header runs past its container")
            size, header = struct.unpack(">Q", data[off + 8 : off + 16])[0], 16
        elif size == 0:
            size = end - off
        if size < header or off + size > end:
            raise ValueError(f"box {kind!r} has a bad size")
        out.append((kind, off + header, off + size))
        off += size
    return out


def structure_problems(data: Data, width: int, height: int) -> list[str]:
    """Why ``data`` is not an MP4 as veilcam's remux writes it (empty: it is)."""
    try:
        return _check(data, width, height)
    except (ValueError, struct.error) as exc:
        return [f"the MP4 is malformed ({exc})"]


def _check(data: Data, width: int, height: int) -> list[str]:
    problems: list[str] = []
    found: dict[bytes, list[tuple[int, int]]] = {}

    def visit(container: bytes, start: int, end: int) -> None:
        for kind, body, stop in _boxes(data, start, end):
            if kind not in ALLOWED_CHILDREN[container]:
                where = container.decode() or "the file"
                problems.append(f"box {kind.decode(errors='replace')!r} in {where}")
                continue
            found.setdefault(kind, []).append((body, stop))
            if kind in ALLOWED_CHILDREN:
                visit(kind, body, stop)

    visit(b"", 0, len(data))
    for kind in sorted(EXACTLY_ONE):
        if len(found.get(kind, [])) != 1:
            problems.append(f"{len(found.get(kind, []))} {kind.decode()} box(es), not one")
    if problems:
        return problems
    problems += _check_tkhd(data, *found[b"tkhd"][0], width, height)
    for body, stop in found.get(b"elst", []):
        problems += _check_elst(data, body, stop)
    problems += _check_stsd(data, *found[b"stsd"][0])
    return problems


def _check_tkhd(data: Data, body: int, stop: int, width: int, height: int) -> list[str]:
    version = data[body]
    matrix_at = body + (52 if version == 1 else 40)
    if matrix_at + 44 > stop:
        return ["the track header is too short"]
    matrix = struct.unpack(">9i", data[matrix_at : matrix_at + 36])
    track_w, track_h = struct.unpack(">II", data[matrix_at + 36 : matrix_at + 44])
    problems = []
    if matrix != IDENTITY_MATRIX:
        problems.append(f"the track matrix {matrix} is not the identity (mirrored or rotated)")
    if (track_w, track_h) != (width << 16, height << 16):
        problems.append(
            f"the track is {track_w / 65536:g}x{track_h / 65536:g}, the frames {width}x{height}"
        )
    return problems


def _check_elst(data: Data, body: int, stop: int) -> list[str]:
    version = data[body]
    (count,) = struct.unpack(">I", data[body + 4 : body + 8])
    entry = 20 if version == 1 else 12
    if count != 1 or body + 8 + entry > stop:
        return [f"an edit list of {count} entries (it can hide or repeat samples)"]
    at = body + 8
    if version == 1:
        _, media_time, rate = struct.unpack(">QqI", data[at : at + 20])
    else:
        _, media_time, rate = struct.unpack(">IiI", data[at : at + 12])
    if media_time != 0 or rate != 0x10000:
        return [f"an edit list starting at {media_time} at rate {rate / 65536:g} (not identity)"]
    return []


def _check_stsd(data: Data, body: int, stop: int) -> list[str]:
    (count,) = struct.unpack(">I", data[body + 4 : body + 8])
    entries = _boxes(data, body + 8, stop)
    if count != 1 or len(entries) != 1 or entries[0][0] != b"avc1":
        kinds = [e[0].decode(errors="replace") for e in entries]
        return [f"sample descriptions {kinds}, not one avc1"]
    _, entry_body, entry_stop = entries[0]
    children = _boxes(data, entry_body + VISUAL_SAMPLE_ENTRY_LEN, entry_stop)
    extra = sorted({c[0] for c in children} - SAMPLE_ENTRY_CHILDREN)
    if extra:
        return [f"the avc1 sample description holds {[e.decode(errors='replace') for e in extra]}"]
    return []
