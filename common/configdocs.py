"""Generate docs/CONFIG.md from the config schema, so the reference cannot drift from the code."""

from __future__ import annotations

from pydantic import BaseModel
from veilcam.common.config import CameraConfig, StoreConfig, ViewerConfig


def _section(model: type[BaseModel], table: str, lines: list[str]) -> None:
    rows = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            _section(ann, f"{table}.{name}" if table else name, lines)
            continue
        if name == "zones":
            from veilcam.common.config import StaticZoneSection

            _section(StaticZoneSection, "[zones]", lines)
            continue
        key = info.alias or name
        default = "required" if info.is_required() else f"`{info.default!r}`"
        rows.append(f"| `{key}` | {default} | {info.description or ''} |")
    if rows:
        lines += [f"### `[{table}]`", "", "| key | default | meaning |", "|---|---|---|", *rows, ""]


def render_config_docs() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from the config schema by `veilcam config-docs --out docs/CONFIG.md`;",
        "do not edit by hand. Unknown keys are errors. Paths are relative to the home.",
        "",
    ]
    for title, model in (
        ("camera.toml", CameraConfig),
        ("store.toml", StoreConfig),
        ("viewer.toml", ViewerConfig),
    ):
        lines += [f"## {title}", ""]
        _section(model, "", lines)
    return "\n".join(lines)
