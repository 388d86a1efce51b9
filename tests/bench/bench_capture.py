"""Capture throughput as ratios against baselines measured in the same run.

Run: ``.venv/bin/python -m tests.bench.bench_capture [--mib N] [--nbd-mib N]``.

* API: InterceptedVolume writes ÷ a raw confluent-kafka producer of the same bytes (same
  durable settings), 4 KiB and 64 KiB writes. ``async`` is compared with a raw producer
  that queues everything then flushes; ``sync`` with one that waits for each ack.
* NBD: the capture plugin ÷ a plain nbdkit Python plugin without capture
  (tests/bench/plain_nbd_plugin.py), driven by nbdcopy (4 KiB requests, queue depth 1,
  one connection; 1 MiB requests, default parallelism) and qemu-img convert.
* TLS: InterceptedVolume writes to ``kcdp broker --tls-cert/--tls-key`` (Tansu behind
  stunnel, infra/stunnel.py, its own process) ÷ the same writes to Tansu in plaintext,
  async 64 KiB and sync 4 KiB writes. Report only (no goal): the price of TLS plus
  stunnel's extra hop on the embedded broker.

``--rounds N`` times every baseline/case pair N times back to back and prints medians
(the per-pair ratio's median), which resists load bursts from other processes.

Sync NBD at queue depth 1 is bounded by latency, not CPU: every request waits for one
Kafka acknowledgement (acks=all, linger 0), itself several times a plain request's time.

Prints a Markdown table. Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from statistics import median

from connectors.intercept import InterceptedVolume
from connectors.intercept.nbd import NbdExport
from connectors.kafka import ensure_topics, producer_config
from infra.broker import EmbeddedBroker
from tests.bench.common import Figure
from tests.fixtures.secure_broker import start_broker
from tests.fixtures.tls import make_tls_files

MiB = 1024 * 1024
PLAIN_PLUGIN = Path(__file__).with_name("plain_nbd_plugin.py")


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def raw_producer(bootstrap: str, total: int, size: int, *, wait_each: bool) -> float:
    """Seconds for a raw durable producer to publish ``total`` bytes in ``size`` records."""
    from confluent_kafka import Producer

    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1})
    extra = {"linger.ms": 0} if wait_each else {}
    producer = Producer(producer_config({"bootstrap.servers": bootstrap, **extra}))
    payload = os.urandom(size)

    producer.produce(topic, b"warm-up", b"raw")  # connect before timing, as the API does
    producer.flush(30)
    acked: list[int] = []

    def on_delivery(err: object, msg: object) -> None:
        acked.append(1)

    def run() -> None:
        for i in range(total // size):
            while True:
                try:
                    producer.produce(topic, payload, b"raw", on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.01)
            while wait_each and len(acked) <= i:
                producer.poll(1.0)
        if producer.flush(60) != 0:
            raise SystemExit("raw producer did not deliver everything")

    return timed(run)


def api(
    bootstrap: str,
    tmp: Path,
    total: int,
    size: int,
    mode: str,
    client_config: dict[str, str] | None = None,
) -> float:
    """Seconds for InterceptedVolume to capture ``total`` bytes in ``size`` writes."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    payload = os.urandom(size)
    with InterceptedVolume(
        tmp / f"{name}.img",
        name,
        total,
        bootstrap_servers=bootstrap,
        topic=f"bench.api.{name}",
        mode=mode,  # type: ignore[arg-type]
        client_config=client_config,
        control_socket=False,
    ) as vol:

        def run() -> None:
            for i in range(total // size):
                vol.write(i * size, payload)
            vol.flush()

        return timed(run)


def nbd_run(uri: str, src: Path, tool: str) -> None:
    if tool == "nbdcopy-4k-qd1":
        cmd = ["nbdcopy", "--request-size=4096", "--requests=1", "--connections=1"]
        cmd += ["--threads=1", "--flush", str(src), uri]
    elif tool == "nbdcopy-1m":
        cmd = ["nbdcopy", "--request-size=1048576", "--flush", str(src), uri]
    else:
        cmd = ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), uri]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)


def plain_nbd(tmp: Path, src: Path, tool: str) -> float:
    target = tmp / f"plain-{uuid.uuid4().hex[:6]}.img"
    with open(target, "wb") as f:
        f.truncate(src.stat().st_size)
    sock = tmp / "plain.sock"
    pid = tmp / "plain.pid"
    pid.unlink(missing_ok=True)
    sock.unlink(missing_ok=True)
    cmd = ["nbdkit", "-f", "--exit-with-parent", "-P", str(pid), "-U", str(sock)]
    proc = subprocess.Popen([*cmd, "python", str(PLAIN_PLUGIN), f"file={target}"])
    try:
        while not pid.exists():
            if proc.poll() is not None:
                raise SystemExit("plain nbdkit failed to start")
            time.sleep(0.02)
        return timed(lambda: nbd_run(f"nbd+unix:///?socket={sock}", src, tool))
    finally:
        proc.terminate()
        proc.wait()
        target.unlink()


def capture_nbd(bootstrap: str, tmp: Path, src: Path, tool: str, mode: str) -> float:
    name = f"nbd-{uuid.uuid4().hex[:8]}"
    image = tmp / f"{name}.img"
    settings = {
        "path": str(image),
        "volume": name,
        "size": src.stat().st_size,
        "bootstrap_servers": bootstrap,
        "topic": f"bench.nbd.{name}",
        "mode": mode,
    }
    with NbdExport(settings, unix=tmp / f"{name}.sock") as exp:
        seconds = timed(lambda: nbd_run(exp.uri, src, tool))
    image.unlink()
    return seconds


def paired(
    rounds: int, base: Callable[[], float], case: Callable[[], float]
) -> tuple[float, float, float]:
    """Median seconds of ``base`` and ``case`` and the median of their per-round ratio.

    Each round times the baseline then the case back to back, so a burst of load from
    other processes skews one pair rather than the whole comparison.
    """
    pairs = [(base(), case()) for _ in range(rounds)]
    return median(b for b, _ in pairs), median(c for _, c in pairs), median(b / c for b, c in pairs)


def measure(
    mib: int, nbd_mib: int, qd1_mib: int, rounds: int = 1
) -> list[tuple[str, str, float, float, float]]:
    """Rows (case, baseline, MiB/s, baseline MiB/s, ratio) of every case.

    ``rounds`` > 1 repeats every (baseline, case) pair and reports medians.
    """
    logging.basicConfig(level=logging.ERROR)
    for tool in ("nbdkit", "nbdcopy", "qemu-img"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    rows: list[tuple[str, str, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="kcdp-bench-") as tmpdir, EmbeddedBroker() as broker:
        tmp, bootstrap = Path(tmpdir), broker.bootstrap_servers
        for size in (4096, 64 * 1024):
            total = mib * MiB if size > 4096 else mib * MiB // 4
            for mode, wait_each in (("async", False), ("sync", True)):
                base, got, ratio = paired(
                    rounds,
                    partial(raw_producer, bootstrap, total, size, wait_each=wait_each),
                    partial(api, bootstrap, tmp, total, size, mode),
                )
                label = f"API {mode}, {size // 1024} KiB writes"
                raw = "raw producer" + (", ack each" if wait_each else "")
                rows.append((label, raw, total / MiB / got, total / MiB / base, ratio))
        for tool, n in (
            ("nbdcopy-4k-qd1", qd1_mib),
            ("nbdcopy-1m", nbd_mib),
            ("qemu-img", nbd_mib),
        ):
            src = tmp / f"src-{tool}.raw"
            with open(src, "wb") as f:
                for _ in range(n):
                    f.write(os.urandom(MiB))
            for mode in ("sync", "async"):
                base, got, ratio = paired(
                    rounds,
                    partial(plain_nbd, tmp, src, tool),
                    partial(capture_nbd, bootstrap, tmp, src, tool, mode),
                )
                rows.append((f"NBD {mode}, {tool}", "plain plugin", n / got, n / base, ratio))
            src.unlink()
    return rows


def measure_tls(mib: int, rounds: int = 1) -> list[tuple[str, str, float, float, float]]:
    """Rows (case, baseline, MiB/s, baseline MiB/s, ratio): API capture through the TLS
    front ÷ to plaintext Tansu, async 64 KiB and sync 4 KiB writes."""
    logging.basicConfig(level=logging.ERROR)
    rows: list[tuple[str, str, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="kcdp-bench-tls-") as tmpdir, EmbeddedBroker() as plain:
        tmp = Path(tmpdir)
        files = make_tls_files(tmp)
        props = {"security.protocol": "SSL", "ssl.ca.location": str(files.ca)}
        tls = start_broker("tls", props, "--tls-cert", str(files.cert), "--tls-key", str(files.key))
        try:
            for size, mode in ((64 * 1024, "async"), (4096, "sync")):
                total = mib * MiB if mode == "async" else mib * MiB // 4
                base, got, ratio = paired(
                    rounds,
                    partial(api, plain.bootstrap_servers, tmp, total, size, mode),
                    partial(api, tls.bootstrap, tmp, total, size, mode, props),
                )
                label = f"API {mode}, {size // 1024} KiB writes over TLS"
                rows.append((label, "plaintext", total / MiB / got, total / MiB / base, ratio))
        finally:
            tls.proc.terminate()
            tls.proc.wait(20)
    return rows


def figures(quick: bool = False) -> list[Figure]:
    """Every case as a ratio to its baseline (the harness API); ``quick``: 8 MiB cases."""
    rows = measure(8, 8, 2) if quick else measure(64, 64, 8)
    rows += measure_tls(8) if quick else measure_tls(64, rounds=3)  # small, noisy: medians
    return [
        Figure("capture", f"{case} ÷ {against}", ratio, detail=f"{mbps:.1f} vs {base:.1f} MiB/s")
        for case, against, mbps, base, ratio in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB per API case (64)")
    parser.add_argument("--nbd-mib", type=int, default=64, help="MiB per NBD case (64)")
    parser.add_argument("--qd1-mib", type=int, default=8, help="MiB for 4 KiB qd1 (8)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="baseline/case pairs per row, medians (1)"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    rows = measure(args.mib, args.nbd_mib, args.qd1_mib, args.rounds)
    rows += measure_tls(args.mib, args.rounds)
    print("| case | baseline | MiB/s | baseline MiB/s | ratio |")
    print("|---|---|---:|---:|---:|")
    for case, against, mbps, base_mbps, ratio in rows:
        print(f"| {case} | {against} | {mbps:.1f} | {base_mbps:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
