"""Single writes straight from Kafka, while the broker still retains them.

:class:`KafkaReplay` reads a window's offsets from the volume's partition with ``assign()``
and turns the volume's change events into :class:`streams.writelog.LogRecord` values, with
the same rules as the agents: TICKs, other volumes' events and records that do not decode
or break an event rule are skipped, duplicate sequences are skipped. It answers None when
the offsets are no longer retained (low watermark past the window's first offset) or the
broker cannot be reached, so the caller falls back to the archived write log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connectors.errors import BrokerError, DecodeError, InvalidEventError
from connectors.kafka import consumer_config
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent
from streams.writelog import LogRecord

log = logging.getLogger("kcdp.restore")


class KafkaReplay:
    """Reads events of ``topic``/``partition`` (librdkafka ``kafka_conf``) for replay.

    ``timeout`` (default 5 s) bounds the watermark query and each wait for a record;
    ``quiet`` (default False) silences librdkafka's own log lines (for a probe whose
    failure only means "use the write log").
    """

    def __init__(
        self,
        *,
        kafka_conf: Mapping[str, Any],
        topic: str,
        partition: int,
        codec: AvroCodec | None = None,
        timeout: float = 5.0,
        quiet: bool = False,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.codec = codec or AvroCodec()
        self.timeout = timeout
        self._conf = consumer_config(kafka_conf, "kcdp-restore", **{"enable.partition.eof": True})

    def records(self, volume: str, first: int, upto: int) -> list[LogRecord] | None:
        """The records of ``volume`` at offsets ``first..upto``, or None if not retained."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer(self._conf)
        try:
            tp = TopicPartition(self.topic, self.partition)
            try:
                low, _ = consumer.get_watermark_offsets(tp, timeout=self.timeout)
            except KafkaException as exc:
                log.info("Kafka unavailable for replay (%s); using the write log", exc)
                return None
            if low > first:
                return None
            consumer.assign([TopicPartition(self.topic, self.partition, first)])
            records: list[LogRecord] = []
            if not self._read(consumer, volume, upto, records):
                log.info(
                    "offset %d is not in %s/%d; using the write log",
                    upto,
                    self.topic,
                    self.partition,
                )
                return None
            return records
        finally:
            consumer.close()

    def _read(self, consumer: Any, volume: str, upto: int, out: list[LogRecord]) -> bool:
        """Append records up to ``upto`` to ``out``; False if the partition ends first."""
        from confluent_kafka import KafkaError

        last_seq: dict[str, int] = {}
        while True:
            msgs = consumer.consume(num_messages=1000, timeout=self.timeout)
            if not msgs:
                raise BrokerError(f"no record from {self.topic}/{self.partition} in time")
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return False
                    raise BrokerError(f"reading {self.topic}/{self.partition}: {err}")
                offset = msg.offset()
                if offset > upto:
                    return True
                found = self._record(msg.value(), offset, volume)
                if found is not None and found[1].sequence > last_seq.get(found[0], -1):
                    last_seq[found[0]] = found[1].sequence
                    out.append(found[1])
                if offset == upto:
                    return True

    def _record(
        self, value: bytes | None, offset: int, volume: str
    ) -> tuple[str, LogRecord] | None:
        """(session, record) of a valid event of ``volume``, else None."""
        try:
            event = WriteEvent.from_record(self.codec.decode(value or b""))
            if event.kind is EventKind.TICK or event.volume != volume:
                return None
            event.validate()
        except (DecodeError, InvalidEventError, KeyError, ValueError):
            return None
        return event.session, LogRecord.from_event(event, offset)
