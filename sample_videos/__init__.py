"""The bundled demo clip (see README.md in this folder for its sources and licences)."""

from pathlib import Path

DEMO_CLIP = Path(__file__).resolve().parent / "people.mp4"
