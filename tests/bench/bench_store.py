"""Store throughput: put/get of 4 MiB objects, file vs S3 over HTTP (moto), as ratios;
and the one-writer check a worker makes twice per window (a head read,
:func:`schemas.head.check_still_newest`) against one 4 MiB object put on the same backend.

Run: ``.venv/bin/python -m tests.bench.bench_store [--objects N] [--size-mib M]``.
The baseline is the file store measured in the same run; each row shows MiB/s and its
ratio to that baseline. Takes a few seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import uuid

from moto.server import ThreadedMotoServer

from connectors.store import ObjectStore, open_store
from schemas.head import Head, check_still_newest
from tests.bench.common import Figure
from tests.fixtures.s3 import BUCKET, CREDENTIALS

CHECKS = 200


def check_seconds(store: ObjectStore) -> float:
    """Median seconds of one one-writer check (the head names an older window)."""
    head = Head("bench", 0, 99, "0" * 64, 1)
    store.put(head.key, head.to_json())
    times = []
    for _ in range(CHECKS):
        start = time.perf_counter()
        check_still_newest(store, "bench", 100)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(store: ObjectStore, blobs: list[bytes]) -> tuple[float, float]:
    """MiB/s of putting then getting every blob once."""
    mib = sum(len(b) for b in blobs) / (1024 * 1024)
    start = time.perf_counter()
    for i, blob in enumerate(blobs):
        store.put(f"bench/{i:04d}", blob)
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    for i, blob in enumerate(blobs):
        if store.get(f"bench/{i:04d}") != blob:
            raise SystemExit(f"{store.url}: object {i} came back different")
    get_s = time.perf_counter() - start
    return mib / put_s, mib / get_s


def run(objects: int, size_mib: int) -> dict[str, tuple[float, float, float]]:
    """(put, get) MiB/s and one-writer check seconds per backend, the file store first
    (the baseline)."""
    blobs = [os.urandom(size_mib * 1024 * 1024) for _ in range(objects)]
    os.environ.update(CREDENTIALS)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        with tempfile.TemporaryDirectory() as tmp:
            stores: dict[str, ObjectStore] = {
                "file (baseline)": open_store(f"file://{tmp}"),
                "s3 (moto, HTTP)": open_store(
                    f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}?endpoint={host}:{port}"
                    "&secure=false&region=us-east-1&create_bucket=true"
                ),
            }
            return {
                name: (*measure(store, blobs), check_seconds(store))
                for name, store in stores.items()
            }
    finally:
        server.stop()


def figures(quick: bool = False) -> list[Figure]:
    """S3-over-HTTP put and get throughput as ratios to the file store (the harness API)."""
    results = run(2 if quick else 8, 4)
    (base_put, base_get, _), (put, get, check) = (
        results["file (baseline)"],
        results["s3 (moto, HTTP)"],
    )
    object_put = 4 / put  # seconds of one 4 MiB put
    return [
        Figure(
            "store",
            "S3 (moto) put ÷ file put, 4 MiB objects",
            put / base_put,
            detail=f"{put:.0f} vs {base_put:.0f} MiB/s",
        ),
        Figure(
            "store",
            "S3 (moto) get ÷ file get, 4 MiB objects",
            get / base_get,
            detail=f"{get:.0f} vs {base_get:.0f} MiB/s",
        ),
        Figure(
            "store",
            "S3 (moto) one-writer check ÷ 4 MiB object put",
            check / object_put,
            detail=f"{check * 1e3:.2f} ms check (median of {CHECKS}), "
            f"{object_put * 1e3:.1f} ms put; a window makes 2 checks and 3 object puts",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=8, help="objects per backend (8)")
    parser.add_argument("--size-mib", type=int, default=4, help="object size in MiB (4)")
    args = parser.parse_args()
    results = run(args.objects, args.size_mib)
    base_put, base_get, _ = results["file (baseline)"]
    print(f"{args.objects} objects x {args.size_mib} MiB, put then get")
    print(f"{'backend':<20} {'put MiB/s':>10} {'ratio':>7} {'get MiB/s':>10} {'ratio':>7} check ms")
    for name, (put, get, check) in results.items():
        print(
            f"{name:<20} {put:>10.1f} {put / base_put:>7.3f} {get:>10.1f} "
            f"{get / base_get:>7.3f} {check * 1e3:8.3f}"
        )


if __name__ == "__main__":
    main()
