"""Which events of a volume are applied: the line rules of docs/FORMAT.md ("Event rules",
"Quarantine"), as a pure function of the log.

A volume's *line* is its current session and the next sequence it expects.
:class:`VolumeLine` owns it — with the session that ended cleanly, the fenced sessions,
the records in quarantine and the counters status reports — and no other module writes
it. For every valid event of the volume (in offset order) :meth:`VolumeLine.offer` says
what happens, as verdicts:

* in line (the expected sequence of the session, or a ``SESSION_START`` at 0 after the
  session ended, or the first session of the volume): **accepted** — when records are
  held, only after the offsets before the first of them were read again (the line's
  event found there comes first, in offset order, and this one is judged anew);
* a sequence the line already passed: **rejected** as stale (a duplicate);
* a session fenced out of the history: **rejected** as fenced;
* anything else out of line (a sequence ahead, an unknown session mid-stream, a second
  live session) is **held**: it changes nothing until the events after it tell which line
  is real. When the line goes on (an event in line is accepted), every held record left
  out of line is rejected, and a held record of another session fences that session.
  When instead the held record's own line is continued by ``support`` further events, or
  when ``hold_us`` of log time (accepted event times and ``TICK``\\ s) passed, the range of
  offsets between the line's last event and the held record is read again from the broker
  (a broker may expose a record late; :data:`Reread`): a record found there that is in line
  is accepted, and the held records after it may follow. Only if the line is still broken
  and the held line has its ``support`` is the loss real: a **gap** is declared at the held
  record, the line moves to it (the superseded session is fenced), and it is accepted. A
  held record whose time ran out without that support is rejected as out of line.

Every decision depends only on the records (and on what a re-read finds in the log), so
re-processing after a crash decides the same. Memory is bounded: at most ``max_held``
records are held per volume (beyond, the oldest is judged at once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from connectors.errors import (
    FencedSessionError,
    InvalidEventError,
    OutOfLineEventError,
    StaleEventError,
)
from schemas.events import EventKind, WriteEvent

#: Further events that must continue a held record's own line before its loss is believed.
DEFAULT_SUPPORT = 3
#: Log time (µs) a held record waits for the events after it at most.
DEFAULT_HOLD_US = 10_000_000
#: Records held per volume at most.
DEFAULT_MAX_HELD = 4096
#: Fenced sessions remembered per volume (oldest forgotten first).
MAX_FENCED = 16


@dataclass(frozen=True, slots=True)
class Candidate:
    """A valid event of the volume and the raw record it came from."""

    offset: int
    key: bytes | None
    value: bytes | None
    event: WriteEvent


@dataclass(frozen=True, slots=True)
class Accept:
    """Apply the event. ``unclean``: it starts a session without a clean predecessor
    (the history is inconsistent until the next ``BASELINE_END``)."""

    record: Candidate
    unclean: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    """Dead-letter the record with ``error``; nothing of the line changed."""

    record: Candidate
    error: InvalidEventError


@dataclass(frozen=True, slots=True)
class GapFound:
    """Records were lost before offset ``at_offset``: write a gap record, close the window."""

    kind: str  # "sequence" or "session"
    at_offset: int
    after_offset: int | None
    session: str
    expected: int | None
    got: int
    detail: str


Verdict = Accept | Reject | GapFound
#: ``reread(lo, hi)``: the valid events of this volume at offsets ``lo..hi`` of its
#: partition, read again from the broker, in offset order.
Reread = Callable[[int, int], list[Candidate]]


@dataclass(slots=True)
class _Held:
    record: Candidate
    accepted: int  # the line's accepted count when it was held
    deadline_us: int


class VolumeLine:
    """The line of one volume; see the module docstring.

    ``support`` [3], ``hold_us`` [10 s] and ``max_held`` [4096] bound the quarantine;
    ``reread`` (None: nothing is read again) looks for records a broker exposed late.
    """

    def __init__(
        self,
        volume: str,
        *,
        support: int = DEFAULT_SUPPORT,
        hold_us: int = DEFAULT_HOLD_US,
        max_held: int = DEFAULT_MAX_HELD,
        reread: Reread | None = None,
    ) -> None:
        self.volume = volume
        self.support = max(1, support)
        self.hold_us = hold_us
        self.max_held = max(1, max_held)
        self.reread = reread
        self.session = ""
        self.next_seq: int | None = None  # None: no session seen yet
        self.ended_session: str | None = None
        self.fenced: list[str] = []
        self.last_offset = -1  # offset of the last accepted event
        self.resync = False  # after a retention gap: take the next sequence as it comes
        self.held: list[_Held] = []
        self.accepted = 0
        self.found_by_reread = 0
        #: the first record rejected for want of evidence since the last accepted event
        self.suspect: int | None = None
        self._offered: set[int] = set()  # offsets offered since the last accepted event

    # -- state -----------------------------------------------------------------------------
    def resume(
        self,
        *,
        session: str,
        next_seq: int,
        ended: bool,
        fenced: tuple[str, ...] | list[str],
        last_offset: int,
    ) -> None:
        """Continue after a stored window (the volume's last manifest)."""
        self.session = session
        self.next_seq = next_seq
        self.ended_session = session if ended else None
        self.fenced = list(fenced)[-MAX_FENCED:]
        self.last_offset = last_offset

    def records_lost(self) -> None:
        """Offsets of the partition were deleted (a retention gap): take the next event of
        the volume as it comes."""
        self.resync = True

    @property
    def hold_offset(self) -> int | None:
        """The smallest offset held (nothing past it may be committed), or None."""
        return self.held[0].record.offset if self.held else None

    @property
    def deadline_us(self) -> int | None:
        """The log time at which the oldest held record is judged, or None."""
        return min(h.deadline_us for h in self.held) if self.held else None

    # -- decisions -------------------------------------------------------------------------
    def offer(self, record: Candidate, log_us: int) -> list[Verdict] | None:
        """Decide on the next valid event of the volume at log time ``log_us``.

        None is the common case: the event is in line and nothing was held (accept it)."""
        ev = record.event
        if (
            not self.held
            and ev.session == self.session
            and ev.sequence == self.next_seq
            and record.offset > self.last_offset
        ):
            self._take(record)
            return None
        out: list[Verdict] = []
        self._offered.add(record.offset)
        if self.held and ev.session not in self.fenced and self._in_line(record):
            # in line only after events held ahead of the line: the line's own event may
            # come before those in the log (exposed late); read that range again first
            self._reread_before(self.held[0].record.offset, out)
        if ev.session in self.fenced:
            out.append(Reject(record, self._fenced_error(ev)))
        elif self._in_line(record):
            self._accept(record, out)
        elif self._behind(ev):
            out.append(Reject(record, self._stale_error(ev)))
        else:
            self.held.append(_Held(record, self.accepted, log_us + self.hold_us))
            if len(self.held) > self.max_held:
                self._judge(self.held[0], out, timed_out=True)
        self._judge_due(log_us, out)
        return out

    def expire(self, log_us: int) -> list[Verdict]:
        """Judge the held records whose time ran out by log time ``log_us`` (a ``TICK``)."""
        out: list[Verdict] = []
        self._judge_due(log_us, out)
        return out

    def _in_line(self, record: Candidate) -> bool:
        ev = record.event
        if record.offset <= self.last_offset:
            return False
        if ev.session == self.session and self.next_seq is not None:
            return ev.sequence == self.next_seq or self.resync
        if self.resync:
            return True
        first = ev.kind is EventKind.SESSION_START and ev.sequence == 0
        return first and (self.next_seq is None or self.ended_session == self.session)

    def _behind(self, ev: WriteEvent) -> bool:
        """A sequence of the current session the line already passed."""
        nxt = self.next_seq
        return nxt is not None and ev.session == self.session and ev.sequence < nxt

    def _take(self, record: Candidate) -> None:
        ev = record.event
        self.session = ev.session
        self.next_seq = ev.sequence + 1
        self.last_offset = record.offset
        self.resync = False
        self.suspect = None
        self.accepted += 1
        if ev.kind is EventKind.SESSION_END:
            self.ended_session = ev.session
        if self._offered:
            self._offered = {o for o in self._offered if o > record.offset}

    def _accept(self, record: Candidate, out: list[Verdict]) -> None:
        """Accept ``record`` (in line), then whatever held records now follow it."""
        ev = record.event
        previous = self.session if self.next_seq is not None else None
        unclean = (
            previous is not None
            and ev.session != previous
            and not self.resync
            and ev.name != previous
        )
        self._take(record)
        out.append(Accept(record, unclean))
        self._release(out)

    def _release(self, out: list[Verdict], *, reject: bool = True) -> None:
        """After the line moved: held records now in line follow it; with ``reject`` the
        rest are out of line (the line went on without them)."""
        while self.held:
            nxt = next((h for h in self.held if self._in_line(h.record)), None)
            if nxt is None:
                break
            self.held.remove(nxt)
            self._take(nxt.record)
            out.append(Accept(nxt.record, False))
        if not reject:
            return
        for h in list(self.held):
            if h.accepted < self.accepted:
                self.held.remove(h)
                error = self._out_of_line_error(h.record, "the line went on", fence=True)
                out.append(Reject(h.record, error))

    def _judge_due(self, log_us: int, out: list[Verdict]) -> None:
        while self.held:
            h = self.held[0]
            timed_out = log_us >= h.deadline_us
            if not timed_out and self._support(h) < self.support:
                return
            self._judge(h, out, timed_out=timed_out)

    def _support(self, h: _Held) -> int:
        """How many held records after ``h`` continue its line."""
        ev = h.record.event
        want, n = ev.sequence + 1, 0
        for other in self.held:
            o = other.record.event
            later = other.record.offset > h.record.offset
            if later and o.session == ev.session and o.sequence == want:
                n += 1
                want += 1
        return n

    def _judge(self, h: _Held, out: list[Verdict], *, timed_out: bool) -> None:
        """Decide on the oldest held record ``h`` (see the module docstring)."""
        self._reread_before(h.record.offset, out)
        if h not in self.held:  # the re-read let the line reach it
            return
        if self._in_line(h.record):
            self.held.remove(h)
            self._accept(h.record, out)
            return
        supported = self._support(h) >= self.support
        self.held.remove(h)
        if not supported:
            why = "nothing continued it" if timed_out else "too many records held"
            out.append(Reject(h.record, self._out_of_line_error(h.record, why, fence=False)))
            if self.suspect is None:  # if its line turns out real, the break was here
                self.suspect = h.record.offset
            return
        ev = h.record.event
        if ev.session == self.session and self.next_seq is not None:
            kind, expected = "sequence", self.next_seq
            detail = f"sequence skipped from {self.next_seq} to {ev.sequence}"
        else:
            kind, expected = "session", 0
            detail = (
                f"session {ev.session} first seen at sequence {ev.sequence} ({ev.kind})"
                if ev.sequence != 0 or ev.kind is not EventKind.SESSION_START
                else f"session {self.session} never ended before session {ev.session} started"
            )
            if self.session:
                self._fence(self.session)
        out.append(
            GapFound(
                kind,
                min(h.record.offset, self.suspect or h.record.offset),
                self.last_offset if self.last_offset >= 0 else None,
                self.session or ev.session,
                expected,
                ev.sequence,
                detail,
            )
        )
        self.session = ev.session
        self.next_seq = ev.sequence
        self.resync = False
        self._take(h.record)
        out.append(Accept(h.record, False))
        self._release(out)

    def _reread_before(self, offset: int, out: list[Verdict]) -> None:
        """Read offsets after the line's last event up to ``offset`` again and accept the
        records found there that continue the line."""
        lo, hi = self.last_offset + 1, offset - 1
        if self.reread is None or self.next_seq is None or self.last_offset < 0 or lo > hi:
            return
        for found in self.reread(lo, hi):
            if found.offset in self._offered or found.event.volume != self.volume:
                continue
            if found.event.session not in self.fenced and self._in_line(found):
                self.found_by_reread += 1
                self._take(found)
                out.append(Accept(found, False))
        self._release(out, reject=False)  # the held records are judged on their own

    def _fence(self, session: str) -> None:
        if session and session not in self.fenced:
            self.fenced.append(session)
            del self.fenced[:-MAX_FENCED]

    # -- errors ------------------------------------------------------------------------------
    def _where(self, ev: WriteEvent) -> str:
        return f"volume {self.volume!r} session {ev.session} sequence {ev.sequence}"

    def _stale_error(self, ev: WriteEvent) -> StaleEventError:
        return StaleEventError(
            f"{self._where(ev)}: duplicate or stale event (expected sequence {self.next_seq})"
        )

    def _fenced_error(self, ev: WriteEvent) -> FencedSessionError:
        return FencedSessionError(
            f"{self._where(ev)}: session fenced out of the history (a second intercept of "
            f"the volume, or a session a newer one superseded; current session {self.session})"
        )

    def _out_of_line_error(
        self, record: Candidate, why: str, *, fence: bool
    ) -> OutOfLineEventError:
        """The error of a held record judged out of line; ``fence``: the line is live, so
        a record of another session fences that session."""
        ev = record.event
        if ev.session != self.session:
            if fence:
                self._fence(ev.session)
            what = f"a second session of the volume (current session {self.session})"
        else:
            what = f"sequence ahead of the line (expected {self.next_seq})"
        return OutOfLineEventError(f"{self._where(ev)}: {what}, held and rejected: {why}")
