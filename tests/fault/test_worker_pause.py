"""SIGSTOP the worker that owns the partition past its session timeout, let a second worker
take the partition over and store windows, then SIGCONT the first (docs/FORMAT.md
"Ordering invariants", one writer per volume).

Real parts: the Tansu broker, S3 over HTTP (moto), two ``kcdp worker`` processes of one
group. The paused worker wakes up with records and windows it had when it stopped; it
must not store them over the other's history (no object replaced, no chain forked): it
either stops with exit 12 (OwnershipError) or finds it has nothing to store. Afterwards
every volume's chain is one exact, unbroken history holding every event once, with no
gap record.
"""

from __future__ import annotations

import random
import signal
import uuid
from pathlib import Path

from connectors.kafka import ensure_topics
from connectors.restore.verify import verify_volume
from connectors.store import open_store
from infra.broker import free_port
from schemas.codec import AvroCodec
from schemas.events import WriteEvent
from schemas.gaps import list_gaps
from schemas.manifest import list_window_keys
from tests.integration.test_worker_group import owned
from tests.streams_support import (
    Volume,
    check_chain,
    produce,
    random_writes,
    states_after,
    wait_for,
)
from tests.worker_process import WorkerProcess

SIZE = 1 << 20
SESSION_S = 6


def test_a_worker_paused_past_its_session_never_forks_the_history(
    bootstrap: str, s3_url: str, tmp_path: Path
) -> None:
    rng = random.Random(11)
    topic = f"pause-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1})
    flags = ["--group-id", f"g-{topic}", "--window-count", "30", "--batch-size", "50"]
    flags += ["--session-timeout", str(SESSION_S)]
    workers = [
        WorkerProcess(
            bootstrap=bootstrap,
            store_url=s3_url,
            topic=topic,
            workdir=tmp_path / name,
            web_port=free_port(),
            window_seconds=1.0,
            extra=flags,
        )
        for name in ("wa", "wb")
    ]
    store = open_store(s3_url)
    vols = [Volume("pa", SIZE), Volume("pb", SIZE)]
    codec = AvroCodec()
    events: list[WriteEvent] = [*vols[0].start(), *vols[1].start()]
    where: list[tuple[int, int]] = []

    def send(batch: list[WriteEvent]) -> None:
        where.extend(
            produce(bootstrap, topic, [(b"p", codec.encode(e.to_record())) for e in batch])
        )

    def durable() -> bool:
        last = {
            v.name: max(o for e, (_, o) in zip(events, where, strict=True) if e.volume == v.name)
            for v in vols
        }
        return all((k := list_window_keys(store, n)) and k[-1][1] == o for n, o in last.items())

    with workers[0], workers[1]:
        for w in workers:
            w.wait_ready(timeout=90)
        wait_for(lambda: any(0 in owned(w) for w in workers), "a worker holds partition 0", 90)
        paused = next(w for w in workers if 0 in owned(w))
        other = workers[1 - workers.index(paused)]
        assert paused.proc is not None
        events += random_writes(vols, rng, 1500, SIZE)
        send(events)
        wait_for(lambda: len(list_window_keys(store, "pa")) > 2, "pa has windows", 90, 0.02)
        paused.proc.send_signal(signal.SIGSTOP)  # mid-stream: records and windows in hand
        try:
            more = random_writes(vols, rng, 600, SIZE)
            events += more
            send(more)
            wait_for(lambda: 0 in owned(other), "the other worker takes the partition", 90)
            wait_for(durable, "the other worker stores every event", 120)
        finally:
            paused.proc.send_signal(signal.SIGCONT)
        more = random_writes(vols, rng, 600, SIZE)
        events += more
        send(more)
        wait_for(durable, "every event is durable after the pause", 120)
        code = paused.proc.poll()
    assert code in (None, 12), paused.log_tail()
    for w in workers:
        assert "Traceback" not in w.log_path.read_text(errors="replace"), w.log_tail()
    for v in vols:
        mine = [(e, o) for e, (_, o) in zip(events, where, strict=True) if e.volume == v.name]
        states = states_after([e for e, _ in mine], [o for _, o in mine], SIZE)
        manifests = check_chain(store, v.name, SIZE, states)
        assert sum(m.events for m in manifests) == len(mine)  # no event twice, none lost
        assert list_gaps(store, v.name) == []
        report = verify_volume(store, v.name, read_data=True)  # digests, links, head
        assert not report.problems, report.problems
    store.close()
