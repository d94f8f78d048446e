"""Fuzzing every parser of untrusted bytes, from a saved corpus.

Parsers: frames (versions 1 and 2), key envelopes (message and body), gap notices, acknowledgements, record part
lists (``unpack_parts``), grants (``verify_grant``), archive segments (header, scan,
random-access reads), and on top of those the store's archive recovery and ``veilcam verify``.
Every input must end in a clean rejection (the project's own error types), within a time
bound, with allocations proportional to the input (never to a length field inside it).
The targets and mutators live in ``fuzzlib.py``; longer runs: see README.md.
"""

from __future__ import annotations

import functools
import struct
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from veilcam.camera_node.zones import Zone
from veilcam.common.errors import ArchiveError, FormatError, VerificationError
from veilcam.common.format import FrameMessage, ZoneClass, message_from_parts
from veilcam.common.segments import MAX_RECORD_BYTES, ScanProblem, scan_segment, segment_header
from veilcam.common.signing import TrustedCameras
from veilcam.store_node.archive import Archive
from veilcam.store_node.audit import audit_archive

from tests.factory import textured
from tests.security import fuzzlib
from tests.security.fuzzlib import CORPUS, TARGETS, entries, inputs, run_target

FUZZ = settings(
    max_examples=fuzzlib.fuzz_examples(),
    deadline=timedelta(seconds=2),
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
CORPUS_FOLDERS = sorted(p.name for p in CORPUS.iterdir() if p.is_dir() and p.name != "keys")


def _corpus_files() -> list:
    return [
        pytest.param(folder, e, id=f"{folder}/{e.path.name}")
        for folder in CORPUS_FOLDERS
        for e in entries(folder)
    ]


@pytest.mark.parametrize("folder, entry", _corpus_files())
def test_corpus_entry_gets_the_outcome_its_name_says(folder: str, entry) -> None:
    """Replays every saved corpus file: ok-* parse (and verify), bad-* are refused by the
    parser, tampered-*/forged-* are refused by the verifier; nothing else escapes."""
    assert run_target(TARGETS[folder], entry.data) == entry.expect


def test_corpus_has_valid_and_malformed_entries_for_every_parser() -> None:
    assert set(CORPUS_FOLDERS) >= set(TARGETS) - set(fuzzlib.SEEDS_FROM)
    for folder in CORPUS_FOLDERS:
        kinds = {e.expect for e in entries(folder)}
        assert {"ok", "bad"} <= kinds, folder
        assert all(e.path.stat().st_size <= 16 * 1024 for e in entries(folder)), folder


@pytest.mark.parametrize("target", sorted(TARGETS))
@FUZZ
@given(data=st.data())
def test_fuzzed_input_is_rejected_cleanly(target: str, data) -> None:
    run_target(TARGETS[target], data.draw(inputs(target), label="input"))


@FUZZ
@given(data=st.data())
def test_fuzzed_index_offsets_read_records_or_refuse_cleanly(data) -> None:
    """``read_record`` with any (offset, length) an index could hold."""
    seed = data.draw(st.sampled_from(fuzzlib.seeds("segment")))
    probes = data.draw(
        st.lists(st.tuples(st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40)), max_size=8)
    )
    run_target(fuzzlib.target_segment, seed, probes)


@settings(FUZZ, max_examples=max(20, fuzzlib.fuzz_examples() // 4))
@given(data=st.data())
def test_fuzzed_archive_recovers_and_verifies_without_crashing(data, tmp_path_factory) -> None:
    """The store's start-up recovery and ``veilcam verify`` over a damaged segment: they may
    refuse (ArchiveError) or report problems, never crash."""
    segment = data.draw(inputs("segment"), label="segment")
    root = tmp_path_factory.mktemp("archive")
    (root / "segments" / "cam1").mkdir(parents=True)
    (root / "segments" / "cam1" / "00000001.vseg").write_bytes(segment)
    with fuzzlib.bounded(20):
        try:
            Archive(root).close()
        except ArchiveError:
            pass
        report = audit_archive(root, fuzzlib.trust())
    if segment not in fuzzlib.seeds("segment"):
        assert report.problems or report.notes or report.cameras, "audit saw nothing at all"


@pytest.mark.parametrize("claim", [0xFFFFFFFF, MAX_RECORD_BYTES, 255 * 2**20, 64 * 2**20])
def test_record_length_claiming_gigabytes_allocates_nothing(tmp_path: Path, claim: int) -> None:
    """A segment record whose length field claims up to 4 GiB is refused before its body is
    read: the scan allocates about the file's size, not the claim."""
    path = tmp_path / "00000001.vseg"
    path.write_bytes(segment_header("cam1") + struct.pack(">II", claim, 0) + b"x" * 100)
    tracemalloc.start()
    try:
        items = list(scan_segment(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    assert len(items) == 1 and isinstance(items[0], ScanProblem)


def test_length_fields_in_messages_are_checked_before_use() -> None:
    """Frame, envelope and record length fields claiming 64 MiB..4 GiB (corpus entries named
    so) are refused with at most a megabyte allocated."""
    claims = [
        e
        for folder in CORPUS_FOLDERS
        for e in entries(folder)
        if any(s in e.path.name for s in ("4gib", "64mib", "65535", "4097", "1025"))
    ]
    assert len(claims) >= 8
    for entry in claims:
        folder = entry.path.parent.name
        tracemalloc.start()
        try:
            outcome = TARGETS[folder](entry.data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert outcome == "bad" and peak < 2**20 + 8 * len(entry.data), entry.path.name


def test_corpus_has_version_2_frames() -> None:
    """Version-2 (H.264) frames seed the frame fuzzer: signed ones (with a key the corpus does
    not trust, so they are tampered-*) and one malformed one per parse check."""
    names = [e.path.name for e in entries("frame")]
    assert sum(n.startswith("tampered-v2-") for n in names) >= 3
    assert sum(n.startswith("bad-v2-") for n in names) >= 15


@functools.cache
def _v2_camera_messages() -> tuple[TrustedCameras, tuple[tuple[bytes, ...], ...]]:
    """Small signed version-2 frames and the trust that verifies them (made in-process: the
    corpus keeps no private key, so its version-2 seeds cannot verify as ok-*)."""
    from tests.test_h264 import H264Camera

    cam = H264Camera(gop=3)
    msgs = []
    for i in range(4):
        zones = [Zone(4, 4, 10, 12, ZoneClass.FACE)] + (
            [Zone(30, 10, 12, 16, ZoneClass.PERSON)] if i != 1 else []
        )
        msgs.append(tuple(cam.frame(image=textured(48, 32, seed=i), zones=zones)[0].to_parts()))
    return cam.trust, tuple(msgs)


@FUZZ
@given(data=st.data())
def test_fuzzed_version_2_frames_verify_only_unmodified(data) -> None:
    """Any change to a signed version-2 frame (a flipped bit, a changed length, parts added,
    dropped or swapped) is refused by the parser or the verifier, never a crash; only the
    unmodified frames verify."""
    trust, messages = _v2_camera_messages()
    parts = list(data.draw(st.sampled_from(messages)))
    op = data.draw(st.sampled_from(["flip", "truncate", "extend", "drop", "swap", "none"]))
    i = data.draw(st.integers(0, len(parts) - 1))
    if op == "flip" and parts[i]:
        pos = data.draw(st.integers(0, len(parts[i]) - 1))
        bit = 1 << data.draw(st.integers(0, 7))
        parts[i] = parts[i][:pos] + bytes([parts[i][pos] ^ bit]) + parts[i][pos + 1 :]
    elif op == "truncate":
        parts[i] = parts[i][: data.draw(st.integers(0, max(0, len(parts[i]) - 1)))]
    elif op == "extend":
        parts[i] = parts[i] + data.draw(st.binary(min_size=1, max_size=8))
    elif op == "drop":
        del parts[i]
    elif op == "swap":
        j = data.draw(st.integers(0, len(parts) - 1))
        parts[i], parts[j] = parts[j], parts[i]
    with fuzzlib.bounded(10):
        try:
            msg = message_from_parts(parts)
        except FormatError:
            return
        assert isinstance(msg, FrameMessage) and msg.to_parts() == parts
        try:
            trust.verify_frame(msg)
        except VerificationError as exc:
            assert exc.reason
            return
    assert tuple(parts) in messages, "a modified version-2 frame passed verification"
