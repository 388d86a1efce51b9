"""Increments agent throughput per worker vs a plain per-event Faust agent (same run).

For 4 KiB and 64 KiB writes, a workload of WRITE events for 4 volumes is produced to a
topic of the embedded Tansu broker first. Then, on that topic:

* **plain**: a minimal Faust agent that iterates the stream event by event and only
  decodes each value (the baseline), in its own process;
* **kcdp**: ``kcdp worker`` (one process, file store on local disk, 32 MiB / 2 s windows),
  measured from its first processed batch (``kcdp_events_total`` > 0) until every
  volume's last manifest is in the store. The full workload is a whole
  number of 32 MiB windows per volume, so every window closes by size; with ``--quick``
  the last, partly filled windows close by time and that wait is included.

Figures: MB/s and events/s of each, the kcdp/plain ratio, the throughput of a worker that
seals its store (``--encryption-key-file``) over the same worker unsealed (goal >= 0.9;
best of :data:`SEALED_RUNS` interleaved runs of each, so one noisy moment does not decide),
and objects and bytes stored per GiB written. Worker start-up time is excluded from both.
The 4 KiB goal is ≥ 100 MB/s, and the same goal as a ratio to the plain agent of the
machine it was set on (~7k events/s).
``python -m tests.bench.bench_agent [--quick]``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.bench.common import Figure, print_figures, quick_parser

ROOT = Path(__file__).resolve().parents[2]
VOLUMES = 4
VOLUME_SIZE = 1 << 30
#: The 4 KiB goal of 100 MB/s was set where the plain agent does ~7k events/s (28.7 MB/s);
#: machines differ by more than 2x, so the same goal as a ratio within one run.
PLAIN_RATIO_GOAL = round(100e6 / (7000 * 4096), 2)
#: runs of the worker with and without encryption (interleaved; the best of each counts)
SEALED_RUNS = 3


def _produce(bootstrap: str, topic: str, write_size: int, total: int) -> dict[str, int]:
    """Produce ``total`` bytes of WRITEs; return each volume's last Kafka offset."""
    from confluent_kafka import Producer

    from connectors.kafka import ensure_topics, producer_config
    from schemas.codec import AvroCodec
    from tests.streams_support import Volume

    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1})
    p = Producer(producer_config({"bootstrap.servers": bootstrap}, **{"linger.ms": 20}))
    codec = AvroCodec()
    vols = [Volume(f"bench{i}", VOLUME_SIZE) for i in range(VOLUMES)]
    rng = random.Random(1)
    payload = rng.randbytes(64 << 20)  # incompressible; far beyond zstd's match window
    last: dict[str, int] = {}

    def done(err: object, msg: object) -> None:
        assert err is None, err
        last[msg.key().decode()] = max(last.get(msg.key().decode(), -1), msg.offset())  # type: ignore[attr-defined]

    events = [e for v in vols for e in v.start()]
    for i in range(total // write_size):
        v = vols[i % VOLUMES]
        off = rng.randrange(VOLUME_SIZE // write_size) * write_size
        start = (i * write_size) % (len(payload) - write_size)
        events.append(v.write(off, payload[start : start + write_size], dt_us=50))
        if len(events) >= 2000:
            for e in events:
                p.produce(
                    topic, key=e.group.encode(), value=codec.encode(e.to_record()), on_delivery=done
                )
                p.poll(0)
            events.clear()
    for e in events:
        p.produce(topic, key=e.group.encode(), value=codec.encode(e.to_record()), on_delivery=done)
    assert p.flush(60) == 0
    return last


def _plain(bootstrap: str, topic: str, count: int, out: Path) -> None:
    """Child process: a per-event Faust agent that only decodes; writes (first, last) times."""
    import faust

    from schemas.codec import AvroCodec

    codec = AvroCodec()
    app = faust.App(
        f"plain-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{bootstrap}",
        value_serializer="raw",
        web_enabled=False,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=16 << 20,
        datadir=str(out.parent / "plain-data"),
    )
    topic_ = app.topic(topic, value_type=bytes, value_serializer="raw")
    seen = [0, 0.0]

    @app.agent(topic_)
    async def decode(stream):  # type: ignore[no-untyped-def]
        async for value in stream:
            codec.decode(value)
            seen[0] += 1
            if seen[0] == 1:
                seen[1] = time.perf_counter()
            if seen[0] == count:
                out.write_text(f"{seen[1]} {time.perf_counter()}")
                os.kill(os.getpid(), signal.SIGTERM)

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def _run_plain(bootstrap: str, topic: str, count: int, tmp: Path) -> float:
    out = tmp / f"plain-{topic}.txt"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.bench.bench_agent",
            "--plain",
            bootstrap,
            topic,
            str(count),
            str(out),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        proc.wait(600)
    finally:
        proc.kill()
    first, last = map(float, out.read_text().split())
    return last - first


def _run_kcdp(
    bootstrap: str,
    topic: str,
    last: dict[str, int],
    tmp: Path,
    key_file: Path | None = None,
    *,
    run: int = 0,
) -> tuple[float, int, int]:
    """Seconds from the first to the last processed record; objects and bytes stored.
    With ``key_file`` the worker seals its store (encryption at rest)."""
    from connectors.store import open_store
    from infra.broker import free_port
    from schemas.manifest import list_window_keys
    from tests.worker_process import WorkerProcess, metric_values

    tag = f"{topic}-{run}-sealed" if key_file else f"{topic}-{run}"
    store_dir = tmp / f"store-{tag}"
    sealing = ["--encryption-key-file", str(key_file)] if key_file else []
    w = WorkerProcess(
        bootstrap=bootstrap,
        store_url=f"file://{store_dir}",
        topic=topic,
        workdir=tmp / f"w-{tag}",
        web_port=free_port(),
        window_seconds=2.0,
        extra=[
            "--window-bytes",
            "32M",
            "--group-id",
            f"bench-{tag}",
            "--log-level",
            "WARNING",
            *sealing,
        ],
    )
    store = open_store(f"file://{store_dir}", key_file=str(key_file) if key_file else None)
    with w:
        w.wait_ready(120)
        while True:
            m = metric_values(w.metrics_text())
            if m.get(("kcdp_events_total", ()), 0) > 0:
                start = time.perf_counter()
                break
            time.sleep(0.02)
        while True:  # every window durable (the store, not /metrics: no load on the worker)
            keys = {v: list_window_keys(store, v) for v in last}
            if all(k and k[-1][1] == last[v] for v, k in keys.items()):
                break
            time.sleep(0.05)
        end = time.perf_counter()
    infos = list(store.list(""))
    store.close()
    return end - start, len(infos), sum(i.size for i in infos)


def figures(quick: bool = False) -> list[Figure]:
    from connectors.store.keyring import generate_key_file
    from infra.broker import EmbeddedBroker

    total = (16 if quick else 256) << 20
    out: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        key_file = tmp / "key"
        generate_key_file(key_file)
        broker = EmbeddedBroker()
        broker.start()
        try:
            for size in (4096, 65536):
                topic = f"bench-{size}-{uuid.uuid4().hex[:6]}"
                last = _produce(broker.bootstrap_servers, topic, size, total)
                count = total // size + 3 * VOLUMES
                plain_s = _run_plain(broker.bootstrap_servers, topic, count, tmp)
                # interleaved runs, best of each: a noisy neighbour during one run must
                # not decide the encrypted / unencrypted ratio
                kcdp_runs: list[float] = []
                sealed_runs: list[float] = []
                for run in range(1 if quick else SEALED_RUNS):
                    kcdp_s, objects, stored = _run_kcdp(
                        broker.bootstrap_servers, topic, last, tmp, run=run
                    )
                    kcdp_runs.append(kcdp_s)
                    sealed_runs.append(
                        _run_kcdp(broker.bootstrap_servers, topic, last, tmp, key_file, run=run)[0]
                    )
                kcdp_s, sealed_s = min(kcdp_runs), min(sealed_runs)
                label = f"{size // 1024} KiB"
                mb = total / 1e6
                out += [
                    Figure(
                        "agent",
                        f"plain agent {label} events/s",
                        count / plain_s,
                        "ev/s",
                        detail=f"{count} events in {plain_s:.2f}s",
                    ),
                    Figure(
                        "agent",
                        f"kcdp worker {label} events/s",
                        count / kcdp_s,
                        "ev/s",
                        detail=f"{count} events in {kcdp_s:.2f}s",
                    ),
                    Figure(
                        "agent",
                        f"kcdp worker {label} MB/s",
                        mb / kcdp_s,
                        "MB/s",
                        goal=(">=", 100.0) if size == 4096 else None,
                        detail=f"plain agent {mb / plain_s:.1f} MB/s",
                    ),
                    Figure(
                        "agent",
                        f"kcdp / plain throughput {label}",
                        plain_s / kcdp_s,
                        goal=(">=", PLAIN_RATIO_GOAL) if size == 4096 else None,
                        detail="ratio of events/s, same run"
                        + (
                            " (goal: 100 MB/s over the issue's ~7k ev/s plain agent)"
                            if size == 4096
                            else ""
                        ),
                    ),
                    Figure(
                        "agent",
                        f"kcdp encrypted / unencrypted throughput {label}",
                        kcdp_s / sealed_s,
                        goal=(">=", 0.9),
                        detail=f"{count} events in {sealed_s:.2f}s sealed (AES-256-GCM) vs "
                        f"{kcdp_s:.2f}s plaintext, best of {len(kcdp_runs)} interleaved runs",
                    ),
                    Figure(
                        "agent",
                        f"objects per GiB written {label}",
                        objects * (1 << 30) / total,
                        "",
                        detail=f"{objects} objects for {total >> 20} MiB",
                    ),
                    Figure(
                        "agent",
                        f"bytes stored per byte written {label}",
                        stored / total,
                        detail="fwd + bwd + log + manifests + checkpoints; random data",
                    ),
                ]
        finally:
            broker.stop()
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--plain":
        _plain(sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5]))
        return
    parser = quick_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    print_figures(figures(args.quick))


if __name__ == "__main__":
    main()
