"""The worker's bulk data path: a confluent-kafka consumer in ``assign()`` mode.

The Faust consumer stays the group member (assignment, commits); the records of the
partitions it is assigned are read here instead, in batches, with no per-message Python
work beyond building ``(offset, key, value)`` tuples. :class:`BulkReader` never joins a
group and never commits: its ``group.id`` (``<group>.reader``) only satisfies librdkafka.

Thread-confined: every method runs on the worker's build thread, so assignment changes
never race a read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from connectors.errors import BrokerError
from connectors.kafka import consumer_config
from streams.outcome import Record

log = logging.getLogger("kcdp.reader")


class BulkReader:
    """Reads the partitions it is assigned of ``topic``, in offset order per partition.

    ``conf``: librdkafka properties (bootstrap servers, ``-X`` options). ``group_id``:
    only named to librdkafka (no membership, no commits). ``batch_size`` [1000]: records
    per :meth:`read`; ``timeout`` [0.05 s]: the longest :meth:`read` waits for them.
    librdkafka prefetches up to ``queued.max.messages.kbytes`` [64 MiB] per partition and
    fetches again 10 ms after that queue was full (``fetch.queue.backoff.ms`` [10]; both
    can be set in ``conf``).
    The consumer is created on first assignment.
    """

    def __init__(
        self,
        conf: Mapping[str, Any],
        topic: str,
        *,
        group_id: str,
        batch_size: int = 1000,
        timeout: float = 0.05,
    ) -> None:
        # librdkafka pauses a partition's fetches this long once its local queue is full
        # (default 1000 ms): the worker then drains the queue and waits idle. 10 ms keeps
        # the queue filled while it stays bounded by queued.max.messages.kbytes.
        self.conf = consumer_config(
            {"fetch.queue.backoff.ms": 10, **conf},
            group_id,
            **{"enable.partition.eof": False, "max.partition.fetch.bytes": 8 << 20},
        )
        self.topic = topic
        self.batch_size = batch_size
        self.timeout = timeout
        self.assigned: set[int] = set()
        self._consumer: Any = None

    def assign(self, starts: Mapping[int, int | None]) -> None:
        """Start reading each partition at its offset (None: the earliest kept)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

        new = {p: o for p, o in starts.items() if p not in self.assigned}
        if not new:
            return
        if self._consumer is None:
            self._consumer = Consumer(self.conf)
        tps = [
            TopicPartition(self.topic, p, OFFSET_BEGINNING if o is None else o)
            for p, o in sorted(new.items())
        ]
        try:
            self._consumer.incremental_assign(tps)
        except KafkaException as exc:
            raise BrokerError(
                f"cannot assign {self.topic} partitions {sorted(new)}: {exc}"
            ) from None
        self.assigned.update(new)

    def unassign(self, partitions: Iterable[int]) -> None:
        """Stop reading these partitions; records already fetched for them are dropped."""
        from confluent_kafka import KafkaException, TopicPartition

        gone = sorted(set(partitions) & self.assigned)
        if not gone:
            return
        self.assigned.difference_update(gone)
        try:
            self._consumer.incremental_unassign([TopicPartition(self.topic, p) for p in gone])
        except KafkaException as exc:
            raise BrokerError(f"cannot unassign {self.topic} partitions {gone}: {exc}") from None

    def read(self) -> dict[int, list[Record]]:
        """Up to ``batch_size`` records, grouped by partition, each list in offset order.

        Waits at most ``timeout`` (all of it when nothing is assigned)."""
        if not self.assigned:
            time.sleep(self.timeout)
            return {}
        out: dict[int, list[Record]] = {}
        assigned = self.assigned
        for msg in self._consumer.consume(self.batch_size, self.timeout):
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise BrokerError(f"reading {self.topic}: {err.str()}")
                log.warning("reading %s: %s", self.topic, err.str())
                continue
            p = msg.partition()
            if p not in assigned:
                continue  # fetched before its unassignment
            batch = out.get(p)
            if batch is None:
                batch = out[p] = []
            batch.append((msg.offset(), msg.key(), msg.value()))
        return out

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self.assigned.clear()


def read_range(
    conf: Mapping[str, Any],
    topic: str,
    partition: int,
    lo: int,
    hi: int,
    *,
    group_id: str,
    timeout: float = 10.0,
) -> list[Record]:
    """The records at offsets ``lo..hi`` of one partition, read again by a new consumer
    (``assign()``, no group), in offset order.

    Stops at ``hi``, at the end of the partition, or after ``timeout`` seconds without a
    record (then what was read so far is returned: a re-read finds records, it never
    proves their absence beyond what the broker served). Raises :class:`BrokerError` on a
    fatal consumer error."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(consumer_config(conf, group_id, **{"enable.partition.eof": True}))
    out: list[Record] = []
    try:
        consumer.assign([TopicPartition(topic, partition, lo)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(min(0.5, max(0.0, deadline - time.monotonic())))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    break
                if err.fatal():
                    raise BrokerError(f"re-reading {topic}[{partition}]: {err.str()}")
                continue
            offset = msg.offset()
            if offset is None or offset > hi:
                break
            if offset >= lo:
                out.append((offset, msg.key(), msg.value()))
                deadline = time.monotonic() + timeout
            if offset >= hi:
                break
    finally:
        consumer.close()
    return out
