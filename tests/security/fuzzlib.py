"""Fuzz targets for every parser that reads untrusted bytes, their seed corpus, and mutators.

Shared by the hypothesis tests (``test_fuzz.py``, bounded for CI) and the atheris harness
(``fuzz_atheris.py``, run by hand). A *target* takes one byte string, runs the real parser
(and, when it parses, the real verifier), checks properties, and returns what happened. The
parsers may refuse input only with the project's own error types (FormatError,
VerificationError, ArchiveError); the targets catch exactly those. Anything else escaping a
target, or a failed ``assert`` in it, is a bug.

Multipart messages are stored in the corpus in a small container, ``encode_parts``: each part
as ``u32 length | bytes``. ``decode_parts`` reads any byte string (a short or lying length just
ends the last part), so byte-level fuzzers can mutate the container freely.

Corpus layout (``corpus/<target>/``): ``ok-*`` entries must parse (and verify, for signed
messages); ``bad-*`` must be refused by the parser; ``tampered-*`` (signed messages) and
``forged-*`` (grants) parse but must fail verification. ``corpus/keys/`` holds the camera
public key and the CA certificate those entries were signed with. ``make_corpus.py``
regenerates the seed entries; entries added by hand or from fuzzing findings stay.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import struct
import tempfile
import tracemalloc
import zlib
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import strategies as st
from veilcam.common.errors import ArchiveError, FormatError, VerificationError
from veilcam.common.format import (
    ACK_MAGIC,
    ACK_STRUCT,
    Ack,
    EnvelopeBody,
    FrameMessage,
    GapNotice,
    KeyEnvelope,
    message_from_parts,
    pack_parts,
    unpack_parts,
)
from veilcam.common.grants import SignedGrant, verify_grant
from veilcam.common.pki import CertificateAuthority, load_cert
from veilcam.common.segments import (
    Record,
    ScanProblem,
    read_record,
    read_segment_header,
    scan_segment,
)
from veilcam.common.signing import TrustedCameras

CORPUS = Path(__file__).resolve().parent / "corpus"
KEYS = CORPUS / "keys"
CAMERA_ID = "cam1"

# ----------------------------------------------------------------------------- container


def encode_parts(parts: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + bytes(p) for p in parts)


def decode_parts(data: bytes) -> list[bytes]:
    """Total inverse of ``encode_parts``: never fails, never allocates more than ``data``."""
    parts, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            parts.append(data[pos:])
            break
        (n,) = struct.unpack_from(">I", data, pos)
        parts.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return parts


# ----------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Entry:
    path: Path
    data: bytes

    @property
    def expect(self) -> str:
        """ok | bad | tampered | forged, from the file name."""
        return self.path.name.split("-", 1)[0]


def entries(target: str) -> list[Entry]:
    folder = CORPUS / target
    return [
        Entry(p, p.read_bytes())
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".")
    ]


@cache
def trust() -> TrustedCameras:
    raw = bytes.fromhex((KEYS / f"camera-{CAMERA_ID}.pub").read_text().strip())
    return TrustedCameras({CAMERA_ID: Ed25519PublicKey.from_public_bytes(raw)})


@cache
def ca() -> CertificateAuthority:
    return CertificateAuthority(load_cert(KEYS / "ca.pem"))


@cache
def valid_messages() -> frozenset[tuple[bytes, ...]]:
    """Every signed message of the corpus that verifies, as its exact parts."""
    return frozenset(
        tuple(decode_parts(e.data))
        for t in ("frame", "envelope", "gap")
        for e in entries(t)
        if e.expect == "ok"
    )


@cache
def valid_grants() -> frozenset[SignedGrant]:
    return frozenset(verify_grant(e.data, ca()) for e in entries("grant") if e.expect == "ok")


# ----------------------------------------------------------------------------- targets
# Each returns "ok" (parsed and verified), "bad" (refused by the parser) or "tampered"/
# "forged" (parsed, refused by the verifier): the same words as the corpus file names.


def target_message(data: bytes) -> str:
    """Frames, key envelopes and gap notices as the store and the viewer receive them."""
    parts = decode_parts(data)
    try:
        msg = message_from_parts(parts)
    except FormatError:
        return "bad"
    # the parser accepts only the canonical encoding: what it read is what it would write
    assert msg.to_parts() == parts
    if isinstance(msg, FrameMessage):
        assert msg.header.to_bytes() == msg.header_bytes
    elif isinstance(msg, KeyEnvelope):
        assert msg.body.to_bytes() == msg.body_bytes
        assert EnvelopeBody.from_bytes(msg.body_bytes) == msg.body
    else:
        assert msg.encode_body() == msg.body_bytes
    verified = True
    for at_its_time in (False, True):  # as the store and live viewer do; as verify/playback do
        try:
            if isinstance(msg, FrameMessage):
                trust().verify_frame(msg, at_capture_time=at_its_time)
            elif isinstance(msg, KeyEnvelope):
                trust().verify_envelope(msg, at_creation_time=at_its_time)
            else:
                trust().verify_gap(msg, at_creation_time=at_its_time)
        except VerificationError as exc:
            assert exc.reason and str(exc)
            verified = False
    if not verified:
        return "tampered"
    # nothing but an unmodified signed message verifies
    assert tuple(parts) in valid_messages(), "a modified message passed verification"
    return "ok"


def target_envelope_body(data: bytes) -> str:
    """``EnvelopeBody.from_bytes`` alone (the body inside a key envelope or an archive record)."""
    try:
        body = EnvelopeBody.from_bytes(data)
    except FormatError:
        return "bad"
    assert body.to_bytes() == data
    return "ok"


def target_ack(data: bytes) -> str:
    """Acknowledgements as the camera reads them from the store."""
    try:
        ack = Ack.from_parts(decode_parts(data))
    except FormatError:
        return "bad"
    assert ACK_STRUCT.pack(ACK_MAGIC, ack.status, ack.kind, ack.seq) == decode_parts(data)[0]
    return "ok"


def target_record(data: bytes) -> str:
    """``unpack_parts``: archive record bodies, the camera's spool, RANGE query answers."""
    try:
        kind, parts = unpack_parts(data)
    except FormatError:
        return "bad"
    assert pack_parts(kind, parts) == data
    return "ok"


def target_grant(data: bytes) -> str:
    """``verify_grant``: grant documents as the camera receives them from the store."""
    try:
        grant = verify_grant(data, ca())
    except VerificationError as exc:
        assert exc.reason in ("bad_grant", "forged_grant"), exc.reason
        return "bad" if exc.reason == "bad_grant" else "forged"
    assert grant in valid_grants(), "a modified grant passed verification"
    return "ok"


_scratch: list[Path] = []


def scratch_dir() -> Path:
    if not _scratch:
        path = Path(tempfile.mkdtemp(prefix="veilcam-fuzz-"))
        atexit.register(shutil.rmtree, path, True)
        _scratch.append(path)
    return _scratch[0]


def target_segment(data: bytes, probes: Sequence[tuple[int, int]] = ()) -> str:
    """The archive segment reader: header, scan, and random-access reads, on a real file."""
    path = scratch_dir() / "fuzz.vseg"
    path.write_bytes(data)
    try:
        with open(path, "rb") as fh:
            _, header_len = read_segment_header(fh, path)
    except ArchiveError:
        try:
            list(scan_segment(path))
        except ArchiveError:
            return "bad"
        raise AssertionError("scan_segment read a segment whose header is refused") from None
    items = list(scan_segment(path))
    end = header_len
    problems = 0
    for i, item in enumerate(items):
        assert item.offset >= end, "records overlap or go backwards"
        if isinstance(item, ScanProblem):
            problems += 1
            assert item.kind in ("truncated", "corrupt")
            if item.kind == "truncated" or "implausible" in item.detail:
                assert i == len(items) - 1, "the scan went on after a record it cannot delimit"
            continue
        assert isinstance(item, Record)
        assert item.offset + item.length <= len(data)
        assert read_record(path, item.offset, item.length) == (item.kind, item.parts)
        end = item.offset + item.length
        _parse_record_parts(item)
    # the index's (offset, length) pairs are trusted only as far as the file bears them out
    for offset, length in probes or _default_probes(data):
        try:
            read_record(path, offset, length)
        except ArchiveError:
            pass
    return "bad" if problems else "ok"


def _parse_record_parts(record: Record) -> None:
    try:
        if record.kind == b"F":
            FrameMessage.from_body_parts(record.parts)
        elif record.kind == b"K":
            KeyEnvelope.from_body_parts(record.parts)
        else:
            GapNotice.from_body_parts(record.parts)
    except FormatError:
        pass


def _default_probes(data: bytes) -> list[tuple[int, int]]:
    """Offsets and lengths an index could hold, read from the data itself (for atheris)."""
    probes = [(-1, 16), (0, 2**40), (len(data), 8), (len(data) - 8, 8), (3, -1)]
    for pos in range(0, min(len(data), 64), 8):
        if pos + 8 <= len(data):
            a, b = struct.unpack_from(">II", data, pos)
            probes.append((a, b))
    return probes


TARGETS: dict[str, Callable[[bytes], str]] = {
    "frame": target_message,
    "envelope": target_message,
    "gap": target_message,
    "envelope_body": target_envelope_body,
    "ack": target_ack,
    "record": target_record,
    "grant": target_grant,
    "segment": target_segment,
}
# targets without a corpus folder of their own take their seeds from another one
SEEDS_FROM = {"envelope_body": ("envelope", 1)}  # part 1 of each envelope message


def seeds(target: str) -> list[bytes]:
    source = SEEDS_FROM.get(target)
    if source is None:
        return [e.data for e in entries(target)]
    folder, part = source
    return [decode_parts(e.data)[part] for e in entries(folder) if len(decode_parts(e.data)) > part]


# ----------------------------------------------------------------------------- guards


class ParserHang(BaseException):
    """Raised by the alarm in ``bounded``; a BaseException so no parser handler swallows it."""


@contextmanager
def bounded(seconds: float):
    """Fail instead of hanging: a parser that has not returned after ``seconds`` is a bug."""

    def on_alarm(_signum, _frame):
        raise ParserHang(f"parser still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def allocation_budget(input_len: int) -> int:
    """What a parser may allocate for an input: proportional to the input, never to a length
    field inside it (a claimed 4 GB must be refused before anything is allocated)."""
    return 32 * input_len + 8 * 2**20


def run_target(target: Callable[..., str], data: bytes, *args, hang_s: float = 10.0) -> str:
    """Run one input under the hang alarm and the allocation budget (traced for this call
    only: tracing the fuzzer's own work as well would slow it down several times)."""
    tracemalloc.start()
    try:
        with bounded(hang_s):
            outcome = target(data, *args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= allocation_budget(len(data)), (
        f"parser allocated {peak} bytes for a {len(data)}-byte input"
    )
    return outcome


# ----------------------------------------------------------------------------- mutators
# Hypothesis strategies that start from corpus entries and change them the way a fuzzer
# does: bit flips, interesting integers over length fields, insertions, deletions,
# truncation, extension, splicing with another entry; and structure-aware operations for
# multipart messages (drop, duplicate, swap, insert parts; other topics), segments (lying
# length fields; mutated bodies with the CRC fixed, so the body parser is reached) and
# grants (JSON fields replaced by any JSON value, removed, added).

INTERESTING = (
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    256,
    257,
    1024,
    1025,
    4096,
    4097,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    64 * 2**20,
    64 * 2**20 + 1,
    256 * 2**20,
    256 * 2**20 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
)
TOPICS = (
    b"cam1\x00F",
    b"cam1\x00K",
    b"cam1\x00G",
    b"cam2\x00F",
    b"\x00F",
    b"cam1\x00",
    b"cam1\x00Z",
    b"",
    b"cam1\x00FF",
    b"bad id!\x00F",
    b"\xff\x00K",
)


def _pos(draw, data: bytearray, end_ok: bool = False) -> int:
    return draw(st.integers(0, max(0, len(data) - (0 if end_ok else 1))))


def _op_flip(draw, data, donors):
    if data:
        data[_pos(draw, data)] ^= 1 << draw(st.integers(0, 7))
    return data


def _op_set_byte(draw, data, donors):
    if data:
        data[_pos(draw, data)] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFE, 0xFF)))
    return data


def _op_set_int(draw, data, donors):
    width = draw(st.sampled_from((1, 2, 4, 8)))
    if len(data) < width:
        return data
    pos = draw(st.integers(0, len(data) - width))
    value = draw(st.sampled_from(INTERESTING + (len(data), len(data) + 1, len(data) - pos)))
    data[pos : pos + width] = (value % (1 << (8 * width))).to_bytes(width, "big")
    return data


def _op_insert(draw, data, donors):
    pos = _pos(draw, data, end_ok=True)
    return data[:pos] + draw(st.binary(min_size=1, max_size=16)) + data[pos:]


def _op_delete(draw, data, donors):
    if not data:
        return data
    pos = _pos(draw, data)
    return data[:pos] + data[pos + draw(st.integers(1, 16)) :]


def _op_truncate(draw, data, donors):
    return data[: _pos(draw, data, end_ok=True)]


def _op_extend(draw, data, donors):
    return data + draw(st.binary(min_size=1, max_size=64))


def _op_splice(draw, data, donors):
    donor = draw(st.sampled_from(donors)) if donors else bytes(data)
    return data[: _pos(draw, data, end_ok=True)] + donor[draw(st.integers(0, len(donor))) :]


def _op_duplicate(draw, data, donors):
    if not data:
        return data
    start = _pos(draw, data)
    chunk = data[start : start + draw(st.integers(1, 64))]
    pos = _pos(draw, data, end_ok=True)
    return data[:pos] + chunk + data[pos:]


BYTE_OPS = (
    _op_flip,
    _op_flip,
    _op_set_byte,
    _op_set_int,
    _op_set_int,
    _op_insert,
    _op_delete,
    _op_truncate,
    _op_extend,
    _op_splice,
    _op_duplicate,
)


@st.composite
def mutated_bytes(draw, seed: bytes, donors: Sequence[bytes] = (), max_ops: int = 4) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_ops))):
        data = bytearray(draw(st.sampled_from(BYTE_OPS))(draw, data, donors))
    return bytes(data)


@st.composite
def mutated_parts(draw, seed: bytes, donors: Sequence[bytes]) -> bytes:
    parts = decode_parts(seed)
    donor_parts = [p for d in donors for p in decode_parts(d)]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                (
                    "bytes",
                    "bytes",
                    "bytes",
                    "bytes",
                    "drop",
                    "dup",
                    "insert",
                    "swap",
                    "donor",
                    "topic",
                )
            )
        )
        if op == "topic" or not parts:
            topic = draw(st.sampled_from(TOPICS))
            parts = [topic, *parts[1:]] if parts else [topic]
            continue
        i = draw(st.integers(0, len(parts) - 1))
        if op == "bytes":
            parts[i] = draw(mutated_bytes(parts[i], donor_parts))
        elif op == "drop":
            del parts[i]
        elif op == "dup":
            parts.insert(i, parts[i])
        elif op == "insert":
            parts.insert(i, draw(st.binary(max_size=80)))
        elif op == "swap":
            j = draw(st.integers(0, len(parts) - 1))
            parts[i], parts[j] = parts[j], parts[i]
        elif donor_parts:
            parts[i] = draw(st.sampled_from(donor_parts))
    return encode_parts(parts)


def _record_spans(data: bytes) -> list[tuple[int, int]]:
    """(offset, body length) of each record, walked independently of the code under test."""
    if len(data) < 6:
        return []
    pos, spans = 6 + data[5], []
    while pos + 8 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        if pos + 8 + n > len(data):
            break
        spans.append((pos, n))
        pos += 8 + n
    return spans


@st.composite
def mutated_segment(draw, seed: bytes, donors: Sequence[bytes]) -> bytes:
    spans = _record_spans(seed)
    op = draw(st.sampled_from(("bytes", "length", "body", "body", "crc")))
    if op == "bytes" or not spans:
        return draw(mutated_bytes(seed, donors))
    offset, n = draw(st.sampled_from(spans))
    data = bytearray(seed)
    if op == "length":
        value = draw(st.sampled_from(INTERESTING + (len(data), n + 1, max(0, n - 1))))
        data[offset : offset + 4] = (value % 2**32).to_bytes(4, "big")
    elif op == "crc":
        data[offset + 4 : offset + 8] = draw(st.binary(min_size=4, max_size=4))
    else:  # a forger who fixes length and CRC: the body parser itself must hold
        body = draw(mutated_bytes(bytes(data[offset + 8 : offset + 8 + n])))
        data[offset : offset + 8 + n] = struct.pack(">II", len(body), zlib.crc32(body)) + body
    return bytes(data)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from((10**100, -1, 2**64, "", "cam1", "bad id!", "face", "full", "00" * 32))
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def mutated_grant(draw, seed: bytes, donors: Sequence[bytes]) -> bytes:
    try:
        doc = json.loads(seed)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or draw(st.booleans()):
        return draw(mutated_bytes(seed, donors))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(doc) + ["extra"]))
        op = draw(st.sampled_from(("replace", "replace", "delete", "donor")))
        if op == "delete":
            doc.pop(key, None)
        elif op == "donor" and donors:
            other = json.loads(draw(st.sampled_from(donors)) or b"null")
            if isinstance(other, dict) and key in other:
                doc[key] = other[key]
        else:
            doc[key] = draw(JSON_VALUES)
    return json.dumps(doc, allow_nan=True).encode()


MUTATORS = {
    "frame": mutated_parts,
    "envelope": mutated_parts,
    "gap": mutated_parts,
    "ack": mutated_parts,
    "segment": mutated_segment,
    "grant": mutated_grant,
}


def inputs(target: str) -> st.SearchStrategy[bytes]:
    """Corpus seeds of ``target`` mutated by its mutator, plus a few purely random inputs."""
    pool = seeds(target)
    mutate = MUTATORS.get(target, mutated_bytes)
    donors = [d for d in pool if target != "grant" or _is_json(d)]
    seeded = st.integers(0, len(pool) - 1).flatmap(lambda i: mutate(pool[i], donors))
    return st.one_of(seeded, st.binary(max_size=256))


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
        return True
    except (ValueError, RecursionError):
        return False


def fuzz_examples(default: int = 200) -> int:
    """Examples per fuzz test: bounded in CI, VEILCAM_FUZZ_EXAMPLES for long manual runs."""
    return int(os.environ.get("VEILCAM_FUZZ_EXAMPLES", default))
