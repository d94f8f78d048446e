"""Load, scaled down: three cameras into one store with a live unlocked viewer, the store
SIGKILLed and restarted mid-run; nothing may be lost and the archive must verify.

It runs bench/load.py's scenario (not a copy of it). test_delivery.py covers one camera and
no viewer; this covers several cameras resending at once into one restarted store. The full
run (eight 720p cameras, all faults, memory and CPU over time) is ``python bench/load.py``;
figures in docs/RELIABILITY.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.load import Fault, LoadOptions, run_load
from tests.conftest import SAMPLE_CLIP

pytestmark = pytest.mark.e2e


def test_three_cameras_lose_nothing_when_the_store_is_killed_mid_run(tmp_path: Path) -> None:
    r = run_load(
        LoadOptions(
            seconds=10,
            cameras=3,
            fps=10,
            clip=SAMPLE_CLIP,
            viewers=1,
            faults=[Fault(0.4, "kill_store")],
            sample_s=1.0,
            workdir=tmp_path,
            quiet=True,
        )
    )
    assert r["store_exit_codes"][0] == -9 and len(r["store_exit_codes"]) == 2
    assert r["verify"]["intact"], r["verify"]["problems"]
    for cam in r["cameras"]:
        assert cam["published"] >= 50, cam
        assert cam["lost"] == 0 and cam["declared_dropped"] == 0, cam
        assert cam["in_order"] and cam["archived"] == cam["indexed"], cam
        assert cam["exit_code"] == 0, cam
    assert r["tracebacks"] == []
    viewer = r["viewers"][0]
    assert viewer["verified"] > 0 and viewer["failed_verification"] == 0, viewer
    # memory growth is judged over minutes (bench/load.py), not over ten seconds
    assert [f for f in r["failures"] if "memory" not in f] == []
