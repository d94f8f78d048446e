"""What the wheel installs (pyproject.toml): one top-level name, the declared licence, the
default configs, and not the sample-clip builder."""

from __future__ import annotations

import tomllib
from pathlib import Path

from veilcam.common.provision import config_template

import veilcam

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_installs_under_veilcam_from_its_folder() -> None:
    setuptools = PROJECT["tool"]["setuptools"]
    packages = setuptools["packages"]
    assert all(p == "veilcam" or p.startswith("veilcam.") for p in packages), packages
    for package, folder in setuptools["package-dir"].items():
        assert package in packages
        assert (ROOT / folder / "__init__.py").is_file(), folder
    # every folder of the layout is shipped; the builder's folder is no package
    assert set(setuptools["package-dir"].values()) >= {
        "veilcam", "common", "camera_node", "store_node", "viewer", "sample_videos", "config",
    }  # fmt: skip
    assert not (ROOT / "sample_videos" / "tools" / "__init__.py").exists()


def test_one_version_and_the_declared_licence() -> None:
    assert "version" in PROJECT["project"]["dynamic"]
    assert PROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "veilcam.__version__"}
    assert veilcam.__version__.count(".") == 2
    for name in PROJECT["project"]["license-files"]:
        assert "Permission is hereby granted" in (ROOT / name).read_text()


def test_init_writes_the_config_files_of_config_folder() -> None:
    for role in ("camera", "store", "viewer"):
        text = config_template(role).template
        assert text == (ROOT / "config" / f"{role}.toml").read_text()
        assert "Reference: docs/CONFIG.md" in text
