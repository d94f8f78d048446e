"""The viewer's stateful renderer (viewer/render.py): version-1 frames as before; version-2
frames decoded in sequence (a public decoder per camera, a decoder per class stream the user
holds the key of), zones pasted from the class streams, and a gap (never a picture from a
broken chain of access units) after a frame that is missing, reordered or tampered."""

from __future__ import annotations

import dataclasses
import time

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from veilcam.camera_node.protect import Epoch
from veilcam.camera_node.zones import Zone
from veilcam.common.errors import VerificationError
from veilcam.common.format import FrameMessage, ZoneClass
from veilcam.common.keywrap import Grant, Identity, Recipient
from veilcam.viewer.client import ReceivedFrame
from veilcam.viewer.playback import shown_frames
from veilcam.viewer.render import GAP_WAITING, Renderer, describe, render
from veilcam.viewer.unlock import Unlocker

from tests.conftest import SAMPLE_CLIP, require_media
from tests.factory import Camera, H264Camera, textured

FACE = Zone(40, 30, 64, 80, ZoneClass.FACE)
PERSON = Zone(180, 100, 60, 90, ZoneClass.PERSON)


def _smooth(seed: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A picture 4:2:0 can carry (``textured`` has per-pixel colour noise)."""
    return cv2.GaussianBlur(textured(width, height, seed=seed), (7, 7), 2.0)


class _Keys:
    """Envelopes of a camera's epochs for one user, granted some classes."""

    def __init__(self, cam: H264Camera, classes=frozenset(ZoneClass)) -> None:
        self.cam = cam
        self.identity = Identity("alice", X25519PrivateKey.generate())
        self.classes = classes
        self.bodies: dict[bytes, object] = {}
        self.withheld: set[bytes] = set()

    def add(self, epoch: Epoch) -> None:
        grant = Grant(Recipient("alice", self.identity.private_key.public_key()), self.classes)
        env = epoch.envelope(self.cam.key, "cam1", self.cam.seq, [grant])
        self.bodies[epoch.epoch_id] = env.body

    def unlocker(self) -> Unlocker:
        return Unlocker(
            self.identity,
            lambda camera, epoch: None if epoch in self.withheld else self.bodies.get(epoch),
        )


def _psnr_in(image: np.ndarray, original: np.ndarray, z: Zone) -> float:
    box = (slice(z.y, z.y + z.h), slice(z.x, z.x + z.w))
    return cv2.PSNR(np.ascontiguousarray(image[box]), np.ascontiguousarray(original[box]))


# --------------------------------------------------------------------------- version 1


def test_version_1_renders_as_before() -> None:
    cam = Camera()
    env = cam.envelope()
    unlocker = Unlocker(cam.identities[0], lambda c, e: env.body)
    renderer = Renderer(unlocker)
    for _ in range(3):
        msg = cam.frame()
        expected = render(msg, Unlocker(cam.identities[0], lambda c, e: env.body))
        shown = renderer.render(msg)
        assert not shown.is_gap and shown.gap == ""
        assert np.array_equal(shown.image, expected.image)
        assert shown.unlocked and shown.zone_unlocked == [True, True] == expected.zone_unlocked
        line = describe(msg, True, shown)
        assert line == describe(msg, True, expected)
        assert "gap" not in line and "keyframe" not in line  # the v1 line is unchanged
    public = Renderer(None).render(msg)
    assert not public.unlocked and public.zone_unlocked == [False, False]
    assert np.array_equal(public.image, render(msg, None).image)


# --------------------------------------------------------------------------- version 2


def test_version_2_public_stream_decodes_frame_by_frame() -> None:
    cam = H264Camera(gop=4)
    renderer = Renderer(None)
    for i in range(9):
        image = _smooth(i)
        redacted = image.copy()
        cam.redactor(redacted[FACE.y : FACE.y + FACE.h, FACE.x : FACE.x + FACE.w])
        msg, _ = cam.frame(image=image, zones=[FACE])
        shown = renderer.render(msg)
        assert shown.image is not None and shown.image.shape == (240, 320, 3)
        assert cv2.PSNR(shown.image, redacted) > 25  # CRF 23 on a synthetic picture
        assert shown.zone_unlocked == [False] and not shown.unlocked
        line = describe(msg, True, shown)
        assert line["keyframe"] == (i % 4 == 0) and "gap" not in line
        assert line["zones"] == [
            {"x": 40, "y": 30, "w": 64, "h": 80, "class": "face", "unlocked": False}
        ]
    # a viewer joining mid-GOP waits for the keyframe, and says so
    late = Renderer(None)
    msg, _ = cam.frame(image=_smooth(9), zones=[FACE])  # #9: GOP index 1
    shown = late.render(msg)
    assert shown.is_gap and shown.gap == GAP_WAITING
    assert describe(msg, True, shown)["gap"] == "waiting for keyframe"


def test_unlocked_zones_come_back_at_40_db_inside_the_zones() -> None:
    """On natural pictures (the sample clip, 640x360), through the whole viewer path: the
    envelope unwrapped, each stream AU decrypted, decoded in sequence and pasted."""
    width, height = 640, 360
    cap = cv2.VideoCapture(str(require_media(SAMPLE_CLIP)))
    cam = H264Camera(gop=10, fps=30.0)
    keys = _keys_for(cam)
    renderer = Renderer(keys.unlocker())
    psnr, render_s = [], []
    for i in range(20):
        ok, frame = cap.read()
        assert ok
        image = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        zones = [Zone(100 + 3 * i, 60, 90, 110, ZoneClass.FACE), Zone(300, 40, 150, 300, 3)]
        msg, _ = cam.frame(image=image, zones=zones)  # (it returns the redacted copy)
        original = image
        t0 = time.perf_counter()
        shown = renderer.render(msg)
        render_s.append(time.perf_counter() - t0)
        assert shown.image is not None and shown.unlocked and shown.zone_unlocked == [True] * 2
        psnr += [_psnr_in(shown.image, original, z) for z in zones]
    cap.release()
    assert min(psnr) >= 40, sorted(psnr)[:5]
    print(f"render 640x360 + 2 zone streams: {1000 * np.median(render_s):.1f} ms/frame")


def _keys_for(cam: H264Camera, classes=frozenset(ZoneClass)) -> _Keys:
    keys = _Keys(cam, classes)
    keys.add(cam.epoch)
    return keys


def _verified(cam: H264Camera, msg: FrameMessage) -> bool:
    """What a viewer does before rendering: only frames that verify are rendered."""
    try:
        cam.trust.verify_frame(msg)
    except VerificationError:
        return False
    return True


@pytest.mark.parametrize("fault", ["dropped", "reordered", "tampered_public", "tampered_stream"])
def test_a_broken_chain_of_access_units_is_a_gap_until_the_next_keyframe(fault: str) -> None:
    """GOP of 4 (keyframes #0, #4, #8). #5 is lost, comes after #6, or arrives tampered (so
    it does not verify and is not rendered): #5..#7 give no picture, #8 decodes again."""
    cam = H264Camera(gop=4)
    keys = _keys_for(cam)
    frames = [(cam.frame(image=_smooth(i), zones=[FACE])[0], _smooth(i)) for i in range(10)]
    order = list(range(10))
    if fault == "dropped":
        order.remove(5)
    elif fault == "reordered":
        order[5], order[6] = 6, 5
    msgs = [m for m, _ in frames]
    if fault.startswith("tampered"):
        m = msgs[5]
        if fault == "tampered_public":
            au = bytearray(m.public_image)
            au[-3] ^= 0x40
            msgs[5] = dataclasses.replace(m, public_image=bytes(au))
        else:
            ct = bytearray(m.stream_ciphertexts[0])
            ct[-3] ^= 0x40
            msgs[5] = dataclasses.replace(m, stream_ciphertexts=(bytes(ct),))
    renderer = Renderer(keys.unlocker())
    pictures: dict[int, bool] = {}
    for seq in order:
        msg = msgs[seq]
        if not _verified(cam, msg):
            assert fault.startswith("tampered") and seq == 5
            continue
        shown = renderer.render(msg)
        pictures[seq] = not shown.is_gap
        if shown.is_gap:
            assert shown.gap == GAP_WAITING and shown.zone_unlocked == [False]
        else:
            assert shown.zone_unlocked == [True]
            assert _psnr_in(shown.image, frames[seq][1], FACE) > 25  # synthetic texture
    expected = {s: s < 5 or s >= 8 for s in pictures}
    assert pictures == expected
    assert renderer.gaps == sum(not ok for ok in expected.values())


def test_a_user_without_a_class_key_sees_that_class_redacted() -> None:
    """Alice holds the face key, not the person key: faces unlock, persons stay as the public
    stream shows them; the picture is not 'unlocked' as a whole."""
    cam = H264Camera(gop=4)
    keys = _keys_for(cam, classes=frozenset({ZoneClass.FACE}))
    renderer, public = Renderer(keys.unlocker()), Renderer(None)
    for i in range(6):
        original = _smooth(i)
        msg, _ = cam.frame(image=original, zones=[FACE, PERSON])
        shown, plain = renderer.render(msg), public.render(msg)
        assert shown.image is not None and plain.image is not None
        assert shown.zone_unlocked == [True, False] and not shown.unlocked
        assert _psnr_in(shown.image, original, FACE) > 25  # synthetic texture
        assert _psnr_in(plain.image, original, FACE) < 20  # redacted in the public picture
        box = (slice(PERSON.y, PERSON.y + PERSON.h), slice(PERSON.x, PERSON.x + PERSON.w))
        assert np.array_equal(shown.image[box], plain.image[box])  # person: as public
        line = describe(msg, True, shown)
        assert [z["unlocked"] for z in line["zones"]] == [True, False]


def test_a_key_missing_for_one_epoch_stops_the_class_stream_until_its_next_idr() -> None:
    """Epochs rotate mid-GOP (A: #0-#2, B: #3-#5, C: #6-). Without B's envelope the face
    stream misses #3-#5: it cannot decode #6 and #7 even with C's key, and resumes at the
    IDR of #8; the public picture goes on throughout."""
    cam = H264Camera(gop=4)
    keys = _keys_for(cam)
    renderer = Renderer(keys.unlocker())
    unlocked = []
    for i in range(10):
        if i in (3, 6):
            cam.epoch = Epoch.new()
            keys.add(cam.epoch)
            if i == 3:
                keys.withheld.add(cam.epoch.epoch_id)
        original = _smooth(i)
        msg, _ = cam.frame(image=original, zones=[FACE])
        shown = renderer.render(msg)
        assert shown.image is not None
        unlocked.append(shown.zone_unlocked[0])
        if shown.zone_unlocked[0]:
            assert _psnr_in(shown.image, original, FACE) > 25  # synthetic texture
    assert unlocked == [True] * 3 + [False] * 5 + [True] * 2


def test_locking_mid_stream_drops_the_class_decoders() -> None:
    cam = H264Camera(gop=4)
    keys = _keys_for(cam)
    renderer = Renderer(keys.unlocker())
    got = []
    for i in range(10):
        if i == 2:
            renderer.unlocker = None
        if i == 5:
            renderer.unlocker = keys.unlocker()  # unlocked again: from the next IDR (#8)
        msg, _ = cam.frame(image=_smooth(i), zones=[FACE])
        got.append(renderer.render(msg).zone_unlocked[0])
    assert got == [True, True] + [False] * 6 + [True, True]


def test_playback_decodes_the_preroll_and_shows_from_the_time() -> None:
    """``shown_frames``: preroll frames (from the keyframe before the asked time) are
    decoded, not shown; the first frame shown already has its picture."""
    cam = H264Camera(gop=4)
    msgs = [cam.frame(image=_smooth(i), zones=[FACE])[0] for i in range(8)]
    received = [ReceivedFrame(m, True, preroll=m.header.seq < 6) for m in msgs[4:]]
    out = list(shown_frames(received, Renderer(None)))
    assert [got.msg.header.seq for got, _ in out] == [6, 7]
    assert all(shown is not None and not shown.is_gap for _, shown in out)
    # without the preroll, #6 could not be decoded: a gap
    out = list(shown_frames(received[2:], Renderer(None)))
    assert [shown.gap for _, shown in out] == [GAP_WAITING, GAP_WAITING]


# --------------------------------------------------------------------------- web viewer


def _hub():
    """A FrameHub without its relay thread and sockets: frames are handed to ``take``."""
    import threading

    from veilcam.common.lifecycle import StopFlag
    from veilcam.viewer.framehub import FrameHub
    from veilcam.viewer.freshness import Freshness

    hub = FrameHub.__new__(FrameHub)
    hub.latest, hub.counter, hub.cameras, hub.on_frame = {}, 0, ["cam1"], None
    hub.stop, hub.freshness = StopFlag(), Freshness(5.0)
    hub._lock, hub.gop, hub._joins, hub.joined = threading.Lock(), {}, set(), {}
    return hub


def test_web_live_stream_and_snapshot_decode_the_current_group_of_pictures(tmp_path) -> None:
    """A stream opened mid-GOP shows the current picture at once (decoded from the hub's
    frames since the keyframe); a frame missing means no part until the next keyframe, and
    the status says ``gap``; the snapshot decodes the group afresh."""
    import asyncio

    from veilcam.common.home import Home
    from veilcam.viewer.sessions import Sessions
    from veilcam.viewer.webapp import ViewerApp
    from veilcam.viewer.webexports import Exports

    cam = H264Camera(gop=4)
    msgs = [cam.frame(image=_smooth(i), zones=[FACE])[0] for i in range(10)]
    expected = Renderer(None)
    pictures = {m.header.seq: expected.render(m).image for m in msgs[:7]}
    hub = _hub()
    for msg in msgs[:6]:  # #0..#5; the hub keeps #4, #5 (from the keyframe #4)
        hub.take(ReceivedFrame(msg, True))
    assert [f.received.msg.header.seq for f in hub.frames_after("cam1", 0)] == [4, 5]
    home = Home(tmp_path)
    app = ViewerApp(home, hub, 95, Sessions(), Exports(home, tmp_path / "exports"), ["x:1"])
    hub.want("cam1")
    assert hub._joins == set()  # a keyframe is held: no live join needed

    def jpeg_psnr(part: bytes, seq: int) -> float:
        """PSNR of a part against frame ``seq``'s picture, which must be the closest one."""
        jpeg = part[part.index(b"\r\n\r\n") + 4 : -2]
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        scores = {s: cv2.PSNR(image, p) for s, p in pictures.items()}
        assert max(scores, key=scores.get) == seq, scores
        return scores[seq]

    async def run() -> None:
        stream = app._live("cam1", None)
        assert jpeg_psnr(await anext(stream), 5) > 28  # at once: #5, decoded from #4
        hub.take(ReceivedFrame(msgs[6], True))
        assert jpeg_psnr(await anext(stream), 6) > 28
        hub.take(ReceivedFrame(msgs[7], False, "bad_signature: x"))  # never shown
        hub.take(ReceivedFrame(msgs[8], True))  # #8 keyframe: a picture again
        pictures[8] = Renderer(None).render(msgs[8]).image
        assert jpeg_psnr(await anext(stream), 8) > 28
        assert app.gaps["cam1"] == ""
        await stream.aclose()

    asyncio.run(run())
    # the snapshot: the held group (#8) decoded afresh
    jpeg, gap = app._snapshot_v2("cam1", None)
    assert jpeg is not None and gap == ""
    # a frame missing mid-GOP: the stream's renderer gives no picture, says why
    renderer = Renderer()
    assert app._render_jpeg(renderer, [_latest(msgs[4]), _latest(msgs[5])], None)[0]
    assert app._render_jpeg(renderer, [_latest(msgs[7])], None) == (None, GAP_WAITING)
    # a hub that holds no keyframe: no snapshot, and a stream opening asks for a live join
    hub2 = _hub()
    hub2.take(ReceivedFrame(msgs[8], False, "bad_signature: x"))
    hub2.take(ReceivedFrame(msgs[9], True))
    assert hub2.frames_after("cam1", 0) == []
    app2 = ViewerApp(home, hub2, 95, Sessions(), Exports(home, tmp_path / "e2"), ["x:1"])
    assert app2._snapshot_v2("cam1", None) == (None, GAP_WAITING)
    hub2.want("cam1")
    assert hub2._joins == {"cam1"}


def _latest(msg: FrameMessage):
    from veilcam.viewer.framehub import Latest

    return Latest(ReceivedFrame(msg, True), msg.header.seq + 1, 0.0)


def test_headless_writes_a_gap_line_instead_of_a_picture(tmp_path) -> None:
    import json

    from veilcam.common.home import Home
    from veilcam.viewer.headless import _FrameWriter

    cam = H264Camera(gop=4)
    msgs = [cam.frame(image=_smooth(i), zones=[FACE])[0] for i in range(6)]
    writer = _FrameWriter(Home(tmp_path), tmp_path, None, None, True)
    received = [ReceivedFrame(m, True) for m in msgs if m.header.seq != 2]  # #2 lost
    with open(tmp_path / "frames.jsonl", "w") as jsonl:
        for got, shown in shown_frames(received, writer.renderer):
            writer.take(got, shown, jsonl)
    lines = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert [(d["seq"], d.get("gap")) for d in lines] == [
        (0, None),
        (1, None),
        (3, "waiting for keyframe"),
        (4, None),
        (5, None),
    ]
    assert writer.written == 4 and writer.gaps == 1
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["0.png", "1.png", "4.png", "5.png"]
