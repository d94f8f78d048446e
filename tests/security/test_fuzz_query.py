"""Fuzzing the query protocol's parsers (common/query.py) from seeds of every command.

``decode_request`` reads what any certified peer sends to the store's query socket;
``decode_reply`` reads what a (possibly malicious) store answers. Seeds: a valid request and
reply of every command (``LIVE`` among them), mutated by hypothesis (a part's bytes flipped,
cut, grown, replaced; parts dropped, duplicated, added). Every input must decode to a value
that round-trips, or be refused with QueryError (for replies, also an ``ERR`` answer): no
other exception, within a time bound.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from veilcam.common.format import pack_parts
from veilcam.common.query import (
    MAX_LIVE_FRAMES,
    Command,
    ErrorReply,
    LiveReply,
    LiveRequest,
    QueryError,
    Reply,
    Request,
    decode_reply,
    decode_request,
)

from tests.security import fuzzlib
from tests.test_query import REPLIES, REQUESTS

FUZZ = settings(
    max_examples=fuzzlib.fuzz_examples(),
    deadline=timedelta(seconds=2),
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)

REQUEST_SEEDS: list[list[bytes]] = [r.to_frames() for r in REQUESTS] + [
    [b"LIVE", b"cam1"],
    [b"LIVE", b"a" * 64],
    [b"LIVE", b"door.2-x_y"],
]
REPLY_SEEDS: list[tuple[Command, list[bytes]]] = [(r.command, r.to_frames()) for r in REPLIES] + [
    (Command.LIVE, LiveReply([[b"h", bytes(64), b"au"]] * 3).to_frames()),
    (Command.LIVE, [b"OK", *[pack_parts(b"F", [b"h", b"s", b"i"])] * MAX_LIVE_FRAMES]),
    (Command.LIVE, [b"ERR", b"LIVE is not allowed for a camera certificate"]),
]


def test_the_seeds_cover_every_command() -> None:
    assert {Command.from_wire(f[0]) for f in REQUEST_SEEDS} == set(Command)
    assert {c for c, _ in REPLY_SEEDS} == set(Command)
    for frames in REQUEST_SEEDS:
        assert isinstance(decode_request(frames), Request)
    for command, frames in REPLY_SEEDS:
        assert isinstance(decode_reply(command, frames), Reply | ErrorReply)
    assert decode_request([b"LIVE", b"cam1"]) == LiveRequest("cam1")


def _mutated(draw, frames: list[bytes]) -> list[bytes]:
    frames = list(frames)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "grow", "replace", "drop", "dup", "add"]))
        i = draw(st.integers(0, max(0, len(frames) - 1))) if frames else 0
        if op == "add" or not frames:
            frames.insert(i, draw(st.binary(max_size=80)))
        elif op == "drop":
            del frames[i]
        elif op == "dup":
            frames.insert(i, frames[i])
        elif op == "replace":
            frames[i] = draw(
                st.sampled_from([b"", b"-1", b"0", b"-0", b"9" * 20, b"\xff", b"LIVE", b"OK"])
                | st.binary(max_size=40)
            )
        elif frames[i]:
            pos = draw(st.integers(0, len(frames[i]) - 1))
            if op == "flip":
                bit = 1 << draw(st.integers(0, 7))
                part = frames[i]
                frames[i] = part[:pos] + bytes([part[pos] ^ bit]) + part[pos + 1 :]
            elif op == "cut":
                frames[i] = frames[i][:pos]
            else:
                frames[i] = frames[i] + draw(st.binary(min_size=1, max_size=40))
    return frames


@FUZZ
@given(data=st.data())
def test_fuzzed_requests_decode_and_round_trip_or_are_refused(data) -> None:
    frames = _mutated(data.draw, data.draw(st.sampled_from(REQUEST_SEEDS)))
    with fuzzlib.bounded(2.0):
        try:
            request = decode_request(frames)
        except QueryError:
            return
    assert decode_request(request.to_frames()) == request


@FUZZ
@given(data=st.data())
def test_fuzzed_replies_decode_and_round_trip_or_are_refused(data) -> None:
    command, seed = data.draw(st.sampled_from(REPLY_SEEDS))
    command = data.draw(st.sampled_from([command, command, command, Command.LIVE, Command.RANGE]))
    frames = _mutated(data.draw, seed)
    with fuzzlib.bounded(2.0):
        try:
            reply = decode_reply(command, frames)
        except QueryError:
            return
    if isinstance(reply, ErrorReply):
        return
    assert decode_reply(command, reply.to_frames()) == reply
