"""The Prometheus endpoints of store and camera, scraped during a real run (node processes,
e2e): counters move."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SAMPLE_CLIP, free_port_base, make_home

pytestmark = pytest.mark.e2e


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape_when(port: int, ready, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        try:
            last = scrape(port)
        except OSError:
            last = {}
        if last and ready(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"metrics on port {port} never got ready: {sorted(last)[:40]}")


def test_store_and_camera_metrics_move_during_a_run(tmp_path, procs) -> None:
    home = make_home(tmp_path, SAMPLE_CLIP, users=("alice",))
    store_port = free_port_base(2)
    camera_port = store_port + 1
    procs.start_ready("store", "store", "--home", str(home), "--metrics-port", str(store_port))
    assert procs.ready("store")["metrics"] == f"http://127.0.0.1:{store_port}/metrics"
    procs.start(
        "camera", "camera", "--home", str(home), "--loop", "--metrics-port", str(camera_port)
    )

    archived = ("veilcam_store_frames_archived_total", (("camera", "cam1"),))
    first = scrape_when(store_port, lambda m: m.get(archived, 0) >= 5)
    later = scrape_when(store_port, lambda m: m.get(archived, 0) >= first[archived] + 10)
    assert later[archived] > first[archived]
    relayed = ("veilcam_store_messages_relayed_total", ())
    assert later[relayed] >= later[archived]  # every archived frame was relayed, plus envelopes
    assert later[("veilcam_store_epoch_recipients", (("camera", "cam1"),))] == 1  # alice
    assert later[("veilcam_store_archive_bytes", ())] > 0
    assert later[("veilcam_store_disk_free_bytes", ())] > 0
    for reason in ("bad_signature", "replay", "malformed", "storage_error"):  # at 0, alertable
        assert later[("veilcam_store_messages_rejected_total", (("reason", reason),))] == 0
    for reason in ("login_failed", "login_rate_limited"):  # alertable before the first
        assert later[("veilcam_store_login_refusals_total", (("reason", reason),))] == 0
    assert (
        "veilcam_store_stage_latency_seconds",
        (("quantile", "0.5"), ("stage", "verify")),
    ) in later

    cam = (("camera", "cam1"),)
    published = ("veilcam_camera_frames_published_total", cam)
    c1 = scrape_when(camera_port, lambda m: m.get(published, 0) >= 5)
    c2 = scrape_when(camera_port, lambda m: m.get(published, 0) >= c1[published] + 10)
    acked = ("veilcam_camera_messages_acked_total", cam)
    assert c2[acked] > c1[acked]
    assert c2[("veilcam_camera_frames_captured_total", cam)] >= c2[published]
    assert c2[("veilcam_camera_epoch_recipients", cam)] == 1
    assert (
        c2[("veilcam_camera_frames_dropped_total", (("camera", "cam1"), ("reason", "spool_full")))]
        == 0
    )
    assert ("veilcam_camera_spool_messages", cam) in c2
    assert (
        "veilcam_camera_stage_latency_seconds",
        (("camera", "cam1"), ("quantile", "0.99"), ("stage", "zones")),
    ) in c2


def test_metrics_port_in_use_is_logged_and_the_store_runs_on(tmp_path, procs) -> None:
    import socket

    home = make_home(tmp_path, SAMPLE_CLIP, users=())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        procs.start_ready("store", "store", "--home", str(home), "--metrics-port", str(port))
        assert procs.ready("store")["metrics"] == ""  # running on, without metrics
        log = procs.log("store")
        assert f"cannot serve store metrics on 127.0.0.1:{port}" in log
        assert "Traceback" not in log
