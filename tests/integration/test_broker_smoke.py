"""The embedded broker starts, serves produce/consume, and leaves no process behind."""

from __future__ import annotations

import os
import time

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from connectors.kafka import ensure_topics, partition_count, producer_config
from infra.broker import EmbeddedBroker


def test_produce_consume_roundtrip(bootstrap: str) -> None:
    ensure_topics({"bootstrap.servers": bootstrap}, {"smoke": 3})
    assert partition_count({"bootstrap.servers": bootstrap}, "smoke") == 3
    p = Producer(producer_config({"bootstrap.servers": bootstrap}))
    acks: list[tuple[int, int]] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None
        acks.append((partition, offset))

    for i in range(5):
        p.produce("smoke", key=b"g", value=b"v%d" % i, on_delivery=on_delivery)
    assert p.flush(10) == 0
    part = acks[0][0]
    assert [o for _, o in acks] == list(range(5))
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "smoke"})
    c.assign([TopicPartition("smoke", part, 0)])
    got: list[bytes | None] = []
    deadline = time.monotonic() + 15
    while len(got) < 5 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    assert got == [b"v%d" % i for i in range(5)]


def test_stop_leaves_no_process() -> None:
    b = EmbeddedBroker()
    b.start()
    pid = b.proc.pid if b.proc else -1
    b.stop()
    assert pid > 0
    assert not os.path.exists(f"/proc/{pid}"), "broker process still exists after stop()"
