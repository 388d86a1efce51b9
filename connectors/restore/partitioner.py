"""The Java Kafka client's default partitioner (murmur2), so a group's partition is known
without producing anything.

kafka-cdp producers use librdkafka's ``murmur2_random`` partitioner, which for a non-empty
key equals the Java client's ``toPositive(murmur2(key)) % partitions``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.errors import BrokerError, NotRestorableError

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` as an unsigned 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & ~3
    extra = length % 4
    if extra == 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: str, partitions: int) -> int:
    """The partition a record with ``key`` (a group name, UTF-8) lands in."""
    if partitions <= 0:
        raise ValueError("partitions must be positive")
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


def group_partition(conf: Mapping[str, Any], topic: str, group: str) -> int:
    """The partition of ``group`` in ``topic``, from the topic's metadata."""
    from confluent_kafka import KafkaException

    from connectors.kafka import partition_count

    try:
        count = partition_count(conf, topic)
    except KafkaException as exc:
        raise BrokerError(f"cannot read metadata of topic {topic!r}: {exc}") from None
    if count <= 0:
        raise NotRestorableError(f"topic {topic!r} does not exist on the broker")
    return partition_for(group, count)
