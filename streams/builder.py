"""The pure, Faust-free processor of one partition of ``kcdp.writes``.

Feed it raw records ``(offset, key, value)`` in offset order, in batches, with
:meth:`PartitionProcessor.feed`. It decodes them, applies the event rules of
docs/FORMAT.md (sessions, sequences, validation), routes each event to its volume's
:class:`~streams.volume.VolumeBuilder`, cuts windows with the volume's
:class:`~streams.window.WindowCutter`, and closes TICK-due windows. It returns what the
caller must do next as values (:class:`Outcome`): dead letters to publish, windows and
gaps that were stored, and the Kafka offset that may be committed once those dead letters
are acknowledged (the first offset of the oldest open window, else the next offset).

Records at or below a volume's durable offset (its last manifest) are skipped, so the
processor can start anywhere at or before the committed offset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from connectors.errors import DecodeError, InvalidEventError, UsageError
from connectors.store.base import ObjectStore
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent
from streams import keys
from streams.decode import EventDecoder
from streams.gaps import Gap
from streams.image import Image
from streams.manifest import Manifest
from streams.volume import BuildOptions, VolumeBuilder
from streams.windowstore import WindowStorers

log = logging.getLogger("kcdp.builder")

Record = tuple[int, bytes | None, bytes | None]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be used; publish it to ``kcdp.writes.dlq``."""

    offset: int
    key: bytes | None
    value: bytes | None
    volume: str
    error: str
    reason: str


@dataclass(slots=True)
class Outcome:
    """What one :meth:`PartitionProcessor.feed` call did and what the caller must do."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    windows: list[Manifest] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    skipped: int = 0
    commit_offset: int = 0


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
    """

    def __init__(
        self,
        store: ObjectStore,
        options: BuildOptions,
        *,
        codec: AvroCodec | None = None,
        on_window: Callable[[Manifest], None] | None = None,
        storers: WindowStorers | None = None,
    ) -> None:
        self.store = store
        self.opt = options
        self.codec = codec or AvroCodec("WriteEvent")
        self._decode = EventDecoder(self.codec).decode
        self.on_window = on_window
        self.volumes: dict[str, VolumeBuilder] = {}
        self.next_offset: int | None = None
        self.ticks = 0  # TICK records consumed
        self._start_offset: int | None = None
        self._closer: ThreadPoolExecutor | None = None
        self._storers = storers
        if storers is None and options.close_threads > 0:
            self._closer = ThreadPoolExecutor(
                max_workers=options.close_threads,
                thread_name_prefix=f"kcdp-store-{options.partition}",
            )

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
            if self._closer is not None:
                self._closer.shutdown(wait=True)
                self._closer = None
            for vb in self.volumes.values():
                vb.close()
            self.volumes.clear()

    @property
    def commit_offset(self) -> int:
        """The smallest offset not yet durable and reported (what may be committed)."""
        firsts = [vb.pending[0] for vb in self.volumes.values() if vb.pending is not None]
        firsts += [vb.win_first for vb in self.volumes.values() if vb.win_first is not None]
        if firsts:
            return min(firsts)
        return self.next_offset if self.next_offset is not None else 0

    @property
    def storing(self) -> int:
        """How many cut windows are being stored in the background."""
        return sum(1 for vb in self.volumes.values() if vb.pending is not None)

    def next_deadline(self) -> int | None:
        """The earliest deadline of an open timed window (event time, µs), or None."""
        ds = [
            vb.cutter.deadline_us
            for vb in self.volumes.values()
            if vb.open and vb.cutter.deadline_us is not None
        ]
        return min(ds) if ds else None

    # -- processing ----------------------------------------------------------------------
    def feed(self, records: Iterable[Record]) -> Outcome:
        """Process raw records in offset order; see the module docstring."""
        out = Outcome()
        for offset, key, value in records:
            if self.next_offset is not None and offset < self.next_offset:
                out.skipped += 1
                continue
            if self._start_offset is not None:
                if offset > self._start_offset:
                    self._retention_gap(offset, out)
                self._start_offset = None
            self.next_offset = offset + 1
            try:
                if not value:
                    raise DecodeError("empty record value")
                event = self._decode(value)
            except (DecodeError, ValueError, KeyError, TypeError) as exc:
                reason = exc.message if isinstance(exc, DecodeError) else f"bad record: {exc}"
                out.dead_letters.append(DeadLetter(offset, key, value, "", "DecodeError", reason))
                continue
            self._event(offset, key, value, event, out)
        return self._settle(out)

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
        if vb.pending is None or not (wait or vb.pending[2].done()):
            return
        fut = vb.pending[2]
        vb.pending = None
        self._stored(vb.stored(fut.result()), out)

    def _stored(self, m: Manifest, out: Outcome) -> None:
        if self.on_window is not None:
            self.on_window(m)
        out.windows.append(m)

    def feed_events(self, events: Sequence[tuple[int, WriteEvent]]) -> Outcome:
        """Process decoded events (tests, tools); same rules as :meth:`feed`."""
        return self.feed((o, None, self.codec.encode(e.to_record())) for o, e in events)

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
        if ev.kind is EventKind.TICK:
            self.ticks += 1
            for due in self.volumes.values():
                if due.cutter.due(ev.timestamp_us):
                    self._close(due, "tick", out)
            return
        vb: VolumeBuilder | None = self.volumes.get(ev.volume)
        if vb is not None and offset <= vb.cut_offset:
            out.skipped += 1
            return
        try:
            ev.validate()
            if vb is None:
                vb = self._new_volume(ev)
            if ev.volume_size != vb.size:
                raise InvalidEventError(
                    f"volume {ev.volume!r} sequence {ev.sequence}: volume_size "
                    f"{ev.volume_size} differs from the protected size {vb.size}"
                )
        except (InvalidEventError, UsageError) as exc:
            self._dead(out, offset, key, value, ev, exc)
            if (
                vb is not None
                and ev.session == vb.session
                and vb.next_seq is not None
                and ev.sequence >= vb.next_seq
            ):
                self._sequence(vb, offset, ev, out)
                vb.add_rejected(offset, ev)
            return
        assert vb is not None
        if not self._sequence(vb, offset, ev, out):
            self._dead(
                out,
                offset,
                key,
                value,
                ev,
                InvalidEventError(
                    f"volume {ev.volume!r}: duplicate or stale event (session {ev.session}, "
                    f"sequence {ev.sequence}, expected {vb.next_seq})"
                ),
            )
            return
        t = vb.cutter.clamp(ev.timestamp_us)
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
        )
        vb.resume()  # a volume new to this partition may still have history elsewhere
        self.store.put(
            keys.partition_marker_key(self.opt.topic, self.opt.partition, ev.volume), b""
        )
        self.volumes[ev.volume] = vb
        return vb

    def _sequence(self, vb: VolumeBuilder, offset: int, ev: WriteEvent, out: Outcome) -> bool:
        """Apply the session/sequence rules; False if the event is a duplicate/stale."""
        if vb.resync and ev.session == vb.session:
            vb.resync = False
            vb.next_seq = ev.sequence + 1
            return True
        if vb.next_seq is not None and ev.session == vb.session:
            if ev.sequence < vb.next_seq:
                return False
            if ev.sequence > vb.next_seq:
                self._gap(
                    vb,
                    out,
                    offset,
                    "sequence",
                    vb.next_seq,
                    ev.sequence,
                    f"sequence skipped from {vb.next_seq} to {ev.sequence}",
                )
            vb.next_seq = ev.sequence + 1
            return True
        # a session this volume has not seen yet
        previous = vb.session if vb.next_seq is not None else None
        if vb.resync:  # right after a retention gap: anything may have been lost
            vb.resync = False
        elif ev.kind is not EventKind.SESSION_START or ev.sequence != 0:
            self._gap(
                vb,
                out,
                offset,
                "session",
                0,
                ev.sequence,
                f"session {ev.session} first seen at sequence {ev.sequence} ({ev.kind})",
            )
        elif previous is not None and vb.ended_session != previous:
            self._gap(
                vb,
                out,
                offset,
                "session",
                None,
                ev.sequence,
                f"session {previous} never ended before session {ev.session} started",
            )
        elif previous is not None and ev.name != previous:
            vb.consistent = False  # no clean predecessor: inconsistent until a baseline
        vb.session = ev.session
        vb.next_seq = ev.sequence + 1
        return True

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
            session=vb.session,
            expected_sequence=expected,
            got_sequence=got,
            detail=detail,
            detected_us=self.opt.clock(),
        )
        self.store.put(gap.key, gap.to_json())
        vb.consistent = False
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
            vb.resync = True

    def _close(self, vb: VolumeBuilder, reason: str, out: Outcome) -> None:
        self._collect(vb, out, wait=True)  # one window of a volume at a time
        cut = vb.cut_window(reason)
        if cut is None:
            return
        if self._storers is not None:
            if vb.image is None:  # the child opens it by path: create it here first
                vb.image = Image(vb.image_path, vb.size)
            fut = self._storers.submit(self.store.url, cut, vb.job(cut))
        elif self._closer is not None:
            fut = self._closer.submit(vb.write, cut, vb.job(cut))
        else:
            self._stored(vb.store_window(cut), out)
            return
        vb.pending = (cut.first, cut.first_time_us, fut)
