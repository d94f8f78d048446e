"""A hostile store and hostile images against the viewer's own code (the attacks below).

3. The store chose the log-in's scrypt parameters and salt (viewer/login.py): a store could
   answer SALT with N=2^14, r=1, p=1 and one salt for everyone, and the viewer derived and
   sent a login secret from them. Now: a floor at the defaults, the local keystore's
   parameters when it exists, else the salt pinned at the first successful log-in.
6. Images were decoded before their size was checked against the signed width/height: a
   small file could claim a huge picture. Now the PNG IHDR / JPEG SOFn header is read first.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import threading

import numpy as np
import pytest
import zmq
from veilcam.common import deployment as loaded
from veilcam.common.errors import FormatError, KeystoreError
from veilcam.common.format import ImageCodec
from veilcam.common.home import Home
from veilcam.common.imagecodec import decode_image, encode_image
from veilcam.common.transport import curve_pair

from tests.conftest import PASSWORD, SAMPLE_CLIP, make_home


class FakeStore:
    """A store holding the real store key (the threat: the store itself), answering SALT with
    ``salt_answer`` and LOGIN with the user's real keystore; records every request."""

    def __init__(self, home: Home, keystore_json: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.curve_server = True
        self.sock.curve_publickey, self.sock.curve_secretkey = curve_pair(
            loaded.transport_key(home, "store", "store")
        )
        self.sock.bind(loaded.viewer_config(home).viewer.query)
        self.keystore_json = keystore_json
        self.salt_answer: dict = json.loads(keystore_json)["kdf"]
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(100):
                continue
            identity, command, *rest = self.sock.recv_multipart()
            self.requests.append(command)
            if command == b"SALT":
                reply = [b"OK", json.dumps(self.salt_answer).encode()]
            elif command == b"LOGIN":
                reply = [b"OK", self.keystore_json.encode()]
            elif command == b"TIME":  # a flood: far more parts than any answer has
                reply = [b"OK", *([b"x" * 1024] * 5000)]
            else:
                reply = [b"ERR", b"unknown query"]
            self.sock.send_multipart([identity, *reply])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        self.ctx.term()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("login")
    home = Home(make_home(root, SAMPLE_CLIP, users=("alice",)))
    keystore = home.keystore_path("alice").read_text()
    # a second viewer home of the same deployment without alice's keystore (she logs in
    # through the store from there)
    remote = Home(root / "remote")
    shutil.copytree(home.root, remote.root)
    shutil.rmtree(remote.users_dir / "alice")
    store = FakeStore(home, keystore)
    try:
        yield home, remote, store
    finally:
        store.close()


@pytest.fixture(autouse=True)
def _own_context(monkeypatch):
    """The viewer's links use zmq.Context.instance(); give them a fresh one here, so that a
    shared context left busy by earlier in-process tests cannot hold these up."""
    ctx = zmq.Context()
    monkeypatch.setattr(zmq.Context, "instance", classmethod(lambda cls, *a, **k: ctx))
    yield
    ctx.destroy(linger=0)


def _weak(kdf: dict, **changes) -> dict:
    return {**kdf, **changes}


def test_a_store_cannot_lower_the_kdf_cost(deployment) -> None:
    from veilcam.viewer.login import login

    home, remote, store = deployment
    genuine = dict(store.salt_answer)
    one_salt = base64.b64encode(b"\x00" * 16).decode()
    try:
        for answer in (
            _weak(genuine, n=2**14, r=1, p=1, salt=one_salt),
            _weak(genuine, n=2**14),
            _weak(genuine, r=1),
            _weak(genuine, salt=base64.b64encode(b"s" * 8).decode()),
        ):
            store.salt_answer = answer
            for where in (home, remote):
                store.requests.clear()
                with pytest.raises(KeystoreError, match="below the minimum"):
                    login(where, "alice", PASSWORD)
                assert store.requests == [b"SALT"]  # no login secret was derived or sent
    finally:
        store.salt_answer = genuine


def test_the_local_keystores_parameters_win(deployment) -> None:
    from veilcam.viewer.login import login

    home, _, store = deployment
    genuine = dict(store.salt_answer)
    try:
        store.salt_answer = _weak(genuine, salt=base64.b64encode(os.urandom(16)).decode())
        store.requests.clear()
        with pytest.raises(KeystoreError, match="differ from your keystore"):
            login(home, "alice", PASSWORD)
        assert store.requests == [b"SALT"]
    finally:
        store.salt_answer = genuine
    assert login(home, "alice", PASSWORD).name == "alice"


def test_a_salt_other_than_the_first_log_ins_is_refused(deployment) -> None:
    from veilcam.viewer.login import SALT_CACHE, login

    _, remote, store = deployment
    cache = remote.state_dir / SALT_CACHE
    cache.unlink(missing_ok=True)
    assert login(remote, "alice", PASSWORD).name == "alice"  # first log-in pins the salt
    assert cache.stat().st_mode & 0o777 == 0o600
    assert json.loads(cache.read_text())["alice"]["salt"] == store.salt_answer["salt"]
    genuine = dict(store.salt_answer)
    try:
        store.salt_answer = _weak(genuine, salt=base64.b64encode(os.urandom(16)).decode())
        store.requests.clear()
        with pytest.raises(KeystoreError, match="differ from the first log-in"):
            login(remote, "alice", PASSWORD)
        assert store.requests == [b"SALT"]
    finally:
        store.salt_answer = genuine
    assert login(remote, "alice", PASSWORD).name == "alice"


def _tiny_png_claiming(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR is then edited to claim another size (CRC left wrong:
    the header is what a decoder allocates from)."""
    data = bytearray(encode_image(np.zeros((8, 8, 3), np.uint8), ImageCodec.PNG))
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    return bytes(data)


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode_image(np.zeros((8, 8, 3), np.uint8), ImageCodec.JPEG))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def test_images_are_checked_against_their_signed_size_before_decoding(monkeypatch) -> None:
    import cv2
    import veilcam.common.imagecodec as codec

    decoded: list[int] = []
    real = cv2.imdecode
    monkeypatch.setattr(
        codec.cv2, "imdecode", lambda buf, flags: decoded.append(len(buf)) or real(buf, flags)
    )
    for data, kind in (
        (_tiny_png_claiming(60000, 60000), ImageCodec.PNG),
        (_jpeg_claiming(60000, 60000), ImageCodec.JPEG),
        (_jpeg_claiming(9, 8), ImageCodec.JPEG),
        (b"\xff\xd8\xff\xda", ImageCodec.JPEG),
        (b"not an image", ImageCodec.PNG),
    ):
        with pytest.raises(FormatError, match="not decoded"):
            decode_image(data, kind, 8, 8)
    assert decoded == []  # nothing reached the decoder
    for kind in (ImageCodec.PNG, ImageCodec.JPEG):
        image = np.full((8, 8, 3), 100, np.uint8)
        assert decode_image(encode_image(image, kind), kind, 8, 8).shape == (8, 8, 3)
    assert len(decoded) == 2


def test_render_and_export_refuse_a_public_image_of_another_size() -> None:
    """Through the viewer's render (the browser, headless and export paths): a signed frame
    whose public JPEG is 8x8 but whose signed header says 320x240 is refused undecoded."""
    from veilcam.camera_node.protect import EncodeSettings, protect_frame
    from veilcam.camera_node.redact import make_redactor
    from veilcam.viewer.render import render

    from tests.factory import Camera, textured

    cam = Camera()
    msg = protect_frame(
        textured(),
        [],
        camera_id="cam1",
        seq=0,
        capture_time_us=1_700_000_000_000_000,
        epoch=cam.epoch,
        prev_digest=bytes(32),
        redactor=make_redactor("pixelate"),
        settings=EncodeSettings(),
        signing_key=cam.key,
    )
    assert render(msg, None).image.shape == (240, 320, 3)
    fake = dataclasses.replace(msg, public_image=_jpeg_claiming(30000, 30000))
    with pytest.raises(FormatError, match="not decoded"):
        render(fake, None)


def test_an_answer_above_the_caps_is_refused_before_it_is_parsed(deployment) -> None:
    """A store answering with 5000 parts (ZeroMQ's per-part limit does not bound their
    number): the query client drops it part by part and says so; nothing is parsed."""
    from veilcam.common.query import QueryError
    from veilcam.common.queryclient import MAX_ANSWER_PARTS, StoreQueryClient

    home, _, _ = deployment
    client = StoreQueryClient.connect(home, timeout_s=10)
    try:
        with pytest.raises(QueryError, match=f"5001 part\\(s\\).*{MAX_ANSWER_PARTS} parts"):
            client.time()
    finally:
        client.close()
