"""Config validation: every problem names the file, the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from veilcam.common.config import CameraConfig, StoreConfig, ViewerConfig, load_config
from veilcam.common.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "camera.toml"
    path.write_text(text)
    return path


GOOD = '[camera]\nid = "cam1"\nsource = "0"\n'


def test_minimal_camera_config_gets_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD), CameraConfig)
    assert cfg.redaction.style == "solid" and cfg.keys.rotate_seconds == 60
    assert cfg.faces.enabled and cfg.encoding.zone_codec == "jpeg"


@pytest.mark.parametrize(
    "text, key, reason",
    [
        (GOOD + "colour = 1\n", "camera.colour", "unknown key"),
        (GOOD + '[redaction]\nstyle = "smudge"\n', "redaction.style", "Input should be"),
        (GOOD + "[faces]\nmargin = -1\n", "faces.margin", "greater than or equal to 0"),
        (GOOD + "[encoding]\njpeg_quality = 101\n", "encoding.jpeg_quality", "less than or equal"),
        ('[camera]\nid = "cam1"\n', "camera.source", "required key is missing"),
        ('[camera]\nid = "bad id!"\nsource = "0"\n', "camera.id", "letters, digits"),
        (
            GOOD + '[[zones]]\nrect = [0.5, 0.5, 0.6, 0.1]\nunits = "fraction"\n',
            "zones[0]",
            "within 0..1",
        ),
        (
            GOOD + '[[zones]]\nrect = [0, 0, 10, 10]\nclass = "cats"\n',
            "zones[0].class",
            "unknown zone class",
        ),
        (GOOD + '[store]\ningest = "localhost"\n', "store.ingest", "should match pattern"),
    ],
)
def test_bad_value_names_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, CameraConfig)
    message = str(err.value)
    assert str(path) in message and f"key '{key}'" in message and reason in message


def test_invalid_toml_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[camera\n"), CameraConfig)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", StoreConfig)


def test_store_and_viewer_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load_config(empty, StoreConfig).archive.fsync_max_records == 30
    assert load_config(empty, ViewerConfig).viewer.web_host == "127.0.0.1"


def test_config_reference_is_generated_from_the_schema() -> None:
    from veilcam.common.configdocs import render_config_docs

    docs = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"
    assert docs.read_text() == render_config_docs(), (
        "docs/CONFIG.md is stale: run 'veilcam config-docs --out docs/CONFIG.md'"
    )
