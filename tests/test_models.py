"""Face-detector models: YuNet ships in the package; `veilcam models fetch` checks the pinned
sha256; Haar only when configured; no usable detector covers whole frames, never a weaker one."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest
import veilcam.camera_node.models as models
from veilcam.camera_node.detect import HaarDetector, YuNetDetector, create_face_detector
from veilcam.camera_node.detector_unavailable import UnavailableDetector
from veilcam.camera_node.models import (
    PACKAGED_YUNET,
    YUNET_FILENAME,
    YUNET_SHA256,
    YUNET_SIZE,
    fetch_yunet,
    find_yunet_model,
    model_cache_dir,
)
from veilcam.camera_node.zones import iou
from veilcam.common.config import FacesSection
from veilcam.common.errors import VeilcamError
from veilcam.common.format import ZoneClass
from veilcam.common.secretfiles import sha256_file

from tests.conftest import (
    MEDIA,
    ROOT,
    SAMPLE_CLIP,
    YUNET,
    cli,
    free_port_base,
    make_home,
    require_media,
)

PHOTO = MEDIA / "faces_annotated" / "2008_001009.jpg"
PHOTO_FACES = [(125, 214, 90, 91), (145, 79, 76, 76)]  # left, top, width, height (training.xml)


def test_fetch_checks_the_pinned_hash(tmp_path: Path) -> None:
    model = require_media(YUNET)
    path = fetch_yunet(model.as_uri(), dest_dir=tmp_path, progress=False)
    assert path == tmp_path / YUNET_FILENAME and path.read_bytes() == model.read_bytes()


def test_fetch_refuses_a_file_with_another_hash(tmp_path: Path) -> None:
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not the model" * 100)
    with pytest.raises(VeilcamError, match="expected 8f2383e4"):
        fetch_yunet(fake.as_uri(), dest_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache" / YUNET_FILENAME).exists()


def test_unreachable_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VeilcamError, match="cannot download"):
        fetch_yunet((tmp_path / "missing.onnx").as_uri(), dest_dir=tmp_path, progress=False)


# --------------------------------------------------------------------------- packaged model


def test_the_package_ships_the_pinned_model_and_its_licences() -> None:
    assert PACKAGED_YUNET.stat().st_size == YUNET_SIZE
    assert sha256_file(PACKAGED_YUNET) == YUNET_SHA256
    folder = PACKAGED_YUNET.parent
    assert "MIT License" in (folder / "LICENSE_opencv_zoo_face_detection_yunet.txt").read_text()
    assert "Apache License" in (folder / "LICENSE_libfacedetection.train.txt").read_text()
    # declared as package data, so wheels and installs carry it
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = project["tool"]["setuptools"]["package-data"]["veilcam.camera_node"]
    rel = PACKAGED_YUNET.relative_to(ROOT / "camera_node")
    assert any(rel.match(g) for g in globs), globs


def _finds_a_photo_face(detector) -> None:
    image = cv2.imread(str(require_media(PHOTO)))
    boxes = [(b.x, b.y, b.w, b.h) for b in detector.detect(image)]
    for face in PHOTO_FACES:
        assert any(iou(_box(face), _box(b)) > 0.3 for b in boxes), (face, boxes)


def _box(t):
    from veilcam.camera_node.detect import Box

    return Box(*t)


def test_fresh_install_without_network_detects_with_yunet(monkeypatch) -> None:
    assert not model_cache_dir().exists()  # tests run with an empty XDG cache

    def no_network(*args, **kwargs):
        raise AssertionError("no network on this machine")

    monkeypatch.setattr("socket.create_connection", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    assert find_yunet_model() == PACKAGED_YUNET
    detector = create_face_detector(FacesSection())
    assert isinstance(detector, YuNetDetector)
    _finds_a_photo_face(detector)


FRESH = """
import socket, sys
def no_network(*args, **kwargs):
    raise OSError("no network on this machine")
socket.socket.connect = socket.create_connection = no_network
import cv2
from veilcam.camera_node.detect import create_face_detector
from veilcam.common.config import FacesSection
detector = create_face_detector(FacesSection())
faces = detector.detect(cv2.imread(sys.argv[1]))
print(detector.name, len(faces))
"""


@pytest.mark.e2e
def test_fresh_install_without_network_in_a_new_process(tmp_path: Path) -> None:
    photo = require_media(PHOTO)
    env = {
        k: v
        for k, v in os.environ.items()
        if "proxy" not in k.lower() and k not in ("XDG_CACHE_HOME", "HOME")
    }
    env |= {"XDG_CACHE_HOME": str(tmp_path / "empty-cache"), "HOME": str(tmp_path / "home")}
    r = subprocess.run(
        [sys.executable, "-c", FRESH, str(photo)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    name, count = r.stdout.split()
    assert name == "yunet" and int(count) >= 2, r.stdout + r.stderr
    assert "ERROR" not in r.stderr and not (tmp_path / "empty-cache").exists()


def test_the_cache_comes_before_the_packaged_copy() -> None:
    model = require_media(YUNET)
    cached = fetch_yunet(model.as_uri(), progress=False)  # into the test's XDG cache
    assert find_yunet_model() == cached != PACKAGED_YUNET
    assert isinstance(create_face_detector(FacesSection()), YuNetDetector)


def test_the_packaged_hash_is_checked_once_per_process(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(models, "_digests", {})
    monkeypatch.setattr(models, "sha256_file", lambda p: calls.append(p) or sha256_file(p))
    for _ in range(3):
        assert find_yunet_model() == PACKAGED_YUNET
    assert calls == [PACKAGED_YUNET]


# --------------------------------------------------------------------------- haar on request


def test_haar_only_when_configured(caplog) -> None:
    caplog.set_level(logging.WARNING)
    assert isinstance(create_face_detector(FacesSection(backend="haar")), HaarDetector)
    assert "faces.backend = 'haar'" in caplog.text
    for backend in ("auto", "yunet"):
        assert isinstance(create_face_detector(FacesSection(backend=backend)), YuNetDetector)
    assert create_face_detector(FacesSection(enabled=False)) is None


# --------------------------------------------------------------------------- no usable detector


def _assert_covers_everything(detector, caplog, words: str) -> None:
    assert isinstance(detector, UnavailableDetector) and not isinstance(detector, HaarDetector)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("NO FACE DETECTOR" in r.getMessage() for r in errors), caplog.text
    assert words in caplog.text
    with pytest.raises(VeilcamError, match=words):
        detector.detect(np.zeros((120, 160, 3), np.uint8))


def test_no_usable_detector_means_whole_frames_covered(tmp_path: Path, monkeypatch, caplog) -> None:
    """The camera's own path: config -> scanner -> zone finder -> zones of a frame."""
    from veilcam.camera_node.facescan import create_scanner
    from veilcam.camera_node.zonefinder import ZoneFinder

    monkeypatch.setattr(models, "PACKAGED_YUNET", tmp_path / "gone" / YUNET_FILENAME)
    scanner = create_scanner(FacesSection())
    assert isinstance(scanner.coarse, UnavailableDetector)
    finder = ZoneFinder(scanner, margin=0.2, hold_frames=3, max_lag_s=2.0)
    try:
        finder.submit(np.zeros((120, 160, 3), np.uint8), [], "frame 1")
        [(payload, _, zones)] = list(finder.drain())
        assert payload == "frame 1"
        assert [(z.x, z.y, z.w, z.h, z.zone_class) for z in zones] == [
            (0, 0, 160, 120, ZoneClass.FULL)
        ]
        assert finder.fail_closed["detector_failed"] == 1
    finally:
        finder.close()
    assert "no usable YuNet model" in caplog.text


def _corrupt_copy(path: Path) -> Path:
    data = bytearray(PACKAGED_YUNET.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: it may well still load
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def test_corrupt_packaged_model_covers_whole_frames(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(models, "PACKAGED_YUNET", _corrupt_copy(tmp_path / YUNET_FILENAME))
    assert find_yunet_model() is None  # treated as absent, never loaded
    _assert_covers_everything(create_face_detector(FacesSection()), caplog, "corrupt")


def test_missing_packaged_model_covers_whole_frames(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(models, "PACKAGED_YUNET", tmp_path / "gone" / YUNET_FILENAME)
    _assert_covers_everything(
        create_face_detector(FacesSection(backend="yunet")), caplog, "no usable YuNet model"
    )


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated"])
def test_broken_cached_model_is_passed_over_for_the_packaged_one(damage: str, caplog) -> None:
    cached = model_cache_dir() / YUNET_FILENAME
    if damage == "flipped_byte":
        _corrupt_copy(cached)
    else:
        cached.parent.mkdir(parents=True)
        cached.write_bytes(PACKAGED_YUNET.read_bytes()[:5000])
    assert find_yunet_model() == PACKAGED_YUNET  # never loaded, said loudly
    assert isinstance(create_face_detector(FacesSection()), YuNetDetector)
    assert "does not match the pinned sha256" in caplog.text


def test_opencv_without_yunet_covers_whole_frames(monkeypatch, caplog) -> None:
    monkeypatch.delattr(cv2, "FaceDetectorYN")
    _assert_covers_everything(create_face_detector(FacesSection()), caplog, "no cv2.FaceDetectorYN")


# --------------------------------------------------------------------------- explicit path


def test_configured_model_that_is_missing_or_broken_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VeilcamError, match="not found"):
        create_face_detector(FacesSection(model="/nonexistent/yunet.onnx"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model" * 100)
    with pytest.raises(VeilcamError, match=r"(?s)cannot load YuNet model .*\(config faces.model\)"):
        create_face_detector(FacesSection(model=str(garbage)))


def test_camera_with_a_broken_configured_model_exits_2(tmp_path: Path) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model" * 100)
    cfg = home / "config" / "camera.toml"
    lines = [x for x in cfg.read_text().splitlines() if not x.startswith("model = ")]
    text = "\n".join(lines).replace("[faces]\n", f'[faces]\nmodel = "{garbage}"\n')
    cfg.write_text(text + "\n")
    r = cli("camera", "--home", str(home), "--max-frames", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "faces.model" in r.stderr and str(garbage) in r.stderr


# --------------------------------------------------------------------------- doctor


def test_doctor_reports_the_packaged_model_as_ok(tmp_path: Path) -> None:
    home = tmp_path / "home"
    base = free_port_base(4)
    r = cli(
        "init",
        str(home),
        "--camera-id",
        "cam1",
        "--source",
        str(SAMPLE_CLIP),
        "--port-base",
        str(base),
        "--web-port",
        str(base + 3),
    )
    assert r.returncode == 0, r.stderr
    r = cli("doctor", "--home", str(home))
    line = next(
        x for x in r.stdout.splitlines() if x.startswith(("OK model", "WARN model", "FAIL model"))
    )
    assert line.startswith(f"OK model: YuNet {PACKAGED_YUNET} (shipped with veilcam"), line
