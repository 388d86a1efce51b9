"""``kcdp status`` against a real broker topic and a store written by the window builder.

Events are produced to a fresh topic of the session's Tansu broker; the pure partition
processor (the worker's logic) turns a prefix of them into windows in the store, so the
rest is captured but not durable. The status must report exactly that.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from connectors.cli import main as kcdp
from connectors.kafka import consumer_config, ensure_topics, producer_config
from connectors.restore.partitioner import partition_for
from connectors.status import StatusReader
from connectors.status_figures import list_volumes
from connectors.store import MemoryStore, open_store
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.codec import AvroCodec
from schemas.gaps import Gap
from streams.options import BuildOptions
from streams.partition import PartitionProcessor
from streams.window import WindowPolicy
from tests.status_support import Topic, Writer

T0 = 1_795_571_270_000_000
SIZE = 1 << 20
PARTITIONS = 2


@pytest.fixture
def topic(bootstrap: str) -> Topic:
    t = Topic(bootstrap, f"status-{uuid.uuid4().hex[:8]}", f"status-dlq-{uuid.uuid4().hex[:8]}")
    ensure_topics(t.conf(), {t.name: PARTITIONS, t.dlq: 1})
    return t


def read_partition(topic: Topic, partition: int, upto: int) -> list[tuple[Any, Any, Any]]:
    """Raw records ``(offset, key, value)`` of a partition with offset ≤ ``upto``."""
    c = Consumer(consumer_config(topic.conf(), "test-status-reader"))
    c.assign([TopicPartition(topic.name, partition, 0)])
    out: list[tuple[Any, Any, Any]] = []
    try:
        deadline = time.monotonic() + 20
        while not out or out[-1][0] < upto:
            assert time.monotonic() < deadline, "no records from the broker"
            msgs = c.consume(100, timeout=0.2)
            out += [(m.offset(), m.key(), m.value()) for m in msgs if not m.error()]
    finally:
        c.close()
    return [r for r in out if r[0] <= upto]


def build_windows(
    store: ObjectStore, topic: Topic, partition: int, upto: int, workdir: Path
) -> None:
    """Run the worker's processor over offsets ≤ ``upto``, closing every window (count 2)."""
    opts = BuildOptions(
        topic=topic.name,
        partition=partition,
        workdir=workdir,
        policy=WindowPolicy(count=2),
    )
    proc = PartitionProcessor(store, opts)
    proc.open(None)
    try:
        proc.feed(read_partition(topic, partition, upto))
    finally:
        proc.close()


def dead_letter(topic: Topic, volume: str, error: str = "InvalidEventError") -> None:
    codec = AvroCodec("DeadLetter")
    value = codec.encode(
        {
            "source_topic": topic.name,
            "source_partition": 0,
            "source_offset": 0,
            "key": None,
            "value": b"garbage",
            "volume": volume,
            "error": error,
            "reason": "test",
            "time_us": T0,
        }
    )
    p = Producer(producer_config(topic.conf()))
    p.produce(topic.dlq, key=volume.encode(), value=value)
    assert p.flush(10) == 0


@pytest.fixture
def history(topic: Topic, tmp_path: Path) -> tuple[MemoryStore, Writer]:
    """Volume ``db``: 3 start markers + 6 writes produced; windows built through offset of
    the 4th write; a gap record and two dead letters (two reasons) for ``db``."""
    store = MemoryStore()
    w = Writer(topic, "db", size=SIZE, t0_us=T0)
    w.start()
    for i in range(6):
        w.write(i * 4096, bytes([i + 1]) * (1000 + i))
    build_windows(store, topic, partition_for("db", PARTITIONS), w.offsets[6], tmp_path / "work")
    store.put(
        keys.gap_key("db", 10_000),
        Gap("db", "sequence", 10_000, 9_999, "s", 7, 9, "test gap", T0).to_json(),
    )
    dead_letter(topic, "db")
    dead_letter(topic, "db", "StaleEventError")
    dead_letter(topic, "other")
    return store, w


def reader(store: ObjectStore, topic: Topic, **kw: Any) -> StatusReader:
    return StatusReader(
        store,
        kafka_conf=topic.conf(),
        group_id=f"g-{uuid.uuid4().hex[:6]}",
        topic=topic.name,
        dlq_topic=topic.dlq,
        clock=lambda: T0 + 5_000_000,
        timeout=10,
        **kw,
    )


def test_status_reports_durable_lag_rpo_points_and_dlq(
    history: tuple[MemoryStore, Writer], topic: Topic
) -> None:
    store, w = history
    [s] = reader(store, topic).volumes()
    assert s.volume == "db" and s.group == "db"
    assert s.partition == partition_for("db", PARTITIONS)
    assert s.last_captured_offset == w.offsets[-1]
    assert s.last_captured_time_us == T0 + 9 * 10_000
    # windows of 2 events over offsets[0..6]: the last one ends at offsets[5]; offsets[6]
    # opened a window that was never closed, so it and the two later writes are at risk
    assert s.last_durable_offset == w.offsets[5]
    assert s.windows == 3
    assert s.lag_events == 3 and s.lag_complete
    assert s.lag_bytes == 1003 + 1004 + 1005
    assert s.rpo_seconds == pytest.approx(5.0 - 0.07)
    assert s.oldest_point == w.offsets[2] and s.newest_point == w.offsets[5]
    assert s.bytes_stored == sum(i.size for i in store.list("v1/volumes/db/"))
    assert s.bytes_stored > 3 * 1000  # three windows of data made it to the store
    assert [g["at_offset"] for g in s.gaps] == [10_000]
    assert s.dlq_events == 2
    assert s.dlq_by_reason == {"InvalidEventError": 1, "StaleEventError": 1}
    assert s.fenced_sessions == []
    assert s.history_problem is None  # the head vouches for the newest window
    assert s.worker.committed_offset is None and s.worker.uncommitted is None
    assert s.worker.high_watermark == w.offsets[-1] + 1
    assert s.worker.state in ("stopped", "unknown")


def test_rpo_is_zero_when_everything_is_durable(topic: Topic, tmp_path: Path) -> None:
    store = MemoryStore()
    w = Writer(topic, "calm", size=SIZE, t0_us=T0)
    w.start()
    w.write(0, b"x" * 512)
    build_windows(store, topic, partition_for("calm", PARTITIONS), w.offsets[-1], tmp_path)
    [s] = reader(store, topic).volumes(["calm"])
    assert s.lag_events == 0 and s.lag_bytes == 0 and s.rpo_seconds == 0.0
    assert s.last_captured_offset == s.last_durable_offset == w.offsets[-1]


def test_bounded_scan_reads_back_for_the_last_capture(
    history: tuple[MemoryStore, Writer], topic: Topic
) -> None:
    """With a scan bound of 2 records, lag is a lower bound and the newest event is found
    by reading backwards from the high watermark past another volume's events."""
    store, w = history
    part = partition_for("db", PARTITIONS)
    other = next(n for n in (f"o{i}" for i in range(200)) if partition_for(n, PARTITIONS) == part)
    ow = Writer(topic, other, size=SIZE, t0_us=T0)
    ow.start()
    w.write(0, b"z" * 10)
    ow.write(0, b"y" * 10)
    [s] = reader(store, topic, max_scan=2, batch=2).volumes(["db"])
    assert not s.lag_complete
    assert s.lag_events == 2 and s.lag_bytes == 1003 + 1004
    assert s.last_captured_offset == w.offsets[-1]
    assert s.rpo_seconds == pytest.approx(5.0 - 0.07)


def test_worker_health_reads_the_group_commit(
    history: tuple[MemoryStore, Writer], topic: Topic
) -> None:
    store, w = history
    r = reader(store, topic)
    part = partition_for("db", PARTITIONS)
    c = Consumer(consumer_config(topic.conf(), r.group_id))
    try:
        c.commit(offsets=[TopicPartition(topic.name, part, w.offsets[6])], asynchronous=False)
    finally:
        c.close()
    [s] = r.volumes()
    assert s.worker.committed_offset == w.offsets[6]
    assert s.worker.uncommitted == w.offsets[-1] + 1 - w.offsets[6]


def test_volumes_come_from_markers_and_manifests(
    history: tuple[MemoryStore, Writer], topic: Topic
) -> None:
    store, _ = history
    store.put(keys.partition_marker_key(topic.name, 1, "fresh"), b"")
    assert list_volumes(store, topic.name) == {"db": partition_for("db", PARTITIONS), "fresh": 1}


def test_cli_status_json_and_table(
    topic: Topic, s3_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(s3_url)
    w = Writer(topic, "web", size=SIZE, t0_us=T0)
    w.start()
    w.write(0, b"a" * 4096)
    w.write(8192, b"b" * 100)
    build_windows(store, topic, partition_for("web", PARTITIONS), w.offsets[3], tmp_path)
    store.close()
    common = ["--bootstrap-servers", topic.bootstrap, "--store", s3_url, "--topic", topic.name]
    assert kcdp(["status", "--json", *common]) == 0
    [doc] = orjson.loads(capsys.readouterr().out)
    assert doc["volume"] == "web"
    assert doc["last_captured_offset"] == w.offsets[-1]
    assert doc["last_durable_offset"] == w.offsets[3]
    assert doc["lag_events"] == 1 and doc["lag_bytes"] == 100
    assert doc["rpo_seconds"] > 0
    assert doc["worker"]["group_id"] == "kcdp-increments"
    assert kcdp(["status", "web", *common]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["VOLUME", "PART", "CAPTURED", "DURABLE"]
    assert table[1].startswith("web ") and "1 ev / 100 B" in table[1]


def test_cli_status_bad_input_is_a_clear_error(
    topic: Topic, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--bootstrap-servers", topic.bootstrap, "--store", "memory://", "--topic", topic.name]
    assert kcdp(["status", "bad/name", *common]) == 2
    assert "invalid volume name" in capsys.readouterr().err
    assert kcdp(["status", "--max-scan", "0", *common]) == 2
    assert kcdp(["status", *common]) == 0
    assert "no protected volume" in capsys.readouterr().out
