"""Two ``kcdp worker`` processes share a 4-partition topic (real Tansu, S3 over HTTP).

Each volume must be built by exactly one worker (the owner of its partition), every
volume's chain must be exact, a poison record and an invalid event must land in
``kcdp.writes.dlq`` with their reasons while the volume keeps being protected, and every
window must be announced on ``kcdp.increments``.
"""

from __future__ import annotations

import random
import re
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from connectors.kafka import ensure_topics
from connectors.store import open_store
from infra.broker import free_port
from schemas.codec import AvroCodec
from schemas.events import WriteEvent
from schemas.gaps import list_gaps
from schemas.manifest import list_window_keys
from tests.streams_support import Volume, check_chain, produce, states_after, wait_for
from tests.worker_process import WorkerProcess, metric_values

SIZE = 256 << 10
PARTITIONS = 4
_ASSIGN = re.compile(r"partition (\d+) (assigned|revoked)")


def owned(w: WorkerProcess) -> set[int]:
    """Partitions the worker holds now, from its log."""
    held: set[int] = set()
    try:
        text = w.log_path.read_text(errors="replace")
    except OSError:
        return held
    for m in _ASSIGN.finditer(text):
        (held.add if m.group(2) == "assigned" else held.discard)(int(m.group(1)))
    return held


def read_topic(bootstrap: str, topic: str, schema: str) -> list[dict[str, object]]:
    """Every record of partition 0 of ``topic``, decoded with ``schema``.

    Reads until the partition stays quiet for 2 s: Tansu's high watermark counts a
    multi-record batch as one, so it cannot say where the partition ends. Records other
    tests framed for a schema registry on the shared topic are passed over; callers pick
    their own by source topic, so a record of theirs that does not decode is still missed
    loudly.
    """
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        codec = AvroCodec(schema)
        out = []
        while (msg := c.poll(2)) is not None:
            if not msg.error():
                value = msg.value()
                assert value is not None
                if value[:1] == b"\x00":
                    continue  # Confluent-framed: another test's, with its registry
                out.append(codec.decode(value))
        return out
    finally:
        c.close()


def test_two_workers_share_partitions_and_dead_letter_poison(
    bootstrap: str, s3_url: str, tmp_path: Path
) -> None:
    topic = f"grp-{uuid.uuid4().hex[:8]}"
    conf = {"bootstrap.servers": bootstrap}
    ensure_topics(conf, {topic: PARTITIONS, "kcdp.writes.dlq": 1, "kcdp.increments": 1})
    flags = ["--group-id", f"g-{topic}", "--window-count", "25", "--session-timeout", "6"]
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
    with workers[0], workers[1]:
        for w in workers:
            w.wait_ready(timeout=90)

        def balanced() -> bool:
            a, b = owned(workers[0]), owned(workers[1])
            return bool(a and b and not a & b and a | b == set(range(PARTITIONS)))

        wait_for(balanced, "both workers hold disjoint partitions covering the topic", 90)
        rng = random.Random(3)
        vols = [Volume(f"gv{i}", SIZE) for i in range(8)]
        codec = AvroCodec()
        events: list[WriteEvent] = [e for v in vols for e in v.start()]
        for _ in range(800):
            v = rng.choice(vols)
            n = rng.randint(1, 3000)
            events.append(v.write(rng.randrange(SIZE - n), rng.randbytes(n), dt_us=100))
        victim = vols[0]
        bad = victim.write(SIZE - 10, b"x" * 100)  # ends past the volume: invalid
        victim.seq -= 1  # an invalid event consumes no sequence: the next write reuses it
        after = [victim.write(5, b"still protected"), victim.write(SIZE - 4, b"end!")]
        items = [(e.group.encode(), codec.encode(e.to_record())) for e in events]
        items += [(b"gv0", b"\x00poison"), (b"gv0", codec.encode(bad.to_record()))]
        items += [(b"gv0", codec.encode(e.to_record())) for e in after]
        where = produce(bootstrap, topic, items)
        n = len(events)
        events += [bad, *after]
        ev_where = where[:n] + where[n + 1 :]  # where[n] is the poison record
        valid = [(e, pw) for e, pw in zip(events, ev_where, strict=True) if e is not bad]
        last = {v.name: max(pw[1] for e, pw in valid if e.volume == v.name) for v in vols}
        store = open_store(s3_url)

        def done() -> bool:
            return all(
                (k := list_window_keys(store, v.name)) and k[-1][1] == last[v.name] for v in vols
            )

        wait_for(done, "every volume's last event is durable", 120)
        text = workers[0].metrics_text() + workers[1].metrics_text()
        names = {name for name, _ in metric_values(text)}
        for wanted in ("kcdp_windows_total", "kcdp_rpo_seconds", "kcdp_dlq_events_total"):
            assert wanted in names
    for w in workers:
        assert "Traceback" not in w.log_path.read_text(errors="replace")
    # each volume was built by exactly one worker: the one holding its partition
    windows = 0
    for v in vols:
        parts = {pw[0] for e, pw in valid if e.volume == v.name}
        assert len(parts) == 1
        (p,) = parts
        builders = [
            w
            for w in workers
            if (w.workdir / "state/worker/images" / str(p) / f"{v.name}.img").exists()
        ]
        assert len(builders) == 1, f"{v.name} built by {len(builders)} workers"
        assert p in owned(builders[0])
        mine = [(e, pw[1]) for e, pw in valid if e.volume == v.name]
        states = states_after([e for e, _ in mine], [o for _, o in mine], SIZE)
        manifests = check_chain(store, v.name, SIZE, states)
        windows += len(manifests)
        assert list_gaps(store, v.name) == []
        assert sum(m.events for m in manifests) == len(mine)

    # the poison and the invalid event are dead-lettered with reasons
    def dead() -> list[dict[str, object]]:
        letters = read_topic(bootstrap, "kcdp.writes.dlq", "DeadLetter")
        return [d for d in letters if d["source_topic"] == topic]

    def two_dead() -> list[dict[str, object]] | None:
        letters = dead()
        return letters if len(letters) >= 2 else None

    dlq = wait_for(two_dead, "two dead letters", 20)
    assert sorted((d["error"], d["source_offset"]) for d in dlq) == sorted(
        [("DecodeError", where[-4][1]), ("InvalidEventError", where[-3][1])]
    )
    assert dlq[0]["value"] in (b"\x00poison", codec.encode(bad.to_record()))
    # every window is announced once it is durable
    ann = [
        a
        for a in read_topic(bootstrap, "kcdp.increments", "WindowCommitted")
        if a["topic"] == topic
    ]
    assert len({a["manifest_key"] for a in ann}) == windows
    store.close()
