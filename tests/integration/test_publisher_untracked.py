"""Publisher sends without a Delivery to follow (async writes): still bounded, drained, failing."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.errors import DeliveryError
from connectors.intercept.publisher import Publisher
from connectors.kafka import consumer_config, ensure_topics, producer_config


def test_untracked_sends_are_drained_in_order_with_tracked_ones(bootstrap: str) -> None:
    topic = f"test.publisher.{uuid.uuid4().hex[:10]}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1})
    pub = Publisher(
        producer_config({"bootstrap.servers": bootstrap}),
        topic,
        delivery_timeout=20.0,
        max_in_flight_bytes=4096,  # small: sends must wait for untracked acknowledgements
    )
    try:
        for i in range(40):
            pub.send(b"k", b"%03d" % i + bytes(1000), track=False)
        last = pub.send(b"k", b"end", track=True)
        assert pub.drain() == pub.wait(last) == last.offset
        assert pub.failure is None
    finally:
        pub.close()
    consumer = Consumer(consumer_config({"bootstrap.servers": bootstrap}, "unused"))
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        values: list[bytes] = []
        while len(values) < 41:
            msg = consumer.poll(10.0)
            assert msg is not None, f"only {len(values)} records came back"
            value = msg.value()
            assert isinstance(value, bytes)
            values.append(value)
    finally:
        consumer.close()
    assert [v[:3] for v in values[:40]] == [b"%03d" % i for i in range(40)]
    assert values[40] == b"end"


def test_an_untracked_failure_fails_drain_and_every_later_send() -> None:
    pub = Publisher(
        producer_config({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 300}),
        f"test.publisher.{uuid.uuid4().hex[:10]}",
        delivery_timeout=5.0,
        max_in_flight_bytes=1 << 20,
    )
    try:
        pub.send(b"k", b"lost", track=False)
        with pytest.raises(DeliveryError):
            pub.drain()
        assert pub.failure is not None
        with pytest.raises(DeliveryError):
            pub.send(b"k", b"refused", track=False)
    finally:
        pub.close()
