"""Segment files: the archive's on-disk record format (docs/FORMAT.md, "Archive on disk").

    segment = "VSEG" | version u8 | camera_id_len u8 | camera_id
              | record*
    record  = body_len u32 | crc32(body) u32 | body
    body    = kind u8 ('F' frame, 'K' key envelope, 'G' gap notice)
              | part_count u16 | (part_len u32 | part)*

A record holds a verified message's body parts exactly as received (header, signature, image,
zone ciphertexts; or envelope body and signature; or gap notice body and signature), so the
archive can be re-verified byte for byte. The CRC finds torn writes and bit rot; authenticity
comes from the signatures.

The format is shared: the store writes segments (store_node.archive: appending, rotation,
retention), ``veilcam verify`` reads them, and the viewer's evidence export writes one.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from veilcam.common.errors import ArchiveError, FormatError
from veilcam.common.format import pack_parts, unpack_parts, validate_camera_id

SEGMENT_MAGIC = b"VSEG"
SEGMENT_VERSION = 1
RECORD_HEAD = struct.Struct(">II")
MAX_RECORD_BYTES = 256 * 2**20


def segment_file_name(number: int) -> str:
    """The name of a camera's ``number``-th segment file (1, 2, ...): ``00000001.vseg``."""
    return f"{number:08d}.vseg"


def segment_header(camera_id: str) -> bytes:
    raw = validate_camera_id(camera_id).encode("ascii")
    return SEGMENT_MAGIC + bytes([SEGMENT_VERSION, len(raw)]) + raw


def encode_record(kind: bytes, parts: list[bytes]) -> bytes:
    data = pack_parts(kind, parts)
    return RECORD_HEAD.pack(len(data), zlib.crc32(data)) + data


decode_body = unpack_parts


@dataclass(frozen=True)
class Record:
    offset: int
    length: int  # whole record, head included
    kind: bytes
    parts: list[bytes]


@dataclass(frozen=True)
class ScanProblem:
    offset: int
    kind: str  # "truncated" | "corrupt"
    detail: str


def read_segment_header(fh: BinaryIO, path: Path) -> tuple[str, int]:
    head = fh.read(6)
    if len(head) < 6 or head[:4] != SEGMENT_MAGIC:
        raise ArchiveError(f"{path} is not a veilcam segment (bad magic)")
    if head[4] != SEGMENT_VERSION:
        raise ArchiveError(f"{path}: segment version {head[4]} is not supported")
    raw = fh.read(head[5])
    if len(raw) != head[5]:
        raise ArchiveError(f"{path}: segment header cut short in the camera id")
    try:
        camera_id = validate_camera_id(raw.decode("ascii"))
    except (UnicodeDecodeError, FormatError):
        raise ArchiveError(f"{path}: bad camera id in segment header") from None
    return camera_id, 6 + head[5]


def scan_segment(path: Path, start: int | None = None) -> Iterator[Record | ScanProblem]:
    """Yield every record from ``start`` (default: the first), and every problem met.

    A record cut short at the end of the file is a ``truncated`` problem (a torn write) and
    ends the scan; a record whose CRC or structure is wrong is ``corrupt``, and the scan goes
    on after it (its length field still locates the next record), unless the length itself
    is implausible, which ends the scan.
    """
    with open(path, "rb") as fh:
        _, header_len = read_segment_header(fh, path)
        pos = header_len if start is None else max(start, header_len)
        fh.seek(pos)
        size = os.fstat(fh.fileno()).st_size
        while pos < size:
            head = fh.read(RECORD_HEAD.size)
            if len(head) < RECORD_HEAD.size:
                yield ScanProblem(pos, "truncated", f"{size - pos} stray bytes at the end")
                return
            length, crc = RECORD_HEAD.unpack(head)
            if length > MAX_RECORD_BYTES:
                yield ScanProblem(pos, "corrupt", f"record length {length} is implausible")
                return
            if pos + RECORD_HEAD.size + length > size:
                # never read (allocate) more than the file holds: a torn or lying length
                yield ScanProblem(
                    pos,
                    "truncated",
                    f"record needs {length} bytes, {size - pos - RECORD_HEAD.size} present",
                )
                return
            body = fh.read(length)
            if len(body) < length:
                yield ScanProblem(
                    pos, "truncated", f"record needs {length} bytes, {len(body)} present"
                )
                return
            try:
                if zlib.crc32(body) != crc:
                    raise FormatError("CRC mismatch")
                kind, parts = decode_body(body)
            except FormatError as exc:
                # the length field held, so the next record can still be found: report, go on
                yield ScanProblem(pos, "corrupt", str(exc))
            else:
                yield Record(pos, RECORD_HEAD.size + length, kind, parts)
            pos += RECORD_HEAD.size + length


def read_record(path: Path, offset: int, length: int) -> tuple[bytes, list[bytes]]:
    if offset < 0 or not RECORD_HEAD.size <= length <= RECORD_HEAD.size + MAX_RECORD_BYTES:
        raise ArchiveError(f"{path}: no record can be at offset {offset} with length {length}")
    with open(path, "rb") as fh:
        if offset + length > os.fstat(fh.fileno()).st_size:
            raise ArchiveError(f"{path}: record at {offset} is cut short")
        fh.seek(offset)
        data = fh.read(length)
    if len(data) != length:
        raise ArchiveError(f"{path}: record at {offset} is cut short")
    return decode_record(data, f"{path}: record at {offset}")


def decode_record(data: bytes, where: str) -> tuple[bytes, list[bytes]]:
    """Kind and body parts of one whole record (head included), CRC checked: a record read
    from a local segment or by byte range from the object store. ``where`` names it in the
    ``ArchiveError``."""
    if len(data) < RECORD_HEAD.size:
        raise ArchiveError(f"{where} is cut short")
    body_len, crc = RECORD_HEAD.unpack(data[: RECORD_HEAD.size])
    body = data[RECORD_HEAD.size :]
    if body_len != len(body) or zlib.crc32(body) != crc:
        raise ArchiveError(f"{where} is corrupt (CRC mismatch)")
    try:
        return decode_body(body)
    except FormatError as exc:
        raise ArchiveError(f"{where} is corrupt: {exc}") from None


def list_segments(camera_dir: Path) -> list[Path]:
    return sorted(camera_dir.glob("*.vseg"))
