"""``--schema-registry`` end to end: intercept, ``kcdp worker``, restore, status (real Tansu,
S3 over HTTP, a schema registry over HTTP).

The registry is :class:`tests.registry_server.RegistryServer`, the part of the Confluent
REST API the project uses, served on 127.0.0.1: no Confluent Schema Registry or Karapace
can be installed here, and confluent-kafka's ``mock://`` registry lives inside one process,
so it could not be shared by the test and a worker running as its own process (the way
``kcdp worker`` runs). Every client is the real ``confluent_kafka.schema_registry`` one.

One topic (one partition) holds a volume captured through ``InterceptedVolume`` with the
registry (Confluent framing), a volume whose events alternate between single-object and
Confluent framing, the worker's own TICKs (Confluent-framed), a Confluent-framed record
whose schema id the registry does not know and an invalid Confluent-framed event. Both
volumes' windows must be exact, restores at random offsets exact (single writes replayed
from Kafka and from the archived log), the unknown id and the invalid event dead-lettered
with their reasons and, like the announcements, framed for the registry. A registry outage
while the worker meets a schema id it has not seen yet dead-letters nothing: the worker
waits, and windows those events once the registry is back.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.cli import main as kcdp
from connectors.intercept import InterceptedVolume
from connectors.kafka import ensure_topics
from connectors.store import open_store
from connectors.store.base import ObjectStore
from infra.broker import free_port
from schemas import schema_json
from schemas.codec import AvroCodec
from schemas.events import WriteEvent
from schemas.gaps import list_gaps
from schemas.manifest import list_window_keys
from tests.fixtures.s3 import BUCKET
from tests.registry_server import RegistryServer
from tests.streams_support import Volume, check_chain, produce, states_after, wait_for
from tests.worker_process import WorkerProcess

SIZE = 256 << 10
DLQ = "kcdp.writes.dlq"
INCREMENTS = "kcdp.increments"


@dataclass
class Setup:
    bootstrap: str
    store_url: str
    topic: str
    registry: RegistryServer
    worker: WorkerProcess
    tag: str

    def common(self) -> list[str]:
        return [
            "--bootstrap-servers",
            self.bootstrap,
            "--store",
            self.store_url,
            "--topic",
            self.topic,
            "--schema-registry",
            self.registry.url,
        ]

    def store(self) -> ObjectStore:
        return open_store(self.store_url)

    def durable_to(self, volume: str, last: int) -> bool:
        store = self.store()
        try:
            k = list_window_keys(store, volume)
            return bool(k) and k[-1][1] >= last
        finally:
            store.close()


@pytest.fixture(scope="module")
def setup(bootstrap: str, s3_endpoint: str, tmp_path_factory: Any) -> Iterator[Setup]:
    tmp: Path = tmp_path_factory.mktemp("registry")
    tag = uuid.uuid4().hex[:8]
    s3_url = f"s3://{BUCKET}/reg-{tag}?endpoint={s3_endpoint}&secure=false&region=us-east-1"
    topic = f"reg-{tag}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1, DLQ: 1, INCREMENTS: 1})
    with RegistryServer() as registry:
        worker = WorkerProcess(
            bootstrap=bootstrap,
            store_url=s3_url,
            topic=topic,
            workdir=tmp / "worker",
            web_port=free_port(),
            window_seconds=1.0,
            extra=(
                "--schema-registry",
                registry.url,
                "--group-id",
                f"g-{topic}",
                "--window-count",
                "10",
                "--checkpoint-windows",
                "3",
            ),
        )
        with worker:
            worker.wait_ready(timeout=120)
            yield Setup(bootstrap, s3_url, topic, registry, worker, tag)
        assert "Traceback" not in worker.log_path.read_text(errors="replace")


def read_topic(setup: Setup, topic: str, schema: str) -> list[tuple[int, bytes, dict[str, Any]]]:
    """``(offset, raw value, record)`` of every record of partition 0 of ``topic`` that ``schema``
    decodes (with the registry), until the partition stays quiet for 2 s."""
    c = Consumer(
        {"bootstrap.servers": setup.bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    codec = AvroCodec(schema, registry_url=setup.registry.url)
    out = []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        while (msg := c.poll(2)) is not None:
            value, offset = msg.value(), msg.offset()
            if msg.error() or not value or offset is None:
                continue
            try:
                out.append((offset, value, codec.decode(value)))
            except Exception:
                continue  # another schema's record on a shared topic
        return out
    finally:
        c.close()


def dlq_size(setup: Setup) -> int:
    """The dead-letter topic's high watermark: it grows with every record produced to it
    (Tansu counts a batch as one offset there, but never grows it for nothing)."""
    c = Consumer(
        {"bootstrap.servers": setup.bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    try:
        _, high = c.get_watermark_offsets(TopicPartition(DLQ, 0), timeout=10)
        return int(high)
    finally:
        c.close()


def restore(setup: Setup, volume: str, offset: int, out: Path, replay: str) -> bytes:
    argv = ["restore", volume, *setup.common(), "--to-offset", str(offset), "-o", str(out)]
    code = kcdp([*argv, "--replay-from", replay, "--json"])
    assert code == 0, f"restore {volume} at {offset} ({replay}) exited {code}"
    return out.read_bytes()


def capture_framed(
    setup: Setup, path: Path, name: str, rng: random.Random
) -> tuple[dict[int, bytes], int]:
    """Random writes through the intercept with the registry (Confluent framing); the
    volume's bytes after each of its events (``{offset: bytes}``) and its last offset."""
    model = bytearray(SIZE)
    with InterceptedVolume(
        path,
        name,
        SIZE,
        bootstrap_servers=setup.bootstrap,
        topic=setup.topic,
        schema_registry=setup.registry.url,
        control_socket=False,
    ) as vol:
        for _ in range(40):
            n = rng.randint(1, 5000)
            at = rng.randrange(SIZE - n)
            data = os.urandom(n)
            model[at : at + n] = data
            vol.write(at, data)
    # what the intercept wrote (its session and baseline events too), read back
    captured = [
        (o, WriteEvent.from_record(r))
        for o, _, r in read_topic(setup, setup.topic, "WriteEvent")
        if r["volume"] == name
    ]
    last = captured[-1][0]
    states = states_after([e for _, e in captured], [o for o, _ in captured], SIZE)
    assert states[last] == bytes(model)
    return states, last


def produce_mixed(
    setup: Setup, name: str, rng: random.Random
) -> tuple[dict[int, bytes], int, tuple[int, int]]:
    """A volume whose events alternate between the two framings, with an invalid
    Confluent-framed event and a Confluent-framed record of an unknown schema id after
    them: its states, its last offset and the offsets of the unknown id and the invalid
    event."""
    plain = AvroCodec()
    confluent = AvroCodec(registry_url=setup.registry.url, subject=f"{setup.topic}-value")
    v = Volume(name, SIZE)
    events: list[WriteEvent] = v.start()
    for _ in range(40):
        n = rng.randint(1, 5000)
        events.append(v.write(rng.randrange(SIZE - n), rng.randbytes(n), dt_us=100))
    key = name.encode()
    items = [(key, (plain if i % 2 else confluent).encode_event(e)) for i, e in enumerate(events)]
    unknown_id = b"\x00" + struct.pack(">I", 99_999) + confluent.encode_event(events[-1])[5:]
    bad = v.write(SIZE - 10, b"x" * 100)  # ends past the volume: invalid
    v.seq -= 1  # an invalid event consumes no sequence
    after = [v.write(5, b"still protected"), v.write(SIZE - 4, b"end!")]
    # the invalid event first: Tansu's high watermark counts a batch as one record, so
    # status (which reads the dead-letter topic up to it) may miss the second letter
    items += [(key, confluent.encode_event(bad)), (key, unknown_id)]
    items += [(key, confluent.encode_event(e)) for e in after]
    where = [o for _, o in produce(setup.bootstrap, setup.topic, items)]
    n = len(events)
    offsets = where[:n] + where[n + 2 :]
    return states_after([*events, *after], offsets, SIZE), offsets[-1], (where[n + 1], where[n])


def test_framed_and_mixed_events_are_windowed_and_restored_exactly(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(14)
    framed_name, mixed_name = f"rf-{setup.tag}", f"rm-{setup.tag}"
    framed_states, framed_last = capture_framed(setup, tmp_path / "framed.img", framed_name, rng)
    mixed_states, mixed_last, (unknown_at, invalid_at) = produce_mixed(setup, mixed_name, rng)
    wait_for(
        lambda: (
            setup.durable_to(framed_name, framed_last) and setup.durable_to(mixed_name, mixed_last)
        ),
        "both volumes' last events are durable",
        120,
    )
    store = setup.store()
    try:
        for name, states in ((framed_name, framed_states), (mixed_name, mixed_states)):
            manifests = check_chain(store, name, SIZE, states)
            assert len(manifests) >= 3 and list_gaps(store, name) == []
    finally:
        store.close()
    # restores at random offsets, single writes from Kafka and from the archived log
    for name, states in ((framed_name, framed_states), (mixed_name, mixed_states)):
        points = sorted(rng.sample(sorted(states)[4:], 4))  # past -1 and the baseline
        for i, point in enumerate(points):
            replay = "kafka" if i % 2 == 0 else "log"
            got = restore(setup, name, point, tmp_path / f"{name}-{point}.img", replay)
            assert got == states[point], f"{name} at {point} ({replay}) differs"
    capsys.readouterr()
    # the topic holds both framings, the worker's TICKs among the Confluent ones
    records = read_topic(setup, setup.topic, "WriteEvent")
    ticks = [raw for _, raw, r in records if r["kind"] == "TICK"]
    assert ticks and all(raw[:1] == b"\x00" for raw in ticks)
    assert {raw[:1] for _, raw, r in records if r["volume"] == mixed_name} == {b"\x00", b"\xc3"}
    assert {raw[:1] for _, raw, r in records if r["volume"] == framed_name} == {b"\x00"}

    # the unknown id and the invalid event are dead letters, framed for the registry
    def letters() -> list[tuple[bytes, dict[str, Any]]] | None:
        got = [(raw, d) for _, raw, d in read_topic(setup, DLQ, "DeadLetter")]
        got = [(raw, d) for raw, d in got if d["source_topic"] == setup.topic]
        return got if len(got) >= 2 else None

    dlq = wait_for(letters, "two dead letters", 30)
    assert all(raw[:1] == b"\x00" for raw, _ in dlq)
    found = sorted((d["source_offset"], d["error"], d["reason"]) for _, d in dlq)
    assert [(o, e) for o, e, _ in found] == [
        (invalid_at, "InvalidEventError"),
        (unknown_at, "DecodeError"),
    ]
    assert "unknown schema id 99999" in found[1][2]
    # every window is announced, framed for the registry
    ann = [(raw, a) for _, raw, a in read_topic(setup, INCREMENTS, "WindowCommitted")]
    ann = [(raw, a) for raw, a in ann if a["topic"] == setup.topic]
    assert ann and all(raw[:1] == b"\x00" for raw, _ in ann)
    assert {a["volume"] for _, a in ann} >= {framed_name, mixed_name}
    # status reads both framings and the registry-framed dead letters
    status = ["status", "--json", "--group-id", f"g-{setup.topic}", *setup.common(), mixed_name]
    assert kcdp(status) == 0
    [doc] = orjson.loads(capsys.readouterr().out)
    assert doc["last_durable_offset"] == mixed_last
    assert doc["dlq_events"] == 1  # the invalid event names its volume


def test_a_registry_outage_dead_letters_nothing(setup: Setup, tmp_path: Path) -> None:
    """An event framed with a schema id the worker has not resolved yet (a newer WriteEvent
    schema with one more field) arrives while the registry is down: the worker waits for
    the registry, dead-letters nothing, and windows it and the events after it exactly
    once the registry answers again. A restore during a later outage replays from the
    archived write log."""
    name = f"ro-{setup.tag}"
    evolved = schema_json("WriteEvent")
    evolved["fields"] = [*evolved["fields"], {"name": "zone", "type": "string", "default": ""}]
    subject = f"{setup.topic}-value"
    schema_id = setup.registry.register(subject, json.dumps(evolved))
    parsed = fastavro.parse_schema(evolved)

    def encode(e: WriteEvent) -> bytes:
        buf = io.BytesIO()
        buf.write(b"\x00" + struct.pack(">I", schema_id))
        fastavro.schemaless_writer(buf, parsed, {**e.to_record(), "zone": "eu-1"})
        return buf.getvalue()

    v = Volume(name, SIZE)
    events = [*v.start(), *(v.write(i * 1000, os.urandom(700), dt_us=100) for i in range(12))]
    dead_before = dlq_size(setup)
    setup.registry.stop()
    items = [(name.encode(), encode(e)) for e in events]
    try:
        # one record: a worker that took the outage for an unknown id would give up on it
        # within the registry client's own retries (at most 7 s of backoff) and dead-letter it
        where = [o for _, o in produce(setup.bootstrap, setup.topic, items[:1])]
        watch_until = time.monotonic() + 20
        while time.monotonic() < watch_until:
            assert dlq_size(setup) == dead_before, "a record was dead-lettered in the outage"
            time.sleep(2)
        assert "retrying" in setup.worker.log_tail(200)
        assert not setup.durable_to(name, where[0])
    finally:
        setup.registry.start()
    where += [o for _, o in produce(setup.bootstrap, setup.topic, items[1:])]
    wait_for(lambda: setup.durable_to(name, where[-1]), "the events are durable", 90)
    assert dlq_size(setup) == dead_before
    states = states_after(events, where, SIZE)
    store = setup.store()
    try:
        check_chain(store, name, SIZE, states)
        assert list_gaps(store, name) == []
    finally:
        store.close()
    assert setup.worker.proc is not None and setup.worker.proc.poll() is None
    # a restore while the registry is down replays the single writes from the archived
    # log instead of skipping the Kafka records it cannot resolve
    point = where[len(where) // 2]
    setup.registry.stop()
    try:
        got = restore(setup, name, point, tmp_path / "outage.img", "auto")
    finally:
        setup.registry.start()
    assert got == states[point]
