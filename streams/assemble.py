"""Turn a window's change events into its forward and backward extents (pure).

The union of the events' ranges is read once from the image (the bytes before the
window: the backward increment); the forward increment is those bytes with every event
overlaid in order. Pieces are split at 1 MiB; a piece whose bytes are all zero becomes a
zero extent in either direction. Nothing is written to the image here.

The ``in_forward`` flags (docs/FORMAT.md "Write log") say which write-log records may omit
their data because the forward increment holds exactly their bytes.
:func:`assemble_window` computes them with the extents from the same sorted pass
(``tests/assemble_reference.py`` holds the flags alone, as the tests' reference).

Hot path: events are sorted once by offset; a merged range that one event covers (random
writes) takes the event's bytes as its forward data and the one ``read`` as its backward
data, without copies; a range of touching events that do not overlap (a sequential run)
joins their bytes piece by piece. Only a range whose events overlap is built by overlaying
in event order, and only its events go through the reverse sweep for the flags.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from operator import add
from typing import NamedTuple, Protocol

from schemas.events import DATA_KINDS, EventKind, WriteEvent
from schemas.extents import MAX_EXTENT, Extent

_ZEROS = bytes(MAX_EXTENT)
#: ``_new(Extent, (offset, length, data))`` builds an Extent without the keyword-handling
#: ``__new__`` of a named tuple (half the cost; thousands per window).
_new = tuple.__new__


class Change(Protocol):
    """What the flag computation reads of a change event (a WriteEvent or LogRecord)."""

    @property
    def kind(self) -> EventKind: ...
    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...


class Assembly(NamedTuple):
    """A window's extents, merged ranges and per-change-event ``in_forward`` flags."""

    forward: list[Extent]
    backward: list[Extent]
    ranges: list[tuple[int, int]]
    in_forward: list[bool]


def _is_zero(buf: bytes) -> bool:
    """Are all bytes of ``buf`` (at most ``MAX_EXTENT`` long, not empty) zero?"""
    return not buf[0] and _ZEROS.startswith(buf)


def _pieces(out: list[Extent], start: int, length: int, buf: bytes | None) -> None:
    """Append the ``length`` bytes at ``start`` (``buf``; None: zeros) cut into pieces of
    at most ``MAX_EXTENT``; all-zero pieces as zero extents."""
    if buf is not None and length <= MAX_EXTENT:
        out.append(_new(Extent, (start, length, None if _is_zero(buf) else buf)))
        return
    for pos in range(0, length, MAX_EXTENT):
        size = min(MAX_EXTENT, length - pos)
        chunk = None if buf is None else buf[pos : pos + size]
        out.append(
            _new(Extent, (start + pos, size, None if chunk is None or _is_zero(chunk) else chunk))
        )


def assemble_window(changes: Sequence[WriteEvent], read: Callable[[int, int], bytes]) -> Assembly:
    """Forward and backward extents, merged ranges and ``in_forward`` flags of a window's
    change events (in event order, i.e. Kafka offset order).

    ``read(offset, length)`` returns the image bytes before the window; it is called once
    per merged range. ``ranges`` is the union of the events' ranges (sorted, touching
    ranges merged); ``in_forward[k]`` is True iff ``changes[k]`` is a WRITE/BASELINE event
    that no later event of ``changes`` overlaps. Events of length 0 change nothing.
    """
    count = len(changes)
    flags = [False] * count
    forward: list[Extent] = []
    backward: list[Extent] = []
    ranges: list[tuple[int, int]] = []
    offsets = [e.offset for e in changes]
    lengths = [e.length for e in changes]
    order = sorted([k for k in range(count) if lengths[k]], key=offsets.__getitem__)
    if not order:
        return Assembly(forward, backward, ranges, flags)
    # a sentinel event beyond every range flushes the last run of events
    offsets.append(max(map(add, offsets, lengths)) + 1)
    lengths.append(1)
    order.append(count)
    fwd_add, bwd_add, range_add = forward.append, backward.append, ranges.append
    data_kinds, limit = DATA_KINDS, MAX_EXTENT
    zeros_prefix = _ZEROS.startswith
    first = order[0]
    start = offsets[first]
    end = start + lengths[first]
    # the open run: the events of one merged range (overlapping or touching), from event
    # ``first`` over [start, end); ``run`` holds their indices (offset order) once a 2nd joins
    run: list[int] | None = None
    overlap = False
    for k in order[1:]:
        s = offsets[k]
        e = s + lengths[k]
        if s <= end:  # overlaps or touches the open run
            if run is None:
                run = [first]
            run.append(k)
            if s < end:
                overlap = True
            if e > end:
                end = e
            continue
        n = end - start
        range_add((start, end))
        before = read(start, n)
        if run is None:  # one event covers the range: no copies
            ev = changes[first]
            data = ev.data if ev.kind in data_kinds else None
            flags[first] = data is not None
            if n <= limit:
                if data is not None and not data[0] and zeros_prefix(data):
                    data = None
                fwd_add(_new(Extent, (start, n, data)))
                zero = not before[0] and zeros_prefix(before)
                bwd_add(_new(Extent, (start, n, None if zero else before)))
            else:
                _pieces(forward, start, n, data)
                _pieces(backward, start, n, before)
        else:
            if overlap:
                run.sort()  # event order
                _pieces(forward, start, n, _overlay(changes, run, start, before))
                _sweep_into(flags, run, changes)
            else:
                _tiled_pieces(forward, changes, run, start, end)
                for j in run:
                    flags[j] = changes[j].kind in data_kinds
            _pieces(backward, start, n, before)
            run = None
            overlap = False
        start, end, first = s, e, k
    return Assembly(forward, backward, ranges, flags)


def _tiled_pieces(
    out: list[Extent], changes: Sequence[WriteEvent], run: list[int], start: int, end: int
) -> None:
    """Append the pieces of ``[start, end)``, which the events of ``run`` (offset order)
    tile exactly: each piece joins the events' bytes it holds (one copy)."""
    parts: list[bytes] = []
    piece = start
    piece_end = min(end, start + MAX_EXTENT)
    for j in run:
        ev = changes[j]
        data = ev.data if ev.kind in DATA_KINDS else None
        pos, ev_end = ev.offset, ev.offset + ev.length
        while True:
            upto = min(ev_end, piece_end)
            if data is None:
                parts.append(bytes(upto - pos))
            elif upto - pos == ev.length:
                parts.append(data)
            else:  # the event straddles a piece edge
                parts.append(data[pos - ev.offset : upto - ev.offset])
            if upto == piece_end:
                chunk = parts[0] if len(parts) == 1 else b"".join(parts)
                out.append(_new(Extent, (piece, len(chunk), None if _is_zero(chunk) else chunk)))
                parts = []
                piece, piece_end = piece_end, min(end, piece_end + MAX_EXTENT)
            if upto == ev_end:
                break
            pos = upto


def _overlay(changes: Sequence[WriteEvent], run: list[int], start: int, before: bytes) -> bytes:
    """``before`` (the bytes at ``start``) with the events of ``run`` (ascending indices)
    overlaid in order."""
    buf = bytearray(before)
    for j in run:
        ev = changes[j]
        pos = ev.offset - start
        if ev.kind in DATA_KINDS:
            buf[pos : pos + ev.length] = ev.data
        else:
            buf[pos : pos + ev.length] = bytes(ev.length)
    return bytes(buf)


def _sweep_into(flags: list[bool], indices: Sequence[int], changes: Sequence[Change]) -> None:
    """Set ``flags[k]`` for the events ``changes[k]``, ``k`` in ``indices`` (ascending):
    True iff a WRITE/BASELINE event that no later one of them overlaps.

    A reverse sweep keeps the ranges written later as a sorted set of disjoint intervals
    (touching ones merged); each event is one bisect to test and one to insert.
    """
    starts: list[int] = []
    ends: list[int] = []
    for k in reversed(indices):
        ev = changes[k]
        a, b = ev.offset, ev.offset + ev.length
        if a == b:
            continue
        i = bisect.bisect_left(starts, b) - 1  # the last interval starting before b
        flags[k] = ev.kind in DATA_KINDS and (i < 0 or ends[i] <= a)
        lo = bisect.bisect_left(ends, a)  # first interval ending at or after a
        hi = bisect.bisect_right(starts, b)  # intervals starting at or before b
        if lo < hi:
            a, b = min(a, starts[lo]), max(b, ends[hi - 1])
        starts[lo:hi] = [a]
        ends[lo:hi] = [b]
