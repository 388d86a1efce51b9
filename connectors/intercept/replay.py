"""Read a volume's events back from the topic and replay them onto an image file.

A small consumer of the event format, for tests and tools: it reads a partition with
``assign()`` (no consumer group) from a start offset up to the high watermark seen when
the read began, keeps one volume's events, and applies change events in offset order.
The restore side builds the production replica; this is the reference replayer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.errors import BrokerError, VolumeError
from schemas.codec import AvroCodec
from schemas.events import CHANGE_KINDS, DATA_KINDS, EventKind, WriteEvent


@dataclass(frozen=True, slots=True)
class Record:
    """One event as read from Kafka: where it is and what it says."""

    partition: int
    offset: int
    key: bytes
    event: WriteEvent


def read_events(
    bootstrap_servers: str,
    topic: str,
    *,
    volume: str | None = None,
    partitions: Iterable[int] | None = None,
    start: int = 0,
    client_config: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> list[Record]:
    """Events of ``topic`` (all partitions unless given) from ``start`` to the high
    watermark, in offset order per partition; only ``volume``'s if given.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": "kcdp-replay",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **(client_config or {}),
    }
    codec = AvroCodec("WriteEvent")
    consumer = Consumer(conf)
    out: list[Record] = []
    try:
        md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if md is None or md.error is not None:
            raise BrokerError(f"topic {topic} does not exist")
        wanted = sorted(md.partitions) if partitions is None else sorted(partitions)
        for partition in wanted:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            begin = max(start, low)
            if begin >= high:
                continue
            consumer.assign([TopicPartition(topic, partition, begin)])
            position = begin
            while position < high:
                msg = consumer.poll(timeout)
                if msg is None:
                    raise BrokerError(
                        f"no record from {topic}[{partition}] at {position} within {timeout:g}s"
                    )
                if msg.error():
                    raise BrokerError(f"reading {topic}[{partition}]: {msg.error()}")
                at = int(msg.offset() or 0)
                position = at + 1
                event = WriteEvent.from_record(codec.decode(msg.value() or b""))
                if volume is None or event.volume == volume:
                    out.append(Record(partition, at, msg.key() or b"", event))
            consumer.unassign()
    except KafkaException as exc:
        raise BrokerError(f"reading {topic}: {exc}") from None
    finally:
        consumer.close()
    return out


def apply_events(records: Iterable[Record], image: str | os.PathLike[str], size: int) -> int:
    """Apply the change events of ``records`` in order onto ``image`` (created sparse,
    ``size`` bytes, if missing); the number of events applied.
    """
    applied = 0
    fd = os.open(image, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        for rec in records:
            ev = rec.event
            if ev.kind not in CHANGE_KINDS:
                continue
            if ev.offset + ev.length > size:
                raise VolumeError(f"event at offset {rec.offset} ends past the image end {size}")
            if ev.kind in DATA_KINDS:
                os.pwrite(fd, ev.data, ev.offset)
            else:
                pos, end = ev.offset, ev.offset + ev.length
                while pos < end:
                    n = min(1 << 20, end - pos)
                    os.pwrite(fd, bytes(n), pos)
                    pos += n
            applied += 1
        os.fsync(fd)
    finally:
        os.close(fd)
    return applied


def since_last_baseline(records: list[Record]) -> list[Record]:
    """The records from the last ``BASELINE_START`` on (all of them if there is none)."""
    for i in range(len(records) - 1, -1, -1):
        if records[i].event.kind is EventKind.BASELINE_START:
            return records[i:]
    return records


def replay(
    bootstrap_servers: str,
    topic: str,
    volume: str,
    image: str | os.PathLike[str],
    size: int,
    *,
    start: int = 0,
    client_config: Mapping[str, Any] | None = None,
) -> list[Record]:
    """Read ``volume``'s events from ``start`` and apply them onto ``image``; the records."""
    records = read_events(
        bootstrap_servers, topic, volume=volume, start=start, client_config=client_config
    )
    apply_events(records, image, size)
    return records
