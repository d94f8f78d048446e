"""Exports of H.264 cameras (format version 2), in-process against the store's query handlers:
a redacted export is a remux (every MP4 sample byte for byte a signed public access unit,
from the keyframe at or before --from) that ``veilcam verify`` checks sample by sample; an
unlocked one is decoded, composed and re-encoded, and stays 'derived, not covered'."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from collections import Counter
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from veilcam.camera_node.protect import Epoch, VideoEncoders, protect_frame_h264
from veilcam.camera_node.redact import make_redactor
from veilcam.camera_node.videoenc import H264Settings
from veilcam.camera_node.zones import Zone
from veilcam.common import deployment
from veilcam.common.format import ZERO_DIGEST, FrameMessage, ZoneClass
from veilcam.common.home import Home
from veilcam.common.keywrap import Grant, Identity, Recipient
from veilcam.common.queryclient import StoreQueryClient
from veilcam.common.secretfiles import sha256_file
from veilcam.common.signing import load_signing_key
from veilcam.store_node.accounts import AccountStore
from veilcam.store_node.archive import Archive
from veilcam.store_node.queries import StoreQueries
from veilcam.viewer import playback
from veilcam.viewer.export import (
    MP4_TIME_BASE,
    _Remux,
    annexb_nal_units,
    check_video_samples,
    export,
    length_prefixed_nal_units,
)
from veilcam.viewer.render import Renderer

from tests.conftest import SAMPLE_CLIP, make_home
from tests.factory import textured
from veilcam import cli as veilcam_cli

FACE = Zone(40, 30, 64, 80, ZoneClass.FACE)
GOP = 4


class _QueriesLink:
    """A query link answered in-process by the store's handlers."""

    def __init__(self, q: StoreQueries) -> None:
        self.q = q

    def request(self, parts: list[bytes], timeout_s: float = 10.0) -> list[bytes]:
        return self.q.answer(parts, "viewer:viewer")


class _Camera:
    """The home's camera in H.264 mode, frames captured now (its certificate covers them)."""

    def __init__(self, home: Home) -> None:
        self.key = load_signing_key(home.camera_key_path("cam1"))
        self.epoch = Epoch.new()
        self.video = VideoEncoders(H264Settings(keyframe_s=GOP / 10), 10.0)
        self.seq, self.prev = 0, ZERO_DIGEST
        self.t0 = time.time_ns() // 1000
        self.originals: list[np.ndarray] = []

    def frame(self) -> FrameMessage:
        image = cv2.GaussianBlur(textured(seed=self.seq), (7, 7), 2.0)
        self.originals.append(image.copy())
        msg = protect_frame_h264(
            image,
            [FACE],
            camera_id="cam1",
            seq=self.seq,
            capture_time_us=self.t0 + self.seq * 100_000,
            epoch=self.epoch,
            prev_digest=self.prev,
            redactor=make_redactor("solid"),
            video=self.video,
            signing_key=self.key,
        )
        self.seq, self.prev = self.seq + 1, msg.digest
        return msg


@pytest.fixture
def archived(tmp_path: Path, monkeypatch):
    """A home whose store archived 14 version-2 frames (keyframes #0, #4, #8, #12), a user
    granted every class, and ArchiveReader talking to the store's handlers in-process."""
    home = Home(make_home(tmp_path, SAMPLE_CLIP, users=()))
    archive = Archive(home.resolve(deployment.store_config(home).archive.path))
    accounts = AccountStore(home.accounts_path, deployment.account_secret(home))
    q = StoreQueries(home, archive, accounts, rejects=Counter(), clock=lambda: 42)
    cam = _Camera(home)
    alice = Identity("alice", X25519PrivateKey.generate())
    grant = Grant(Recipient("alice", alice.private_key.public_key()), frozenset(ZoneClass))
    archive.append_envelope(cam.epoch.envelope(cam.key, "cam1", 0, [grant]))
    frames = [cam.frame() for _ in range(14)]
    for msg in frames:
        archive.append_frame(msg)
    archive.commit()
    monkeypatch.setattr(
        playback.StoreQueryClient, "connect", lambda *a, **k: StoreQueryClient(_QueriesLink(q))
    )
    yield home, frames, cam, alice
    accounts.close()
    archive.close()


def _samples(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def _decoded(path: Path) -> list[np.ndarray]:
    from veilcam.common.colorspace import i420_to_bgr

    with av.open(str(path)) as container:
        return [
            i420_to_bgr(f.reformat(format="yuv420p").to_ndarray())
            for f in container.decode(video=0)
        ]


def _verify(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = veilcam_cli.main(["verify", *args])
    return code, out.getvalue()


def test_redacted_export_is_a_bit_exact_remux_from_the_keyframe(archived, tmp_path) -> None:
    home, frames, _, _ = archived
    t = [f.header.capture_time_us for f in frames]
    out = tmp_path / "redacted.mp4"
    manifest = export(home, "cam1", t[6], t[12], out)
    # from the keyframe #4 at or before --from (#6): #4, #5 are preroll, in the video too
    assert manifest["video"]["kind"] == "remux"
    assert manifest["frames"] == 9 and manifest["preroll_frames"] == 2
    assert manifest["from_us"] == t[4] and manifest["to_us"] == t[12]
    samples = _samples(out)
    assert len(samples) == 9
    for sample, msg in zip(samples, frames[4:13], strict=True):
        # no re-encode: the NAL units are the signed AU's, byte for byte (AVCC lengths in
        # the MP4 instead of Annex-B start codes)
        assert length_prefixed_nal_units(sample) == annexb_nal_units(msg.public_image)
    # the MP4 plays: decoded back, the very pictures the viewer shows
    renderer = Renderer(None)
    shown = [renderer.render(m).image for m in frames[4:13]]
    decoded = _decoded(out)
    assert len(decoded) == 9
    assert all(np.array_equal(a, b) for a, b in zip(decoded, shown, strict=True))
    # verify checks the samples against the signed AUs
    bundle = out.with_name(out.name + ".bundle")
    check = check_video_samples(bundle, deployment.trusted_cameras(home, history=True))
    assert check is not None and check.problems == [] and check.samples == 9
    assert (check.first_seq, check.last_seq) == (4, 12)
    code, text = _verify(str(bundle), "--trust", str(home.root))
    assert code == 0, text
    assert "video: every sample is a signed access unit" in text
    assert "every video sample is a signed access unit" in text.splitlines()[-1]
    assert "NOT covered" not in text


def _swap_video(bundle: Path, video: Path, replacement: Path) -> None:
    """Replace the MP4 and fix its hash in the (unsigned) manifest, as a forger would."""
    shutil.copyfile(replacement, video)
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["video"]["sha256"] = sha256_file(video)
    (bundle / "manifest.json").write_text(json.dumps(doc))


def test_a_swapped_mp4_in_a_redacted_bundle_fails_verify(archived, tmp_path) -> None:
    home, frames, _, _ = archived
    t = [f.header.capture_time_us for f in frames]
    out = tmp_path / "a.mp4"
    export(home, "cam1", t[4], t[11], out)
    bundle = out.with_name(out.name + ".bundle")
    assert _verify(str(bundle), "--trust", str(home.root))[0] == 0
    forgeries: dict[str, Path] = {}
    # another range's (validly signed) AUs
    export(home, "cam1", t[0], t[3], tmp_path / "other.mp4")
    forgeries["other range"] = tmp_path / "other.mp4"
    # the same pictures re-encoded (what a doctored video would be)
    reencoded = tmp_path / "reencoded.mp4"
    with av.open(str(reencoded), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for image in _decoded(out):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode(None))
    forgeries["re-encoded"] = reencoded
    # signed AUs, but one left out mid-GOP: it would decode corrupted
    cut = tmp_path / "cut.mp4"
    remux = _Remux(cut)
    for msg in frames[4:6] + frames[7:12]:
        remux.add(msg)
    remux.close()
    forgeries["cut"] = cut
    original = tmp_path / "original.mp4"
    shutil.copyfile(out, original)
    for name, forged in forgeries.items():
        _swap_video(bundle, out, forged)
        code, text = _verify(str(bundle), "--trust", str(home.root))
        assert code == 1, (name, text)
        assert "PROBLEM bundle: video:" in text and "NOT INTACT" in text, name
        assert "every sample is a signed access unit" not in text, name
    _swap_video(bundle, out, original)
    assert _verify(str(bundle), "--trust", str(home.root))[0] == 0


def _custom_mp4(path: Path, payloads: list[tuple[bytes, bool]], pts: list[int], size) -> None:
    """An MP4 muxed by FFmpeg with chosen sample times (dts in order): what a forger can make."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_mux_stream(
            "h264", rate=30, width=size[0], height=size[1], time_base=MP4_TIME_BASE
        )
        for i, (payload, keyframe) in enumerate(payloads):
            packet = av.Packet(payload)
            packet.stream, packet.time_base = stream, MP4_TIME_BASE
            packet.dts, packet.pts, packet.is_keyframe = i * 3000, pts[i], keyframe
            container.mux(packet)


def test_forged_mp4s_that_show_what_the_frames_do_not_fail_verify(archived, tmp_path) -> None:
    """The forgeries of a review, each swapped into a real bundle with the unsigned manifest
    edited: a whole GOP left out; unsigned samples hidden behind an edit list; frames an hour
    late; a mirrored picture; extra samples. Every one is NOT INTACT."""
    import os
    import struct

    home, frames, _, _ = archived
    t = [f.header.capture_time_us for f in frames]
    out = tmp_path / "a.mp4"
    export(home, "cam1", t[0], t[13], out)
    bundle = out.with_name(out.name + ".bundle")
    assert _verify(str(bundle), "--trust", str(home.root))[0] == 0
    size = (frames[0].header.width, frames[0].header.height)
    forgeries: dict[str, Path] = {}
    gop_cut = tmp_path / "gop-cut.mp4"  # frames #8..#11 dropped: all signed, all keyframe-led
    remux = _Remux(gop_cut)
    for msg in frames[0:8] + frames[12:14]:
        remux.add(msg)
    remux.close()
    forgeries["a whole GOP left out"] = gop_cut
    hidden = tmp_path / "hidden.mp4"  # unsigned samples a default demuxer skips (edit list)
    payloads = [
        (m.public_image if (i == 0 or i >= 8) else b"\x00\x00\x00\x01\x41" + os.urandom(500),
         m.is_keyframe)
        for i, m in enumerate(frames[0:14])
    ]  # fmt: skip
    shift = [8 if m.header.seq < 4 else (-4 if m.header.seq < 12 else 0) for m in frames[0:14]]
    _custom_mp4(hidden, payloads, [(i + s + 12) * 3000 for i, s in enumerate(shift)], size)
    forgeries["unsigned samples behind an edit list"] = hidden
    warp = tmp_path / "warp.mp4"  # every AU signed, frame #6 on an hour later
    signed_payloads = [(m.public_image, m.is_keyframe) for m in frames[0:14]]
    late = [i * 3000 + (3600 * 90_000 if i >= 6 else 0) for i in range(14)]
    _custom_mp4(warp, signed_payloads, late, size)
    forgeries["frames an hour late"] = warp
    mirrored = tmp_path / "mirrored.mp4"  # the real remux, its track matrix flipped
    data = bytearray(out.read_bytes())
    matrix_at = data.find(b"tkhd") + 4 + 40
    data[matrix_at : matrix_at + 36] = struct.pack(
        ">9i", -0x10000, 0, 0, 0, 0x10000, 0, size[0] << 16, 0, 0x40000000
    )
    mirrored.write_bytes(bytes(data))
    forgeries["mirrored"] = mirrored
    longer = tmp_path / "longer.mp4"  # every frame, then the first GOP again
    remux = _Remux(longer)
    for msg in frames[0:14]:
        remux.add(msg)
    for msg in frames[0:4]:
        remux.add(msg)
    remux.close()
    forgeries["extra samples"] = longer
    original = tmp_path / "original.mp4"
    shutil.copyfile(out, original)
    for name, forged in forgeries.items():
        _swap_video(bundle, out, forged)
        code, text = _verify(str(bundle), "--trust", str(home.root))
        assert code == 1, (name, text)
        assert "NOT INTACT" in text and "every sample is a signed access unit" not in text, name
    _swap_video(bundle, out, original)
    assert _verify(str(bundle), "--trust", str(home.root))[0] == 0


def test_unlocked_export_is_decoded_composed_and_reencoded(archived, tmp_path) -> None:
    home, frames, cam, alice = archived
    t = [f.header.capture_time_us for f in frames]
    out = tmp_path / "unlocked.mp4"
    manifest = export(home, "cam1", t[6], t[12], out, identity=alice)
    assert manifest["video"]["kind"] == "reencoded" and manifest["unlocked_for"] == "alice"
    # decoded from keyframe #4, shown from #6 (the preroll is in the bundle, not the video)
    assert manifest["frames"] == 7 and manifest["preroll_frames"] == 2
    assert manifest["from_us"] == t[6]
    assert manifest["zones"] == 7 == manifest["zones_unlocked"]
    decoded = _decoded(out)
    assert len(decoded) == 7
    box = (slice(FACE.y, FACE.y + FACE.h), slice(FACE.x, FACE.x + FACE.w))
    for image, original in zip(decoded, cam.originals[6:13], strict=True):
        assert cv2.PSNR(image[box], original[box]) > 25  # the face, unlocked
    bundle = out.with_name(out.name + ".bundle")
    assert check_video_samples(bundle, deployment.trusted_cameras(home, history=True)) is None
    code, text = _verify(str(bundle), "--trust", str(home.root))
    assert code == 0, text
    assert "is NOT covered by their signatures" in text
    assert "the video is not covered by the signatures" in text.splitlines()[-1]
