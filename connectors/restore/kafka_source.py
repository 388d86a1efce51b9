"""Single writes straight from Kafka, while the broker still retains them.

:class:`KafkaReplay` reads offsets of the volume's partition with ``assign()`` and turns
the volume's change events into :class:`schemas.writelog.LogRecord` values, with the same
rules as the agents: TICKs, other volumes' events and records that do not decode or break
an event rule are skipped, duplicate sequences are skipped.

It serves two cases: a window's events (instead of its archived write log), and the
*tail* after the newest stored window (events not yet in any window). For the tail the
caller passes the newest window's last offset (``continues``): the event there seeds the
volume's (session, sequence), and the replay checks that the sequence continues without a
hole (:class:`GapError`) and that a new session resumed the previous one cleanly (else
:class:`NotRestorableError`: the history is not consistent until a new baseline, which
only a window can record).

:meth:`KafkaReplay.records` answers None when the offsets are no longer retained (low
watermark past the first offset), not yet in the partition, or the broker (or the schema
registry, for Confluent-framed records) cannot be reached, so the caller can fall back to
the write log; records are never skipped as undecodable for a registry that cannot answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from connectors.errors import (
    BrokerError,
    DecodeError,
    GapError,
    InvalidEventError,
    NotRestorableError,
    RegistryError,
)
from connectors.kafka import consumer_config
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent
from schemas.writelog import LogRecord

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
        extra: dict[str, Any] = {"enable.partition.eof": True}
        if quiet:
            extra["log_level"] = 0
        self._conf = consumer_config(kafka_conf, "kcdp-restore", **extra)

    def records(
        self, volume: str, first: int, upto: int, *, continues: int | None = None
    ) -> list[LogRecord] | None:
        """The records of ``volume`` at offsets ``first..upto``, or None if not available.

        ``continues``: the offset of the volume's last event before ``first``; the records
        must continue its session and sequence (see the module docstring).
        """
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer(self._conf)
        try:
            tp = TopicPartition(self.topic, self.partition)
            try:
                low, _ = consumer.get_watermark_offsets(tp, timeout=self.timeout)
            except KafkaException as exc:
                log.info("Kafka unavailable for replay (%s)", exc)
                return None
            start = first if continues is None else continues
            if low > start:
                log.info("offsets from %d are no longer retained in %s", start, self.topic)
                return None
            consumer.assign([TopicPartition(self.topic, self.partition, start)])
            records: list[LogRecord] = []
            try:
                complete = self._read(consumer, volume, upto, records, continues)
            except RegistryError as exc:  # the records may be fine: do not judge them
                log.warning("Kafka replay stopped: %s", exc)
                return None
            if not complete:
                log.info("offset %d is not in %s/%d", upto, self.topic, self.partition)
                return None
            return records
        finally:
            consumer.close()

    def _read(
        self,
        consumer: Any,
        volume: str,
        upto: int,
        out: list[LogRecord],
        continues: int | None,
    ) -> bool:
        """Append records up to ``upto`` to ``out``; False if the partition ends first."""
        from confluent_kafka import KafkaError

        last_seq: dict[str, int] = {}
        current: tuple[str, int] | None = None
        idle_since = time.monotonic()
        while True:
            # consume() waits for the whole batch or the timeout: keep the wait short
            msgs = consumer.consume(num_messages=500, timeout=0.1)
            if not msgs:
                if time.monotonic() - idle_since > self.timeout:
                    raise BrokerError(f"no record from {self.topic}/{self.partition} in time")
                continue
            idle_since = time.monotonic()
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return False
                    raise BrokerError(f"reading {self.topic}/{self.partition}: {err}")
                offset = msg.offset()
                if offset > upto:
                    return True
                event = self._event(msg.value(), volume)
                if offset == continues:
                    if event is None:
                        raise NotRestorableError(
                            f"offset {offset} of {self.topic}/{self.partition} is not the "
                            f"event of {volume} its newest window ends with"
                        )
                    current = (event.session, event.sequence)
                    last_seq[event.session] = event.sequence
                    continue
                if event is not None and event.sequence > last_seq.get(event.session, -1):
                    if current is not None:
                        _check_continues(volume, offset, current, event)
                        current = (event.session, event.sequence)
                    last_seq[event.session] = event.sequence
                    out.append(LogRecord.from_event(event, offset))
                if offset == upto:
                    return True

    def _event(self, value: bytes | None, volume: str) -> WriteEvent | None:
        """The valid event of ``volume`` in ``value``, else None."""
        try:
            event = WriteEvent.from_record(self.codec.decode(value or b""))
            if event.kind is EventKind.TICK or event.volume != volume:
                return None
            event.validate()
        except (DecodeError, InvalidEventError, KeyError, ValueError):
            return None
        return event


def _check_continues(volume: str, offset: int, current: tuple[str, int], ev: WriteEvent) -> None:
    session, sequence = current
    if ev.session == session:
        if ev.sequence != sequence + 1:
            raise GapError(
                f"volume {volume}: sequence gap at offset {offset} (expected {sequence + 1}, "
                f"got {ev.sequence})"
            )
    elif ev.kind is not EventKind.SESSION_START or ev.sequence != 0 or ev.name != session:
        raise NotRestorableError(
            f"volume {volume}: session {ev.session} at offset {offset} does not resume "
            f"{session} cleanly; points after it are not consistent until a new baseline"
        )
