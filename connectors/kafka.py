"""Kafka client settings shared by every kafka-cdp producer and consumer (confluent-kafka).

All producers use ``partitioner=murmur2_random`` so a group maps to the same partition as
with the Java client. :func:`ensure_topics` creates missing topics with the partition count
asked for (an existing topic is left as it is).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from connectors.config import redact_text
from connectors.errors import BrokerError

#: Producer properties for events whose acknowledgement is a durability promise.
DURABLE_PRODUCER: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
    "linger.ms": 5,
    "compression.type": "none",
    "message.timeout.ms": 30000,
}

#: Largest WRITE data carried by one event; larger writes are split (Kafka's default
#: message.max.bytes is ~1 MiB including framing).
MAX_EVENT_DATA = 512 * 1024


def producer_config(base: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """Durable producer properties: ``base`` (bootstrap, -X) over the defaults, then overrides."""
    conf = dict(DURABLE_PRODUCER)
    conf.update(base)
    conf.update(overrides)
    return conf


def consumer_config(base: Mapping[str, Any], group_id: str, **overrides: Any) -> dict[str, Any]:
    """Consumer properties with explicit commits and short sessions."""
    conf: dict[str, Any] = {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    }
    conf.update(base)
    conf.update(overrides)
    return conf


def ensure_topics(
    conf: Mapping[str, Any], topics: Mapping[str, int], *, timeout: float = 15.0
) -> None:
    """Create each missing topic in ``topics`` (name -> partitions); wait until visible."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin_conf = {k: v for k, v in conf.items() if not k.startswith(("enable.", "acks"))}
    admin = AdminClient(
        {
            k: v
            for k, v in admin_conf.items()
            if k not in ("partitioner", "linger.ms", "compression.type")
        }
    )
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka: {redact_text(str(exc))}") from None
    missing = [NewTopic(t, num_partitions=n, replication_factor=1) for t, n in topics.items()]
    missing = [t for t in missing if t.topic not in existing]
    if missing:
        for name, fut in admin.create_topics(missing, request_timeout=timeout).items():
            try:
                fut.result()
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerError(f"cannot create topic {name}: {exc}") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout).topics
        if all(t in md and md[t].partitions for t in topics):
            return
        time.sleep(0.1)
    raise BrokerError(f"topics {sorted(topics)} did not appear within {timeout:.0f}s")


def partition_count(conf: Mapping[str, Any], topic: str, *, timeout: float = 10.0) -> int:
    """Number of partitions of ``topic`` (0 if it does not exist)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": conf["bootstrap.servers"]})
    md = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    return len(md.partitions) if md and not md.error else 0
