"""The increments worker's state and batch loop (:class:`IncrementsWorker`), driven by the
Faust app of :mod:`streams.app`.

Design (docs/FORMAT.md "Ordering invariants"):

* **Data path.** Faust stays the consumer group member (an agent subscribes to
  ``kcdp.writes``), but it does not deliver the records: the worker pauses Faust's own
  fetching of every assigned ``kcdp.writes`` partition (``consumer.pause_partitions``,
  repeated after every batch because Faust resumes paused partitions when a rebalance's
  recovery completes) and reads them with a :class:`~streams.reader.BulkReader` — a
  confluent-kafka consumer in ``assign()`` mode, no group — in batches of up to
  ``batch_size`` records (librdkafka prefetches in its own threads). Any record Faust
  still delivers is ignored. Values are decoded by the pure
  :class:`~streams.partition.PartitionProcessor`, so an undecodable record becomes a dead
  letter instead of crashing the worker; both framings are read (single-object and, with
  ``--schema-registry``, Confluent, which is then also what the worker writes), and a
  registry that cannot answer fails the worker (after ``registry_wait``) instead of
  dead-lettering good records. Blocking work (reading, decoding, object uploads,
  image I/O) runs in one worker thread, which also serializes it against assignment;
  storing a cut window (increments, write log, manifest, image) runs on
  ``close_threads`` background threads meanwhile, one window per volume at a time, and
  each batch reports (announces, then commits) the windows stored since the last.
* **Commits are explicit.** The topic is declared with ``acks=False``: Faust then never
  records acknowledgements for it and so never commits its offsets on its own (neither
  on its commit interval nor on rebalance); the ``exactly_once`` guarantee is not used.
  After each batch the agent publishes dead letters and window announcements, flushes
  the producer (acknowledged by Kafka), and commits the processor's
  :attr:`~streams.partition.PartitionProcessor.commit_offset` — the first offset of the
  oldest window not yet stored and announced, else the next offset — through the Faust
  consumer's ``_commit`` (the aiokafka consumer's commit, restricted to assigned
  partitions). Faust offers no public call to commit an arbitrary offset; this is the
  narrowest one that does.
* **Assignment.** On ``on_partitions_revoked`` the reader stops reading the revoked
  partitions and the windows they are storing are finished and announced (in the build
  thread, so before the rebalance completes; the batch in flight finishes first). On
  ``on_partitions_assigned`` each new partition's processor resumes every volume the
  store places there (partition markers, last manifest, image rebuild) and learns the
  group's committed offset (to detect offsets lost to retention); the reader starts each
  assigned partition at its processor's next offset: the committed offset for a new
  partition (the earliest kept if none), where it stopped for one kept across the
  rebalance. Records at or below a volume's last manifest are
  skipped, so the store stays the source of truth. Partitions not assigned are dropped.
* **Timer.** Every ``tick_interval`` the worker produces a ``TICK`` into each partition
  whose oldest open window is past its deadline plus the grace; the window closes when
  the TICK is consumed, so timer closes are in the log and reproducible.
* **Failure.** Any error in the agent, timer or assignment is logged, kept in
  :attr:`IncrementsWorker.failure` and stops the worker with SIGTERM, so ``kcdp worker``
  exits non-zero instead of leaving a silently dead agent. Nothing is lost: offsets only
  ever cover durable windows.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from connectors.config import Settings
from connectors.errors import DeliveryError, KcdpError, UsageError
from connectors.kafka import producer_config
from connectors.store.base import ObjectStore
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent, now_us
from schemas.manifest import Manifest
from streams.metrics import VolumeState, WorkerMetrics
from streams.options import BuildOptions, WorkerOptions
from streams.outcome import Outcome, Record
from streams.partition import PartitionProcessor
from streams.reader import BulkReader, read_range
from streams.storing import WindowStorers
from streams.window import US

log = logging.getLogger("kcdp.worker")


class IncrementsWorker:
    """State of one worker: partition processors, producer, metrics. Thread-confined:
    every method but :meth:`volume_states` runs on :attr:`executor`'s single thread."""

    def __init__(self, settings: Settings, store: ObjectStore, options: WorkerOptions) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        self.store = store
        self.opt = options
        self.metrics = WorkerMetrics()
        self.metrics.watch(self.volume_states)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kcdp-build")
        self.processors: dict[int, PartitionProcessor] = {}
        self.producer = Producer(producer_config(settings.kafka_config()))
        self.event_codec = _codec(settings, "WriteEvent", settings.topic, options)
        self.dlq_codec = _codec(settings, "DeadLetter", settings.dlq_topic, options)
        self.announce_codec = _codec(
            settings, "WindowCommitted", settings.increments_topic, options
        )
        self.failure: BaseException | None = None
        self.storers: WindowStorers | None = None
        if options.store_processes > 0:
            if store.url.startswith("memory://"):
                raise UsageError("a memory:// store cannot be shared with child processes")
            self.storers = WindowStorers(options.store_processes, options.workdir / "spill")
        #: per partition: the deadline of the last TICK sent, and the TICKs its processor
        #: had consumed then
        self._ticked: dict[int, tuple[int, int]] = {}
        self._pending = 0
        self._committed: dict[int, int] = {}
        self.reader = BulkReader(
            settings.kafka_config(),
            settings.topic,
            group_id=f"{options.group_id}.reader",
            batch_size=options.batch_size,
            timeout=options.batch_within,
        )

    # -- partitions ----------------------------------------------------------------------
    def assign(self, partitions: set[int]) -> None:
        """Own exactly ``partitions``: drop the others, open the new, read them all."""
        self.reader.unassign(set(self.reader.assigned) - partitions)
        for p in sorted(set(self.processors) - partitions):
            log.info("partition %d revoked", p)
            self.processors.pop(p).close()
        for p in sorted(partitions - set(self.processors)):
            self._open(p)
        self.reader.assign({p: self.processors[p].next_offset for p in partitions})

    def revoke(self, partitions: set[int]) -> None:
        """Stop reading ``partitions``; finish and announce the windows they are storing
        (their processors stay until :meth:`assign`)."""
        self.reader.unassign(partitions)
        for p in partitions & set(self.processors):
            self._settle(p, self.processors[p].drain())

    def _open(self, partition: int) -> PartitionProcessor:
        opts = BuildOptions(
            topic=self.settings.topic,
            partition=partition,
            workdir=self.opt.workdir / "images" / str(partition),
            policy=self.opt.policy,
            checkpoint_windows=self.opt.checkpoint_windows,
            checkpoint_bytes=self.opt.checkpoint_bytes,
            close_threads=self.opt.close_threads,
        )
        proc = PartitionProcessor(
            self.store,
            opts,
            codec=self.event_codec,
            on_window=self._announce,
            storers=self.storers,
            reread=lambda lo, hi: self._reread(partition, lo, hi),
        )
        start = self._committed_offset(partition)
        proc.open(start)
        log.info(
            "partition %d assigned: %d volume(s) resumed, committed offset %s",
            partition,
            len(proc.volumes),
            start,
        )
        self.processors[partition] = proc
        return proc

    def _reread(self, partition: int, lo: int, hi: int) -> list[Record]:
        """Offsets ``lo..hi`` of ``partition`` read again (before a gap is declared)."""
        self.metrics.rereads.inc()
        return read_range(
            self.settings.kafka_config(),
            self.settings.topic,
            partition,
            lo,
            hi,
            group_id=f"{self.opt.group_id}.reader",
        )

    def _committed_offset(self, partition: int) -> int | None:
        from confluent_kafka import Consumer, TopicPartition

        conf = self.settings.kafka_config(**{"group.id": self.opt.group_id})
        conf["enable.auto.commit"] = False
        c = Consumer(conf)
        try:
            (tp,) = c.committed([TopicPartition(self.settings.topic, partition)], timeout=10)
            return tp.offset if tp.offset >= 0 else None
        except Exception as exc:  # retention detection is best effort; log why it is off
            log.warning("cannot read the committed offset of partition %d: %s", partition, exc)
            return None
        finally:
            c.close()

    # -- processing ----------------------------------------------------------------------
    def pump(self) -> dict[int, int]:
        """Read one batch and process it, and report the windows stored meanwhile in other
        partitions; return the offsets to commit by partition."""
        offsets: dict[int, int] = {}
        batches = self.reader.read()
        for p, records in batches.items():
            offset = self.process(p, records)
            if offset is not None:
                offsets[p] = offset
        for p, proc in list(self.processors.items()):
            if p not in batches and proc.storing:
                offset = self._settle(p, proc.poll())
                if offset is not None:
                    offsets[p] = offset
        return offsets

    def process(self, partition: int, records: list[Record]) -> int | None:
        """Feed a batch; publish its dead letters; return the offset to commit (or None)."""
        proc = self.processors.get(partition) or self._open(partition)
        out = proc.feed(records)
        self.metrics.events.inc(len(records))
        return self._settle(partition, out)

    def _settle(self, partition: int, out: Outcome) -> int | None:
        """Publish an outcome's dead letters, flush them and its announcements; return the
        offset to commit (None: unchanged)."""
        self._dead_letters(partition, out)
        for gap in out.gaps:
            self.metrics.gaps.labels(gap.volume, gap.kind).inc()
        if self._pending:
            self._flush()
        if self._committed.get(partition) == out.commit_offset:
            return None
        return out.commit_offset

    def committed(self, partition: int, offset: int) -> None:
        self._committed[partition] = offset
        self.metrics.committed.labels(str(partition)).set(offset)

    def _dead_letters(self, partition: int, out: Outcome) -> None:
        for d in out.dead_letters:
            log.warning("dead letter at %d:%d (%s): %s", partition, d.offset, d.error, d.reason)
            value = self.dlq_codec.encode(
                {
                    "format_version": 1,
                    "source_topic": self.settings.topic,
                    "source_partition": partition,
                    "source_offset": d.offset,
                    "key": d.key,
                    "value": d.value,
                    "volume": d.volume,
                    "error": d.error,
                    "reason": d.reason,
                    "time_us": now_us(),
                }
            )
            self.producer.produce(self.settings.dlq_topic, value=value, key=d.key)
            self.metrics.dlq.labels(d.error).inc()
            self._pending += 1

    def _announce(self, m: Manifest) -> None:
        value = self.announce_codec.encode(
            {
                "format_version": 1,
                "volume": m.volume,
                "group": m.group,
                "topic": m.topic,
                "partition": m.partition,
                "first_offset": m.first_offset,
                "last_offset": m.last_offset,
                "first_time_us": m.first_time_us,
                "last_time_us": m.last_time_us,
                "events": m.events,
                "bytes_written": m.bytes_written,
                "forward_bytes": m.forward.size,
                "backward_bytes": m.backward.size,
                "writelog_bytes": m.writelog.size if m.writelog else 0,
                "close_reason": m.close_reason,
                "manifest_key": m.key,
                "consistent": m.consistent,
                "committed_time_us": m.created_us,
            }
        )
        self.producer.produce(self.settings.increments_topic, value=value, key=m.volume.encode())
        self.metrics.window(m)
        self._pending += 1

    def _flush(self) -> None:
        left = self.producer.flush(self.opt.flush_timeout)
        if left:
            raise DeliveryError(
                f"{left} dead letter(s)/announcement(s) not acknowledged by Kafka "
                f"within {self.opt.flush_timeout:.0f}s"
            )
        self._pending = 0

    # -- ticks ---------------------------------------------------------------------------
    def send_ticks(self) -> int:
        """Produce a TICK into every partition with a window past deadline + grace, unless
        the TICK sent for that deadline (or a later one) is not consumed yet.

        A window can open after a TICK for its own deadline was consumed (its events were
        stamped before the deadline but reached the partition after the TICK): it gets a
        new TICK once that one is consumed, so no window waits for the next write."""
        now = now_us()
        grace = round(self.opt.policy.grace * US)
        sent = 0
        for p, proc in self.processors.items():
            deadline = proc.next_deadline()
            if deadline is None or now < deadline + grace:
                continue
            last = self._ticked.get(p)
            if last is not None and last[0] >= deadline and last[1] == proc.ticks:
                continue  # in flight
            ts = max(now, deadline)
            tick = WriteEvent(
                group="", volume="", sequence=-1, kind=EventKind.TICK, timestamp_us=ts
            )
            self.producer.produce(
                self.settings.topic, value=self.event_codec.encode(tick.to_record()), partition=p
            )
            self._ticked[p] = (deadline, proc.ticks)
            sent += 1
        if sent:
            self._flush()
        return sent

    # -- metrics -------------------------------------------------------------------------
    def volume_states(self) -> Iterator[VolumeState]:
        for proc in list(self.processors.values()):
            for vb in list(proc.volumes.values()):
                cp = vb.checkpoint
                pending = vb.pending
                oldest = vb.cutter.first_time_us if vb.open else None
                if pending is not None:
                    oldest = pending.first_time_us
                line = vb.line
                if line.held:
                    t = line.held[0].record.event.timestamp_us
                    oldest = t if oldest is None else min(oldest, t)
                yield VolumeState(
                    volume=vb.volume,
                    oldest_pending_us=oldest,
                    checkpoint_us=cp.created_us if cp is not None else None,
                    pending_events=vb.cutter.events if vb.open else 0,
                    pending_bytes=vb.cutter.data_bytes if vb.open else 0,
                    quarantined=len(line.held),
                    fenced_sessions=len(line.fenced),
                    reread_found=line.found_by_reread,
                )

    def close(self) -> None:
        """Finish the windows being stored and close everything, in the build thread (the
        window-storing child processes die with the thread that started them)."""
        try:
            self.executor.submit(self._close_processors).result()
        finally:
            self.executor.shutdown(wait=True)
            self.reader.close()
            self._close_processors()
            if self.storers is not None:
                self.storers.close()
            self.producer.flush(5)

    def _close_processors(self) -> None:
        while self.processors:
            self.processors.popitem()[1].close()

    def fail(self, exc: BaseException) -> None:
        """Record a fatal error and stop the process's worker (SIGTERM)."""
        if self.failure is None:
            self.failure = exc
            trace = None if isinstance(exc, KcdpError) else exc  # a traceback only for a bug
            log.critical("increments worker failed: %s", exc, exc_info=trace)
            os.kill(os.getpid(), signal.SIGTERM)


def _codec(settings: Settings, schema: str, topic: str, options: WorkerOptions) -> AvroCodec:
    """The codec of one topic: single-object Avro, or with ``settings.schema_registry``
    the Confluent format under subject ``<topic>-value``; it decodes both framings."""
    return AvroCodec(
        schema,
        registry_url=settings.schema_registry or None,
        subject=f"{topic}-value",
        registry_wait=options.registry_wait,
    )
