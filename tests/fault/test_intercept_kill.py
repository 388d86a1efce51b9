"""kill -9 of a process that runs an async intercept, in the middle of a burst of writes.

Real parts: the Tansu broker, the intercept Python API in a child process, the worker as
a subprocess, a file store and ``kcdp restore``. The child writes a seeded stream of
random writes in async mode and flushes after every burst, printing each acknowledged
flush; it is killed with SIGKILL while a burst is in flight. The volume is then reopened
(an unclean restart: per FORMAT.md a new session whose predecessor never ended, and a
baseline) and written and closed cleanly. Afterwards:

* nothing acknowledged before the kill is missing: every write up to the last flush is
  whole in the topic, and the restore at that flush's offset equals the model of the
  acknowledged writes;
* every point the store offers (``kcdp points``) restores equal to the model of what the
  topic holds, and so does the newest one, which is the backing file;
* any other sampled point restores equal to that model or is refused with a clear error.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from connectors.intercept import InterceptedVolume
from connectors.kafka import ensure_topics
from connectors.store import open_store
from tests.fault.support import (
    ByteModel,
    MiB,
    check_restores,
    offered_points,
    read_partition,
    sample,
    volume_events,
    wait_durable,
    worker,
)
from tests.worker_process import ROOT

SIZE = 4 * MiB
PIECE = 16 << 10
BURST = 40
#: acknowledged bursts before the kill
BURSTS = 6

CHILD = """
import random, sys
from connectors.intercept import InterceptedVolume

bootstrap, topic, backing, volume, size, piece, burst, seed = sys.argv[1:]
size, piece, burst = int(size), int(piece), int(burst)
rng = random.Random(seed)
v = InterceptedVolume(
    backing, volume, size, bootstrap_servers=bootstrap, topic=topic, mode="async",
    max_event_data=piece,
)
n = 0
while True:
    for _ in range(burst):
        length = rng.randint(1, 4 * piece)
        where = rng.randrange(size - length)
        v.write(where, rng.randbytes(length))
        n += 1
    print("acked", n, v.flush(), flush=True)
"""


def _stream(seed: str, n: int) -> list[tuple[int, bytes]]:
    """The child's first ``n`` writes (same draws from the same seed)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(1, 4 * PIECE)
        where = rng.randrange(SIZE - length)
        out.append((where, rng.randbytes(length)))
    return out


@pytest.mark.timeout(180)
def test_kill_9_mid_async_burst_loses_nothing_acknowledged(bootstrap: str, tmp_path: Path) -> None:
    topic, name, seed = f"killi-{uuid.uuid4().hex[:8]}", "killed", "kill-9"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1})
    backing = tmp_path / "vol.img"
    argv = [bootstrap, topic, str(backing), name, str(SIZE), str(PIECE), str(BURST), seed]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    acks: list[tuple[int, int]] = []
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        while len(acks) < BURSTS and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line.startswith("acked "), f"child: {line!r} (exit {child.poll()})"
            _, n, off = line.split()
            acks.append((int(n), int(off)))
        assert len(acks) == BURSTS
        time.sleep(random.Random(seed).uniform(0.005, 0.03))  # inside the next burst
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        for line in child.stdout.read().splitlines():  # flushes acknowledged before the kill
            if line.startswith("acked "):
                acks.append((int(line.split()[1]), int(line.split()[2])))
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    rng = random.Random(1)
    with InterceptedVolume(backing, name, bootstrap_servers=bootstrap, topic=topic) as again:
        again.wait_baseline(timeout=60)
        after = [again.write(rng.randrange(SIZE - 5000), rng.randbytes(5000)) for _ in range(5)]
    final_image = backing.read_bytes()

    events = volume_events(read_partition(bootstrap, topic), name)
    first = events[0][1].session
    writes = [(o, e) for o, e in events if e.session == first and e.data]
    acked_n, acked_at = acks[-1]
    stream = _stream(seed, acked_n)
    # nothing acknowledged is missing: the first session's events start with every piece
    # of every acknowledged write, in order, at or before the last acknowledged offset
    pieces = [(w + i, d[i : i + PIECE]) for w, d in stream for i in range(0, len(d), PIECE)]
    got = [(e.offset, e.data, o) for o, e in writes[: len(pieces)]]
    assert len(got) == len(pieces), "acknowledged writes are missing from the topic"
    assert [(w, d) for w, d, _ in got] == pieces, "an acknowledged write differs in the topic"
    assert got[-1][2] <= acked_at
    sessions = {e.session for _, e in events}
    assert len(sessions) == 2

    store_url = f"file://{tmp_path / 'store'}"
    store = open_store(store_url)
    with worker(bootstrap, store_url, topic, tmp_path / "w") as w:
        wait_durable(store, name, events[-1][0], w, 90)

    app = ByteModel(SIZE)
    for where, data in stream:
        app.write(0, where, data)
    topic_model = ByteModel.of_events(SIZE, events)
    expected = topic_model.images_at([acked_at])
    assert expected[acked_at] == app.image_at(0), "the topic's model differs from the app's"
    offsets = [o for o, _ in events]
    offered = offered_points(store_url, name, offsets)
    assert acked_at in offered, "the store does not offer the last acknowledged point"
    # the writes after the reopen follow a completed baseline: consistent again (FORMAT.md)
    assert set(after) <= set(offered), "acknowledged writes after the baseline not offered"
    must = sample(offered, 20, rng, acked_at, *after, events[-1][0])
    others = sample(offsets, 15, rng)
    expected = topic_model.images_at([*must, *others])
    assert expected[events[-1][0]] == final_image
    check_restores(store_url, name, expected, tmp_path / "r", must=must)
    store.close()
