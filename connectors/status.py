"""How far protection is behind capture, per volume: :class:`StatusReader` reads the
store, the write topic, the dead-letter topic and the worker group's commits into
:class:`~connectors.status_figures.VolumeStatus` (every figure is defined once, in the
README, "Status and metrics"). The topic is read forward from the last durable window when
that span is small (≤ ``max_scan`` records), else backwards from the high watermark in
batches of ``batch`` records with ``assign()``; never with ``offsets_for_times``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.errors import BrokerError, DecodeError, InvalidEventError, NotRestorableError
from connectors.kafka import admin_config, connect_admin, consumer_config
from connectors.restore.catalog import Catalog
from connectors.restore.partitioner import partition_for
from connectors.status_figures import (
    VolumeStatus,
    WorkerHealth,
    history_figures,
    list_volumes,
    restorable_span,
    stored_bytes,
)
from connectors.store.base import ObjectStore
from connectors.worker_metrics import WorkerFigures
from schemas import keys
from schemas.codec import AvroCodec
from schemas.events import DATA_KINDS, EventKind, WriteEvent, now_us

log = logging.getLogger("kcdp.status")

#: Default bound on records read per partition and per topic.
DEFAULT_MAX_SCAN = 200_000
#: Default size of one backward read batch.
DEFAULT_BATCH = 2_000


@dataclass(slots=True)
class _Scan:
    """What a read of one partition found for one volume."""

    start: int
    last_offset: int | None = None
    last_time_us: int | None = None
    lag_events: int = 0
    lag_bytes: int = 0
    oldest_lag_time_us: int | None = None
    complete: bool = True


@dataclass(slots=True)
class _Volume:
    """A volume's store-side facts, gathered before the topic is read."""

    name: str
    group: str
    partition: int
    catalog: Catalog
    durable: tuple[int, int, int] | None  # first, last offset, last event time
    scan: _Scan = field(default_factory=lambda: _Scan(0))


class StatusReader:
    """Computes :class:`VolumeStatus` values from a store and a Kafka cluster.

    ``kafka_conf``: librdkafka properties (bootstrap servers, ``-X``). ``group_id``: the
    worker's consumer group. ``max_scan`` (default 200 000) bounds records read per
    partition and from the dead-letter topic; ``batch`` (2 000) is one backward read;
    ``timeout`` (10 s) bounds every broker call and every wait for records. ``clock``
    gives "now" in µs (RPO).
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        kafka_conf: Mapping[str, Any],
        group_id: str,
        topic: str = "kcdp.writes",
        dlq_topic: str = "kcdp.writes.dlq",
        codec: AvroCodec | None = None,
        dlq_codec: AvroCodec | None = None,
        max_scan: int = DEFAULT_MAX_SCAN,
        batch: int = DEFAULT_BATCH,
        timeout: float = 10.0,
        clock: Callable[[], int] = now_us,
        worker_figures: Mapping[str, WorkerFigures] | None = None,
        keep_within: float | None = None,
    ) -> None:
        if max_scan <= 0 or batch <= 0 or timeout <= 0:
            raise ValueError("max_scan, batch and timeout must be positive")
        self.store = store
        self.conf = dict(kafka_conf)
        self.group_id = group_id
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.codec = codec or AvroCodec("WriteEvent")
        self.dlq_codec = dlq_codec or AvroCodec("DeadLetter")
        self.max_scan = max_scan
        self.batch = batch
        self.timeout = timeout
        self.clock = clock
        self.worker_figures = worker_figures
        self.keep_within = keep_within

    # -- entry point -------------------------------------------------------------------
    def volumes(self, names: Iterable[str] | None = None) -> list[VolumeStatus]:
        """Status of ``names`` (default: every volume in the store), sorted by name."""
        known = list_volumes(self.store, self.topic)
        wanted = sorted(known) if names is None else [keys.check_name(n) for n in names]
        if not wanted:
            return []
        from confluent_kafka import Consumer

        connect_admin(self.conf, timeout=self.timeout)  # refused credentials: fail now
        consumer = Consumer(
            consumer_config(self.conf, self.group_id, **{"enable.partition.eof": False})
        )
        try:
            counts = self._partition_count(consumer)
            vols = [self._volume(name, known.get(name), counts) for name in wanted]
            by_partition: dict[int, list[_Volume]] = {}
            for v in vols:
                by_partition.setdefault(v.partition, []).append(v)
            marks = {p: self._watermarks(consumer, p) for p in by_partition}
            for p, group in by_partition.items():
                self._scan(consumer, p, marks[p], group)
            committed = self._committed(consumer, list(by_partition))
            dlq = self._dead_letters(consumer)
        finally:
            consumer.close()
        members, state = self._group()
        now = self.clock()
        out = []
        for v in vols:
            high = marks[v.partition][1]
            done = committed.get(v.partition)
            health = WorkerHealth(
                group_id=self.group_id,
                committed_offset=done,
                high_watermark=high,
                uncommitted=None if done is None else max(0, high - done),
                members=members,
                state=state,
            )
            out.append(self._status(v, health, dlq.get(v.name, {}), now))
        return out

    def _status(
        self, v: _Volume, health: WorkerHealth, dlq: dict[str, int], now: int
    ) -> VolumeStatus:
        s = v.scan
        last_offset, last_time = s.last_offset, s.last_time_us
        if v.durable is not None and (last_offset is None or last_offset < v.durable[1]):
            last_offset, last_time = v.durable[1], v.durable[2]
        rpo = 0.0
        if s.oldest_lag_time_us is not None:
            rpo = max(0.0, (now - s.oldest_lag_time_us) / 1e6)
        oldest, newest = restorable_span(v.catalog) if len(v.catalog) else (None, None)
        live = None if self.worker_figures is None else self.worker_figures.get(v.name)
        return VolumeStatus(
            volume=v.name,
            group=v.group,
            topic=self.topic,
            partition=v.partition,
            last_captured_offset=last_offset,
            last_captured_time_us=last_time,
            last_durable_first_offset=None if v.durable is None else v.durable[0],
            last_durable_offset=None if v.durable is None else v.durable[1],
            last_durable_time_us=None if v.durable is None else v.durable[2],
            windows=len(v.catalog),
            lag_events=s.lag_events,
            lag_bytes=s.lag_bytes,
            lag_complete=s.complete,
            rpo_seconds=round(rpo, 6),
            oldest_point=oldest,
            newest_point=newest,
            bytes_stored=stored_bytes(self.store, v.catalog),
            gaps=[
                {"kind": g.kind, "at_offset": g.at_offset, "detail": g.detail}
                for g in v.catalog.gaps
            ],
            dlq_events=sum(dlq.values()),
            dlq_by_reason=dict(sorted(dlq.items())),
            fenced_sessions=list(v.catalog.manifest(len(v.catalog) - 1).fenced)
            if len(v.catalog)
            else [],
            history_problem=v.catalog.history_problem(),
            quarantined=None if live is None else live.quarantined,
            reread_found=None if live is None else live.reread_found,
            worker=health,
            checked_us=now,
            **history_figures(v.catalog, self.keep_within),
        )

    # -- store side --------------------------------------------------------------------
    def _volume(self, name: str, marker: int | None, counts: int) -> _Volume:
        catalog = Catalog(self.store, name)
        durable = None
        group = name
        partition = marker
        if len(catalog):
            m = catalog.manifest(len(catalog) - 1)
            durable = (m.first_offset, m.last_offset, m.last_time_us)
            group, partition = m.group, m.partition
        if partition is None:
            if counts <= 0:
                raise NotRestorableError(f"topic {self.topic!r} does not exist on the broker")
            partition = partition_for(group, counts)
        return _Volume(name, group, partition, catalog, durable)

    # -- topic side --------------------------------------------------------------------
    def _partition_count(self, consumer: Any) -> int:
        from confluent_kafka import KafkaException

        try:
            md = consumer.list_topics(self.topic, timeout=self.timeout).topics.get(self.topic)
        except KafkaException as exc:
            raise BrokerError(f"cannot read metadata of topic {self.topic!r}: {exc}") from None
        return len(md.partitions) if md is not None and not md.error else 0

    def _watermarks(self, consumer: Any, partition: int) -> tuple[int, int]:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=self.timeout
            )
        except KafkaException as exc:
            raise BrokerError(
                f"cannot read watermarks of {self.topic}/{partition}: {exc}"
            ) from None
        return int(low), int(high)

    def _read(
        self, consumer: Any, topic: str, partition: int, start: int, end: int
    ) -> Iterable[Any]:
        """Messages of ``topic``/``partition`` with ``start <= offset < end`` (bounded waits)."""
        from confluent_kafka import TopicPartition

        if start >= end:
            return
        consumer.assign([TopicPartition(topic, partition, start)])
        following = start
        deadline = time.monotonic() + self.timeout
        try:
            while following < end:
                msgs = consumer.consume(num_messages=min(1000, end - following), timeout=0.2)
                if not msgs:
                    if time.monotonic() > deadline:
                        raise BrokerError(
                            f"no record from {topic}/{partition} within {self.timeout:.0f}s "
                            f"while reading offsets {following}..{end - 1}"
                        )
                    continue
                deadline = time.monotonic() + self.timeout
                for msg in msgs:
                    if msg.error():
                        continue
                    if msg.offset() >= end:
                        return
                    following = msg.offset() + 1
                    yield msg
        finally:
            consumer.unassign()

    def _event(self, value: bytes | None) -> WriteEvent | None:
        """The valid event in ``value``, or None (TICKs and dead letters are not counted)."""
        try:
            event = WriteEvent.from_record(self.codec.decode(value or b""))
            if event.kind is EventKind.TICK:
                return None
            event.validate()
        except (DecodeError, InvalidEventError, KeyError, ValueError):
            return None
        return event

    def _scan(
        self, consumer: Any, partition: int, marks: tuple[int, int], vols: list[_Volume]
    ) -> None:
        """Fill each volume's :class:`_Scan` from ``partition`` (see the module docstring)."""
        low, high = marks
        by_name = {v.name: v for v in vols}
        for v in vols:
            v.scan = _Scan(start=max(low, v.durable[1] + 1 if v.durable else low))
        start = min(v.scan.start for v in vols)
        end = min(high, start + self.max_scan)
        for msg in self._read(consumer, self.topic, partition, start, end):
            event = self._event(msg.value())
            owner = by_name.get(event.volume) if event is not None else None
            if event is None or owner is None:
                continue
            s = owner.scan
            s.last_offset, s.last_time_us = msg.offset(), event.timestamp_us
            if msg.offset() >= s.start:
                s.lag_events += 1
                s.lag_bytes += len(event.data) if event.kind in DATA_KINDS else 0
                if s.oldest_lag_time_us is None:
                    s.oldest_lag_time_us = event.timestamp_us
        if end < high:
            for v in vols:
                v.scan.complete = False
            self._scan_back(consumer, partition, end, high, vols)

    def _scan_back(
        self, consumer: Any, partition: int, floor: int, high: int, vols: list[_Volume]
    ) -> None:
        """Newest event of each volume in ``[floor, high)``, reading back in batches."""
        missing = {v.name: v for v in vols}
        stop = high
        read = 0
        while missing and stop > floor and read < self.max_scan:
            begin = max(floor, stop - self.batch)
            newest: dict[str, tuple[int, int]] = {}
            for msg in self._read(consumer, self.topic, partition, begin, stop):
                event = self._event(msg.value())
                if event is not None and event.volume in missing:
                    newest[event.volume] = (msg.offset(), event.timestamp_us)
            for name, (offset, time_us) in newest.items():
                s = missing.pop(name).scan
                s.last_offset, s.last_time_us = offset, time_us
            read += stop - begin
            stop = begin

    def _committed(self, consumer: Any, partitions: list[int]) -> dict[int, int]:
        """The worker group's committed offset per partition (absent: none committed)."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            found = consumer.committed(
                [TopicPartition(self.topic, p) for p in partitions], timeout=self.timeout
            )
        except KafkaException as exc:
            log.warning("cannot read committed offsets of group %s: %s", self.group_id, exc)
            return {}
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0 and not tp.error}

    def _dead_letters(self, consumer: Any) -> dict[str, dict[str, int]]:
        """Dead letters per volume and reason in the dead-letter topic (absent topic: none)."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            md = consumer.list_topics(self.dlq_topic, timeout=self.timeout).topics.get(
                self.dlq_topic
            )
        except KafkaException as exc:
            raise BrokerError(f"cannot read metadata of {self.dlq_topic!r}: {exc}") from None
        counts: dict[str, dict[str, int]] = {}
        if md is None or md.error:
            return counts
        for p in sorted(md.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.dlq_topic, p), timeout=self.timeout
            )
            start = max(low, high - self.max_scan)
            for msg in self._read(consumer, self.dlq_topic, p, start, high):
                try:
                    letter = self.dlq_codec.decode(msg.value() or b"")
                except DecodeError:
                    continue
                reasons = counts.setdefault(str(letter.get("volume", "")), {})
                reason = str(letter.get("error", "")) or "unknown"
                reasons[reason] = reasons.get(reason, 0) + 1
        return counts

    def _group(self) -> tuple[int | None, str]:
        """(members, state) of the worker group; (None, "unknown") when the broker cannot
        tell — also when it calls the group active but lists no member (Tansu does)."""
        from confluent_kafka import ConsumerGroupState
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(admin_config(self.conf))
        try:
            futures = admin.describe_consumer_groups([self.group_id], request_timeout=self.timeout)
            desc = futures[self.group_id].result(timeout=self.timeout)
        except Exception as exc:  # unsupported by the broker, or it failed: say unknown
            log.info("describe_consumer_groups(%s) failed: %s", self.group_id, exc)
            return None, "unknown"
        members = len(desc.members)
        if members:
            return members, "running"
        if desc.state in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD):
            return 0, "stopped"
        return None, "unknown"
