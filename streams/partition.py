"""The pure, Faust-free processor of one partition of ``kcdp.writes``.

Feed it raw records ``(offset, key, value)`` in offset order, in batches, with
:meth:`PartitionProcessor.feed`. It decodes them, applies the event rules of
docs/FORMAT.md (sessions, sequences, validation), routes each event to its volume's
:class:`~streams.volume_builder.VolumeBuilder`, cuts windows with the volume's
:class:`~streams.window.WindowCutter`, and closes TICK-due windows. It returns what the
caller must do next as values (:class:`Outcome`): dead letters to publish, windows and
gaps that were stored, and the Kafka offset that may be committed once those dead letters
are acknowledged (the first offset of the oldest open window, else the next offset).

Records at or below a volume's durable offset (its last manifest) are skipped, so the
processor can start anywhere at or before the committed offset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from connectors.errors import DecodeError, InvalidEventError, UsageError
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.codec import AvroCodec
from schemas.decode import EventDecoder
from schemas.events import EventKind, WriteEvent
from schemas.gaps import Gap
from schemas.head import check_still_newest
from schemas.manifest import Manifest
from streams.admission import Accept, Candidate, Reject, Reread, Verdict
from streams.options import BuildOptions
from streams.outcome import DeadLetter, Outcome, Record
from streams.reread import volume_reread
from streams.sinks import InlineSink, PendingWindow, ProcessSink, ThreadSink, WindowSink
from streams.storing import WindowStorers
from streams.volume_builder import VolumeBuilder

log = logging.getLogger("kcdp.partition")


class PartitionProcessor:
    """Builds the windows of every volume of one partition.

    ``on_window`` is called, in the caller's thread, with each stored window (in window
    order per volume) before it is reported in an :class:`Outcome` (announcements).
    ``codec`` decodes record values (default: single-object Avro ``WriteEvent``).

    With ``options.close_threads`` 0 every window is stored before the call that cut it
    returns. With N > 0 cut windows are stored on N background threads while feeding goes
    on, at most one window per volume at a time (cutting a volume's next window waits for
    its previous one). Their manifests are reported by a later :meth:`feed`, :meth:`poll`
    or :meth:`drain`, and :attr:`commit_offset` stays at or before the first offset of any
    window not yet reported. A failure of a background store is raised by the next of
    those calls. With ``storers`` (child processes on the same store, shared with other
    processors and closed by their owner) windows are stored there instead, the same way.

    ``reread(lo, hi)`` reads offsets ``lo..hi`` of the partition again from the broker
    (raw records in offset order); it is called before a break in a volume's line or a
    jump past the committed offset is judged a gap (:mod:`streams.admission`). None: no
    re-reads.
    """

    def __init__(
        self,
        store: ObjectStore,
        options: BuildOptions,
        *,
        codec: AvroCodec | None = None,
        on_window: Callable[[Manifest], None] | None = None,
        storers: WindowStorers | None = None,
        reread: Callable[[int, int], list[Record]] | None = None,
    ) -> None:
        self.store = store
        self.opt = options
        self.codec = codec or AvroCodec("WriteEvent")
        self._decode = EventDecoder(self.codec).decode
        self.on_window = on_window
        self.volumes: dict[str, VolumeBuilder] = {}
        self.next_offset: int | None = None
        self.ticks = 0  # TICK records consumed
        self.log_us = 0  # log time: the largest accepted event or TICK time
        self.reread_found = 0  # records a re-read found that the feed had not delivered
        self._reread = reread
        self._start_offset: int | None = None
        self._sink: WindowSink
        if storers is not None:
            self._sink = ProcessSink(storers, store)
        elif options.close_threads > 0:
            self._sink = ThreadSink(options.close_threads, options.partition)
        else:
            self._sink = InlineSink()

    # -- lifecycle -----------------------------------------------------------------------
    def open(self, start_offset: int | None = None) -> None:
        """Resume every volume the store places in this partition.

        ``start_offset`` is where consumption will start (the committed offset); if the
        first record consumed lies past it, the records between were deleted by retention
        and every volume of the partition gets a ``retention`` gap.
        """
        prefix = keys.partition_prefix(self.opt.topic, self.opt.partition)
        for info in self.store.list(prefix):
            name = info.key[len(prefix) :]
            if name in self.volumes:
                continue
            vb = VolumeBuilder(
                self.store,
                self.opt,
                volume=name,
                group=name,
                volume_size=1,
                reread=self._reread_for(name),
            )
            if vb.resume():
                self.volumes[name] = vb
            else:  # no window yet: its events are not durable and will come again
                vb.close()
        self._start_offset = start_offset
        self.next_offset = start_offset

    def close(self) -> None:
        """Wait for the windows being stored (reporting them to ``on_window``), then close
        every volume. Raises a background store's failure after closing."""
        try:
            self.drain()
        finally:
            self._sink.close()
            for vb in self.volumes.values():
                vb.close()
            self.volumes.clear()

    @property
    def commit_offset(self) -> int:
        """The smallest offset not yet durable and reported (what may be committed)."""
        firsts = [vb.pending.first for vb in self.volumes.values() if vb.pending is not None]
        firsts += [vb.win_first for vb in self.volumes.values() if vb.win_first is not None]
        firsts += [o for vb in self.volumes.values() if (o := vb.line.hold_offset) is not None]
        if firsts:
            return min(firsts)
        return self.next_offset if self.next_offset is not None else 0

    @property
    def storing(self) -> int:
        """How many cut windows are being stored in the background."""
        return sum(1 for vb in self.volumes.values() if vb.pending is not None)

    def next_deadline(self) -> int | None:
        """The earliest deadline of an open timed window or of a held event (log time,
        µs), or None."""
        ds = [
            vb.cutter.deadline_us
            for vb in self.volumes.values()
            if vb.open and vb.cutter.deadline_us is not None
        ]
        ds += [d for vb in self.volumes.values() if (d := vb.line.deadline_us) is not None]
        return min(ds) if ds else None

    @property
    def held(self) -> int:
        """Events held in quarantine (all volumes)."""
        return sum(len(vb.line.held) for vb in self.volumes.values())

    # -- processing ----------------------------------------------------------------------
    def feed(self, records: Iterable[Record]) -> Outcome:
        """Process raw records in offset order; see the module docstring."""
        out = Outcome()
        for offset, key, value in records:
            if self.next_offset is not None and offset < self.next_offset:
                out.skipped += 1
                continue
            if self._start_offset is not None:
                start, self._start_offset = self._start_offset, None
                if offset > start:
                    self._missing_before(start, offset, out)
            elif self.next_offset is not None and offset > self.next_offset:
                self._hole(self.next_offset, offset, out)
            self._record(offset, key, value, out)
        return self._settle(out)

    def _record(self, offset: int, key: bytes | None, value: bytes | None, out: Outcome) -> None:
        self.next_offset = offset + 1
        try:
            if not value:
                raise DecodeError("empty record value")
            event = self._decode(value)
        except (DecodeError, ValueError, KeyError, TypeError) as exc:
            reason = exc.message if isinstance(exc, DecodeError) else f"bad record: {exc}"
            out.dead_letters.append(DeadLetter(offset, key, value, "", "DecodeError", reason))
            return
        self._event(offset, key, value, event, out)

    def _missing_before(self, start: int, offset: int, out: Outcome) -> None:
        """The first record consumed lies past the committed offset ``start``: read the
        offsets between again; what the broker no longer has was deleted by retention."""
        found = self._read_again(start, offset)
        first = found[0][0] if found else offset
        if first > start:
            self._start_offset = start
            self._retention_gap(first, out)
            self._start_offset = None
        for r_offset, r_key, r_value in found:
            self._record(r_offset, r_key, r_value, out)

    def _hole(self, start: int, offset: int, out: Outcome) -> None:
        """Offsets ``start..offset-1`` were skipped between two records fed: what a re-read
        finds there is processed first (in offset order, an event exposed late comes before
        the records after it); offsets with nothing are passed over."""
        for r_offset, r_key, r_value in self._read_again(start, offset):
            self._record(r_offset, r_key, r_value, out)

    def _read_again(self, start: int, offset: int) -> list[Record]:
        """The records a re-read finds at offsets ``start..offset-1`` (none without one)."""
        if self._reread is None:
            return []
        found = [r for r in self._reread(start, offset - 1) if start <= r[0] < offset]
        if found:
            self.reread_found += len(found)
            log.warning(
                "partition %d: offsets %d..%d were not delivered; a re-read found %d record(s)",
                self.opt.partition,
                start,
                offset - 1,
                len(found),
            )
        return found

    def poll(self) -> Outcome:
        """Report the background windows stored since the last call (never waits)."""
        return self._settle(Outcome())

    def drain(self) -> Outcome:
        """Wait for every window being stored and report it."""
        out = Outcome()
        for vb in list(self.volumes.values()):
            self._collect(vb, out, wait=True)
        return self._settle(out)

    def _settle(self, out: Outcome) -> Outcome:
        for vb in list(self.volumes.values()):
            self._collect(vb, out, wait=False)
        out.commit_offset = self.commit_offset
        return out

    def _collect(self, vb: VolumeBuilder, out: Outcome, *, wait: bool) -> None:
        """Report ``vb``'s background window if it is stored (or once it is, ``wait``)."""
        if vb.pending is None or not (wait or vb.pending.future.done()):
            return
        fut = vb.pending.future
        vb.pending = None
        self._stored(vb.stored(fut.result()), out)

    def _stored(self, m: Manifest, out: Outcome) -> None:
        if self.on_window is not None:
            self.on_window(m)
        out.windows.append(m)

    def _dead(
        self,
        out: Outcome,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        ev: WriteEvent,
        exc: Exception,
    ) -> None:
        error = type(exc).__name__
        reason = exc.message if isinstance(exc, InvalidEventError | UsageError) else str(exc)
        out.dead_letters.append(DeadLetter(offset, key, value, ev.volume, error, reason))

    def _event(
        self, offset: int, key: bytes | None, value: bytes | None, ev: WriteEvent, out: Outcome
    ) -> None:
        try:
            ev.validate()
        except InvalidEventError as exc:  # an invalid event (TICKs too) consumes nothing
            self._dead(out, offset, key, value, ev, exc)
            return
        if ev.kind is EventKind.TICK:
            self._tick(ev.timestamp_us, out)
            return
        vb: VolumeBuilder | None = self.volumes.get(ev.volume)
        if vb is not None and offset <= vb.cut_offset:
            out.skipped += 1
            return
        try:
            if vb is None:
                vb = self._new_volume(ev)
            if ev.volume_size != vb.size:
                raise InvalidEventError(
                    f"volume {ev.volume!r} sequence {ev.sequence}: volume_size "
                    f"{ev.volume_size} differs from the protected size {vb.size}"
                )
        except (InvalidEventError, UsageError) as exc:
            self._dead(out, offset, key, value, ev, exc)
            return
        verdicts = vb.line.offer(Candidate(offset, key, value, ev), self.log_us)
        if verdicts is None:
            self._apply(vb, offset, ev, out)
        else:
            self._verdicts(vb, verdicts, out)

    def _tick(self, t_us: int, out: Outcome) -> None:
        self.ticks += 1
        self.log_us = max(self.log_us, t_us)
        for due in self.volumes.values():
            if due.cutter.due(t_us):
                self._close(due, "tick", out)
        for vb in list(self.volumes.values()):
            if vb.line.held:
                self._verdicts(vb, vb.line.expire(self.log_us), out)

    def _verdicts(self, vb: VolumeBuilder, verdicts: list[Verdict], out: Outcome) -> None:
        for v in verdicts:
            if isinstance(v, Accept):
                if v.unclean:
                    vb.break_history()  # no clean predecessor: inconsistent until a baseline
                self._apply(vb, v.record.offset, v.record.event, out)
            elif isinstance(v, Reject):
                r = v.record
                self._dead(out, r.offset, r.key, r.value, r.event, v.error)
            else:
                self._gap(vb, out, v.at_offset, v.kind, v.expected, v.got, v.detail)

    def _apply(self, vb: VolumeBuilder, offset: int, ev: WriteEvent, out: Outcome) -> None:
        """Add an accepted event to its volume's window."""
        t = vb.cutter.clamp(ev.timestamp_us)
        if t > self.log_us:
            self.log_us = t
        if vb.cutter.close_before(t):
            self._close(vb, "time", out)
        reason = vb.add(offset, ev, t)
        if reason:
            self._close(vb, reason, out)

    def _new_volume(self, ev: WriteEvent) -> VolumeBuilder:
        keys.check_name(ev.volume)
        vb = VolumeBuilder(
            self.store,
            self.opt,
            volume=ev.volume,
            group=ev.group or ev.volume,
            volume_size=ev.volume_size,
            reread=self._reread_for(ev.volume),
        )
        vb.resume()  # a volume new to this partition may still have history elsewhere
        self.store.put(
            keys.partition_marker_key(self.opt.topic, self.opt.partition, ev.volume), b""
        )
        self.volumes[ev.volume] = vb
        return vb

    def _reread_for(self, volume: str) -> Reread | None:
        """Read offsets again for ``volume``'s line: its valid events there (or None)."""
        return None if self._reread is None else volume_reread(self._reread, self._decode, volume)

    def _gap(
        self,
        vb: VolumeBuilder,
        out: Outcome,
        offset: int,
        kind: str,
        expected: int | None,
        got: int | None,
        detail: str,
    ) -> None:
        self._close(vb, "gap", out)
        self._collect(vb, out, wait=True)  # the gap record after the window before it
        gap = Gap(
            volume=vb.volume,
            kind=kind,
            at_offset=offset,
            after_offset=vb.last_offset_seen if vb.last_offset_seen >= 0 else None,
            session=vb.line.session,
            expected_sequence=expected,
            got_sequence=got,
            detail=detail,
            detected_us=self.opt.clock(),
        )
        check_still_newest(self.store, vb.volume, offset)  # no gap in another agent's history
        self.store.put(gap.key, gap.to_json())
        vb.break_history()
        log.warning("volume %s: %s gap at offset %d: %s", vb.volume, kind, offset, detail)
        out.gaps.append(gap)

    def _retention_gap(self, offset: int, out: Outcome) -> None:
        assert self._start_offset is not None
        for vb in self.volumes.values():
            self._gap(
                vb,
                out,
                offset,
                "retention",
                None,
                None,
                f"offsets {self._start_offset}..{offset - 1} were deleted before processing",
            )
            vb.line.records_lost()

    def _close(self, vb: VolumeBuilder, reason: str, out: Outcome) -> None:
        self._collect(vb, out, wait=True)  # one window of a volume at a time
        cut = vb.cut_window(reason)
        if cut is None:
            return
        vb.pending = PendingWindow(cut.first, cut.first_time_us, self._sink.store(vb, cut))
        if vb.pending.future.done():  # stored inline: record it now
            self._collect(vb, out, wait=True)
