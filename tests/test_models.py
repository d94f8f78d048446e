"""`veilcam models fetch`: the pinned sha256 decides what gets installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from camera_node.detect import HaarDetector, YuNetDetector, create_face_detector
from camera_node.models import YUNET_FILENAME, fetch_yunet, find_yunet_model
from common.config import FacesSection
from common.errors import VeilcamError
from tests.conftest import YUNET, require_media


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


def test_auto_uses_cached_yunet_else_haar_with_warning(tmp_path: Path, caplog) -> None:
    assert find_yunet_model() is None  # tests run with an empty XDG cache
    assert isinstance(create_face_detector(FacesSection()), HaarDetector)
    assert "FALLING BACK TO HAAR" in caplog.text
    model = require_media(YUNET)
    fetch_yunet(model.as_uri(), progress=False)  # into the test's XDG cache
    assert isinstance(create_face_detector(FacesSection()), YuNetDetector)


def test_yunet_backend_without_model_is_a_clear_error() -> None:
    with pytest.raises(VeilcamError, match="no model was found"):
        create_face_detector(FacesSection(backend="yunet"))
    with pytest.raises(VeilcamError, match="not found"):
        create_face_detector(FacesSection(model="/nonexistent/yunet.onnx"))
