"""Object-storage figures against a real SeaweedFS on loopback (tests/seaweed.py): upload
throughput of closed segments (single PUT and multipart, SHA-256 checked by the server, HEAD
confirmation included) and the time to read what a playback start needs from the bucket (one
RANGE answer: 50 records merged into one range GET), against the same read from local disk.

    python bench/objectstore.py [--mb 64] [--runs 5]

Prints one JSON document. Loopback and one disk: the figures are the store's own cost (hashing,
HTTP, SeaweedFS), not a network's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from veilcam.common.config import StoreConfig  # noqa: E402
from veilcam.store_node.objectstore import Credentials, ObjectStore, file_sha256  # noqa: E402

from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3  # noqa: E402

RECORD = 40_000  # about one 720p JPEG frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64, help="segment size for the single PUT")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = SeaweedS3(tmp / "seaweed").start()
        try:
            server.make_bucket("bench")
            s3 = StoreConfig.model_validate(
                {
                    "archive": {
                        "backend": "s3",
                        "s3": {
                            "endpoint_url": server.endpoint,
                            "bucket": "bench",
                            "multipart_mb": 16,
                        },
                    }
                }
            ).archive.s3
            store = ObjectStore(s3, Credentials(ACCESS_KEY, SECRET_KEY))
            out = {"uploads": [], "reads": {}}
            for label, mb in (("single_put", min(args.mb, 16)), ("multipart_16mb_parts", args.mb)):
                path = tmp / f"{label}.vseg"
                path.write_bytes(os.urandom(mb * 2**20))
                speeds = []
                for run in range(args.runs):
                    t0 = time.perf_counter()
                    digest, size = file_sha256(path)
                    store.upload(path, f"veilcam/b/{label}-{run}.vseg", digest, size)
                    speeds.append(size / 2**20 / (time.perf_counter() - t0))
                out["uploads"].append(
                    {
                        "kind": label,
                        "mb": mb,
                        "mb_per_s_median": round(statistics.median(speeds), 1),
                    }
                )
            local = tmp / "single_put.vseg"
            key = "veilcam/b/single_put-0.vseg"
            size = local.stat().st_size
            for label, length in (("one_record", RECORD), ("range_answer_50_records", 50 * RECORD)):
                remote_ms, local_ms = [], []
                for i in range(args.runs * 4):
                    offset = (i * 7919 * RECORD) % (size - length)
                    t0 = time.perf_counter()
                    store.read_range(key, offset, length)
                    remote_ms.append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    with open(local, "rb") as fh:
                        fh.seek(offset)
                        fh.read(length)
                    local_ms.append((time.perf_counter() - t0) * 1000)
                out["reads"][label] = {
                    "bytes": length,
                    "bucket_ms_median": round(statistics.median(remote_ms), 2),
                    "local_ms_median": round(statistics.median(local_ms), 3),
                }
            print(json.dumps(out, indent=2))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
