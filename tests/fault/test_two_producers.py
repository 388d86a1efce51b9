"""Two intercepts of one consistency group write one partition at full speed for a minute.

Real parts: a Tansu broker of this module's own (it takes a few hundred MB), two
:class:`~connectors.intercept.InterceptedVolume` instances of two volumes of ONE group —
so one partition — in two child processes (one sync, one async flushing every 20 writes),
and the worker as a subprocess following the partition while they write. The broker has
been seen to let a tailing consumer skip an offset that is in the log; the worker must
re-read rather than declare a gap. Afterwards, for each volume:

* every acknowledged write is in the topic, in order and whole (the seeded stream);
* there is no gap record, and every one of the volume's events is in exactly one window;
* the chain is exact and restores at sampled points equal the model of the writes.
"""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.kafka import ensure_topics
from connectors.store import open_store
from infra.broker import EmbeddedBroker
from schemas.events import EventKind
from tests.fault.support import (
    ByteModel,
    MiB,
    assert_history_exact,
    read_partition,
    volume_events,
    wait_durable,
    worker,
)
from tests.worker_process import ROOT

#: seconds of writing, both intercepts at once
DURATION = 60.0
SIZE = MiB
GROUP = "pair"
VOLUMES = {"pair-sync": "sync", "pair-async": "async"}
MAX_WRITE = 2048

CHILD = """
import random, sys, time
from connectors.intercept import InterceptedVolume

bootstrap, topic, backing, volume, group, size, mode, seconds, max_write = sys.argv[1:]
size, seconds, max_write = int(size), float(seconds), int(max_write)
rng = random.Random(volume)
v = InterceptedVolume(
    backing, volume, size, group=group, bootstrap_servers=bootstrap, topic=topic, mode=mode
)
print("ready", flush=True)
sys.stdin.readline()
n, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    length = rng.randint(1, max_write)
    where = rng.randrange(size - length)
    v.write(where, rng.randbytes(length))
    n += 1
    if mode == "async" and n % 20 == 0:
        v.flush()
v.flush()
v.close()
print("done", n, v.sequence, flush=True)
"""


def _stream(volume: str, n: int) -> list[tuple[int, bytes]]:
    """A child's first ``n`` writes (the same draws from the same seed)."""
    rng = random.Random(volume)
    out = []
    for _ in range(n):
        length = rng.randint(1, MAX_WRITE)
        where = rng.randrange(SIZE - length)
        out.append((where, rng.randbytes(length)))
    return out


def _child_argv(bootstrap: str, topic: str, backing: Path, volume: str, mode: str) -> list[str]:
    args = [bootstrap, topic, str(backing), volume, GROUP, str(SIZE), mode, str(DURATION)]
    return [sys.executable, "-c", CHILD, *args, str(MAX_WRITE)]


@pytest.fixture(scope="module")
def busy_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this module's own, so the minute of data leaves with it."""
    with EmbeddedBroker() as b:
        yield b


@pytest.mark.timeout(300)
def test_two_producers_on_one_partition_leave_no_gap_and_lose_nothing(
    busy_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    bootstrap = busy_broker.bootstrap_servers
    topic = f"pair-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1})
    store_url = f"file://{tmp_path / 'store'}"
    store = open_store(store_url)
    with worker(bootstrap, store_url, topic, tmp_path / "w") as w:
        w.wait_ready()
        children = {
            name: subprocess.Popen(
                _child_argv(bootstrap, topic, tmp_path / f"{name}.img", name, mode),
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for name, mode in VOLUMES.items()
        }
        done: dict[str, tuple[int, int]] = {}
        try:
            for p in children.values():
                assert p.stdout is not None and p.stdout.readline() == "ready\n"
            for p in children.values():  # start both at once
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            for name, p in children.items():
                out, _ = p.communicate(timeout=DURATION + 60)
                assert p.returncode == 0, f"{name} exited {p.returncode}: {out[-500:]}"
                _, count, last_seq = out.split()
                done[name] = (int(count), int(last_seq))
        finally:
            for p in children.values():
                p.kill()
                p.wait()
        records = read_partition(bootstrap, topic)
        events = {name: volume_events(records, name) for name in VOLUMES}
        for name, evs in events.items():
            n, seq = done[name]
            assert n > 1000, f"{name} wrote only {n} times in {DURATION:.0f}s"
            # every acknowledged write is in the topic, whole and in order
            assert [e.sequence for _, e in evs] == list(range(seq + 1)), f"{name}: sequences"
            assert evs[-1][1].kind is EventKind.SESSION_END
            stored = [(e.offset, e.data) for _, e in evs if e.kind is EventKind.WRITE]
            assert stored == _stream(name, n), f"{name}: the topic differs from its writes"
            wait_durable(store, name, evs[-1][0], w, 120)
        assert w.proc is not None and w.proc.poll() is None, "the worker stopped"
    for k, (name, evs) in enumerate(events.items()):
        model = ByteModel.of_events(SIZE, evs)
        writes = [o for o, e in evs if e.kind is EventKind.WRITE]
        assert_history_exact(
            store,
            store_url,
            name,
            model,
            evs,
            tmp_path / "restores",
            acked=writes,
            samples=8,
            seed=k,
        )
    store.close()
