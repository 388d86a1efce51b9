"""A live replica: a hot standby image of one volume kept current from ``kcdp.writes``.

The replica reads the partition of the volume's group with ``assign()`` (no consumer
group, no join delay), decodes every record, and applies the change events of its volume
in batches: each batch is coalesced (last writer wins per byte) and written sorted by
volume offset, the image is fsynced, and only then is the applied offset stored atomically
in ``<output>.kcdp-replica.json`` (docs/FORMAT.md "Local state files"). A restart resumes
after the stored offset; re-applying a batch that was partly written before a crash gives
the same bytes, because a coalesced batch rewrites every range it touches.

With a ``store``, an image without a state (empty or missing) is first seeded from the
store's newest point, and so is an image whose next offset the topic no longer holds
(retention), when the store reaches the topic (:mod:`connectors.restore.replica_seed`).

Rules: records of other volumes, TICKs and markers advance the offset only; records that
do not decode or break an event rule are skipped with a warning (the agents dead-letter
them); a duplicate sequence is skipped; a skipped sequence, a session that does not start
at sequence 0, or offsets deleted from the topic and not in the store stop the replica with
:class:`GapError` after applying everything before the gap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from connectors.errors import (
    BrokerError,
    DecodeError,
    GapError,
    InvalidEventError,
    NotRestorableError,
    VolumeError,
)
from connectors.kafka import consumer_config
from connectors.restore.coalesce import Coalescer
from connectors.restore.replica_seed import seed_image
from connectors.store.base import ObjectStore
from schemas.applied_state import AppliedState, load_state, save_state, state_path
from schemas.codec import AvroCodec
from schemas.events import CHANGE_KINDS, DATA_KINDS, EventKind, WriteEvent
from schemas.image import Image

log = logging.getLogger("kcdp.replica")


class Replica:
    """Follows one volume's partition into an image at ``output``.

    ``kafka_conf`` holds librdkafka properties (at least ``bootstrap.servers``);
    ``partition`` is the group's partition
    (:func:`connectors.restore.partitioner.group_partition`).
    ``batch_max`` (default 2000 records) and ``batch_bytes`` (default 64 MiB of data) bound
    a batch; ``poll_timeout`` (default 0.5 s) is how long one poll waits.
    """

    def __init__(
        self,
        *,
        volume: str,
        output: str | Path,
        partition: int,
        kafka_conf: Mapping[str, Any],
        topic: str = "kcdp.writes",
        codec: AvroCodec | None = None,
        store: ObjectStore | None = None,
        batch_max: int = 2000,
        batch_bytes: int = 64 << 20,
        poll_timeout: float = 0.5,
    ) -> None:
        self.volume = volume
        self.output = Path(output)
        self.partition = partition
        self.topic = topic
        self.codec = codec or AvroCodec()
        self.batch_max = batch_max
        self.batch_bytes = batch_bytes
        self.poll_timeout = poll_timeout
        self.store = store
        self._conf = consumer_config(
            kafka_conf, f"kcdp-replica-{volume}", **{"enable.partition.eof": True}
        )
        self._image: Image | None = None
        stored = load_state(self.output)
        if stored is not None and (stored.volume, stored.topic, stored.partition) != (
            volume,
            topic,
            partition,
        ):
            raise VolumeError(
                f"{state_path(self.output)} belongs to volume {stored.volume!r} "
                f"({stored.topic}/{stored.partition}), not {volume!r} ({topic}/{partition})"
            )
        if stored is not None and stored.move is not None:
            raise VolumeError(
                f"{state_path(self.output)}: the image is in the middle of an in-place move "
                f"from {stored.move.source} to {stored.move.target}; finish it with kcdp "
                f"restore {volume} --to-offset {stored.move.target} --in-place {self.output}"
            )
        if stored is not None and stored.sequence >= 0 and not self.output.exists():
            raise VolumeError(
                f"{state_path(self.output)} records offset {stored.applied_offset} but the "
                f"image {self.output} is missing; remove the state file to rebuild the replica"
            )
        self.state = stored or AppliedState(volume=volume, topic=topic, partition=partition)

    # -- public ------------------------------------------------------------------------
    def run(
        self,
        *,
        follow: bool = False,
        until_offset: int | None = None,
        stop: threading.Event | None = None,
        end_timeout: float = 10.0,
    ) -> AppliedState:
        """Apply events until ``until_offset`` (inclusive), or without ``follow`` the end of
        the partition (librdkafka's partition-EOF: Tansu's high watermark is unreliable),
        or until ``stop`` is set. Returns the final state."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        stop = stop or threading.Event()
        if until_offset is not None and self.state.applied_offset > until_offset:
            raise NotRestorableError(
                f"replica {self.output} is already at offset {self.state.applied_offset}, "
                f"past --until-offset {until_offset}"
            )
        consumer = Consumer(self._conf)
        try:
            try:
                low, _ = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, self.partition), timeout=end_timeout
                )
            except KafkaException as exc:
                raise BrokerError(f"cannot read watermarks of {self.topic}: {exc}") from None
            self._seed(low)
            start = self.state.applied_offset + 1
            if low > start:
                raise GapError(
                    f"{self.topic}/{self.partition}: offsets {start}..{low - 1} were deleted "
                    f"from the topic; the replica of {self.volume} cannot continue "
                    "(without the store: drop --no-seed to continue from the store's newest "
                    "point)"
                )
            if until_offset is not None and until_offset < start:
                return self.state
            consumer.assign([TopicPartition(self.topic, self.partition, start)])
            at_end = self._loop(consumer, until_offset, follow, stop)
            if at_end and until_offset is not None and self.state.applied_offset < until_offset:
                raise NotRestorableError(
                    f"offset {until_offset} is not in {self.topic}/{self.partition} yet; "
                    f"the replica stopped at the end of the partition, offset "
                    f"{self.state.applied_offset}"
                )
        finally:
            consumer.close()
            if self._image is not None:
                self._image.close()
                self._image = None
        return self.state

    # -- internals ---------------------------------------------------------------------
    def _seed(self, low: int) -> None:
        """With a store: seed an image that has no state, or one the topic can no longer
        continue (``low``: the partition's oldest offset), from the store's newest point."""
        after = self.state.applied_offset
        trimmed = low > after + 1
        if self.store is None or not (after < 0 or trimmed):
            return
        seeded = seed_image(
            self.store,
            volume=self.volume,
            output=self.output,
            topic=self.topic,
            partition=self.partition,
            after=after,
            needed=low if trimmed else None,
        )
        if seeded is not None:
            self.state = seeded

    def _loop(self, consumer: Any, end: int | None, follow: bool, stop: threading.Event) -> bool:
        """Consume and apply until ``end``, ``stop``, or (without ``follow``) the end of
        the partition; True when it stopped at the end of the partition."""
        from confluent_kafka import KafkaError

        batch = Coalescer()
        pending = self.state
        while not stop.is_set():
            msgs = consumer.consume(num_messages=self.batch_max, timeout=self.poll_timeout)
            done = eof = False
            for msg in msgs:
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    eof = not follow
                    continue
                if err is not None:
                    raise BrokerError(f"consuming {self.topic}: {err}")
                offset = msg.offset()
                if end is not None and offset > end:
                    done = True
                    break
                try:
                    pending = self._take(msg.value(), offset, pending, batch)
                except GapError:
                    self._flush(batch, pending)
                    raise
                if batch.bytes >= self.batch_bytes:
                    self._flush(batch, pending)
            if pending != self.state:
                self._flush(batch, pending)
            if done or (end is not None and self.state.applied_offset >= end):
                return False
            if eof:
                return True
        return False

    def _take(
        self, value: bytes | None, offset: int, state: AppliedState, batch: Coalescer
    ) -> AppliedState:
        """Add one record to ``batch``; the state after it (not yet durable)."""
        advanced = replace(state, applied_offset=offset)
        try:
            event = WriteEvent.from_record(self.codec.decode(value or b""))
            if event.kind is EventKind.TICK or event.volume != self.volume:
                return advanced
            event.validate()
        except (DecodeError, InvalidEventError, KeyError, ValueError) as exc:
            log.warning("offset %d: skipped a record that is not a valid event: %s", offset, exc)
            return advanced
        if event.session == state.session:
            if event.sequence <= state.sequence:
                log.warning("offset %d: duplicate sequence %d skipped", offset, event.sequence)
                return advanced
            if event.sequence != state.sequence + 1:
                raise GapError(
                    f"volume {self.volume}: sequence gap at offset {offset} "
                    f"(expected {state.sequence + 1}, got {event.sequence}); the replica "
                    f"stopped at offset {state.applied_offset}"
                )
        elif event.sequence != 0 or event.kind is not EventKind.SESSION_START:
            raise GapError(
                f"volume {self.volume}: session {event.session} appears at offset {offset} "
                f"with sequence {event.sequence} and no SESSION_START; the replica stopped "
                f"at offset {state.applied_offset}"
            )
        elif state.session and event.name != state.session:
            log.warning(
                "volume %s: session %s at offset %d did not resume %s cleanly; the image is "
                "inconsistent until the next BASELINE_END",
                self.volume,
                event.session,
                offset,
                state.session,
            )
        if event.kind in CHANGE_KINDS:
            self._ensure_image(event.volume_size)
            data = event.data if event.kind in DATA_KINDS else None
            batch.add(event.offset, event.length, data)
        return replace(advanced, session=event.session, sequence=event.sequence)

    def _ensure_image(self, volume_size: int) -> None:
        if self._image is None:
            self._image = Image(self.output, volume_size)
        elif volume_size > self._image.size:
            raise VolumeError(
                f"volume {self.volume} grew to {volume_size} bytes; the replica image "
                f"{self.output} holds {self._image.size}"
            )

    def _flush(self, batch: Coalescer, state: AppliedState) -> None:
        """Write the batch sorted by offset, fsync, then store the state."""
        if len(batch):
            assert self._image is not None
            self._image.apply(batch.extents())
            self._image.sync()
            batch.clear()
        save_state(self.output, state)
        self.state = state
