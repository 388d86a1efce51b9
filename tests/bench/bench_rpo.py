"""RPO p50/p99 at half of the measured capacity, with 1 s windows (goal: p99 ≤ 2 s).

A real ``kcdp worker`` (subprocess, 1 s windows, directory store) on an embedded Tansu
broker, and an async ``InterceptedVolume`` writing 64 KiB writes:

1. capacity: write ``--capacity-mib`` as fast as possible; capacity = those bytes ÷ the
   time from the first write until the manifest covering the last write exists;
2. steady load: write at half that rate for ``--seconds``, paced every 20 ms.

RPO at instant t is t - the event time of the oldest event not yet durable at t (0 when
none is), computed afterwards from the manifests: an event is durable from its window's
``created_us``. Sampled every 50 ms over the steady phase after a 2 s warm-up; the figures
are the median and the 99th percentile of those samples.

Run: ``.venv/bin/python -m tests.bench.bench_rpo [--seconds 30] [--quick]``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from connectors.intercept import InterceptedVolume
from connectors.store import open_store
from connectors.store.base import ObjectStore
from infra.broker import EmbeddedBroker, free_port
from schemas.events import now_us
from schemas.manifest import Manifest, list_window_keys, load_manifest
from tests.bench.common import Figure, print_figures, quick_parser
from tests.worker_process import WorkerProcess

VOLUME = "rpo"
WRITE = 64 * 1024
SIZE = 256 << 20


def manifests(store: ObjectStore) -> list[Manifest]:
    return [load_manifest(store, key) for _, _, key in list_window_keys(store, VOLUME)]


def wait_durable(store: ObjectStore, offset: int, timeout: float) -> Manifest:
    """The first manifest whose window ends at or after ``offset`` (polls the store)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list_window_keys(store, VOLUME)
        if found and found[-1][1] >= offset:
            key = next(k for _, last, k in found if last >= offset)
            return load_manifest(store, key)
        time.sleep(0.1)
    raise SystemExit(f"offset {offset} not durable within {timeout:.0f}s")


def rpo_samples(windows: list[Manifest], start_us: int, end_us: int, step_us: int) -> list[float]:
    """RPO in seconds at every ``step_us`` in ``[start_us, end_us]`` (module docstring)."""
    samples = []
    ordered = sorted(windows, key=lambda m: m.first_offset)
    t = start_us
    i = 0
    while t <= end_us:
        while i < len(ordered) and ordered[i].created_us <= t:
            i += 1
        # windows are built in offset order: the first one not yet durable at t holds the
        # oldest event at risk (if its first event already happened)
        at_risk = ordered[i].first_time_us if i < len(ordered) else None
        samples.append(0.0 if at_risk is None or at_risk > t else (t - at_risk) / 1e6)
        t += step_us
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(seconds: float, capacity_mib: int, root: Path) -> dict[str, float]:
    block = os.urandom(WRITE)
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        store_url = f"file://{root / 'store'}"
        store = open_store(store_url)
        vol = InterceptedVolume(
            root / "vol.img",
            VOLUME,
            SIZE,
            bootstrap_servers=bootstrap,
            mode="async",
            control_socket=False,
        )
        worker = WorkerProcess(
            bootstrap=bootstrap,
            store_url=store_url,
            topic="kcdp.writes",
            workdir=root / "worker",
            web_port=free_port(),
            window_seconds=1.0,
        )
        with vol, worker:
            worker.wait_ready(timeout=120)
            vol.write(0, block)
            wait_durable(store, vol.flush(), timeout=180)  # the worker joined and works
            total = capacity_mib << 20
            t0 = now_us()
            at = 0
            for _ in range(total // WRITE):
                vol.write(at, block)
                at = (at + WRITE) % SIZE
            last = wait_durable(store, vol.flush(), timeout=600)
            capacity = total / ((last.created_us - t0) / 1e6)
            rate = capacity / 2
            start = now_us()
            sent = 0
            while (now_us() - start) / 1e6 < seconds:
                due = rate * (now_us() - start) / 1e6
                while sent + WRITE <= due:
                    vol.write(at, block)
                    at = (at + WRITE) % SIZE
                    sent += WRITE
                time.sleep(0.02)
            end = now_us()
            wait_durable(store, vol.flush(), timeout=120)
        samples = rpo_samples(manifests(store), start + 2_000_000, end, 50_000)
        store.close()
    return {
        "capacity": capacity,
        "rate": sent / ((end - start) / 1e6),
        "p50": statistics.median(samples),
        "p99": percentile(samples, 0.99),
        "samples": len(samples),
    }


def figures(quick: bool = False, *, seconds: float | None = None) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="kcdp-bench-rpo-") as tmp:
        m = measure(seconds or (10.0 if quick else 30.0), 32 if quick else 256, Path(tmp))
    mib = 1 << 20
    detail = (
        f"capacity {m['capacity'] / mib:.1f} MiB/s, load {m['rate'] / mib:.1f} MiB/s of 64 KiB "
        f"writes, {int(m['samples'])} samples"
    )
    return [
        Figure("rpo", "RPO p50 at half capacity, 1 s windows", m["p50"], "s", detail=detail),
        Figure(
            "rpo",
            "RPO p99 at half capacity, 1 s windows",
            m["p99"],
            "s",
            goal=("<=", 2.0),
            detail=detail,
        ),
    ]


def main() -> None:
    parser = quick_parser(__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="steady phase length (30; quick 10)")
    args = parser.parse_args()
    print_figures(figures(args.quick, seconds=args.seconds))


if __name__ == "__main__":
    main()
