"""Turn a window's change events into its forward and backward extents (pure).

The union of the events' ranges is read once from the image (the bytes before the
window: the backward increment); the forward increment is those bytes with every event
overlaid in order. Pieces are split at 1 MiB; a piece whose bytes are all zero becomes a
zero extent in either direction. Nothing is written to the image here.

:func:`in_forward_flags` decides which write-log records may omit their data because the
forward increment holds exactly their bytes (docs/FORMAT.md "Write log").
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Protocol

from schemas.events import DATA_KINDS, EventKind, WriteEvent
from streams.extents import MAX_EXTENT, Extent, union_ranges

_ZEROS = bytes(MAX_EXTENT)


def _extents(ranges: Sequence[tuple[int, int]], bufs: Sequence[bytes]) -> list[Extent]:
    """Each range's bytes cut into pieces of at most ``MAX_EXTENT``; all-zero pieces as
    zero extents. A range that fits one piece keeps its buffer (no copy)."""
    out: list[Extent] = []
    for (start, end), buf in zip(ranges, bufs, strict=True):
        if end - start <= MAX_EXTENT:
            pieces = [(start, buf)]
        else:
            view = memoryview(buf)
            pieces = [
                (pos, bytes(view[pos - start : min(end, pos + MAX_EXTENT) - start]))
                for pos in range(start, end, MAX_EXTENT)
            ]
        for pos, chunk in pieces:
            zero = not chunk[0] and chunk == _ZEROS[: len(chunk)]
            out.append(Extent(pos, len(chunk), None if zero else chunk))
    return out


def assemble(
    changes: Sequence[WriteEvent], read: Callable[[int, int], bytes]
) -> tuple[list[Extent], list[Extent], list[tuple[int, int]]]:
    """``(forward, backward, ranges)`` for change events in offset order.

    ``read(offset, length)`` returns the image bytes before the window; ``ranges`` is the
    union of the events' ranges (sorted, merged).
    """
    ranges = union_ranges((e.offset, e.offset + e.length) for e in changes)
    if not ranges:
        return [], [], []
    starts = [s for s, _ in ranges]
    hits: list[list[WriteEvent]] = [[] for _ in ranges]
    for ev in changes:
        if ev.length:
            hits[bisect.bisect_right(starts, ev.offset) - 1].append(ev)
    before: list[bytes] = []
    after: list[bytes] = []
    for (start, end), evs in zip(ranges, hits, strict=True):
        before.append(read(start, end - start))
        if len(evs) == 1 and evs[0].kind in DATA_KINDS:  # one write is the whole range
            after.append(evs[0].data)
            continue
        buf = bytearray(before[-1])
        for ev in evs:
            pos = ev.offset - start
            if ev.kind in DATA_KINDS:
                buf[pos : pos + ev.length] = ev.data
            else:
                buf[pos : pos + ev.length] = bytes(ev.length)
        after.append(bytes(buf))
    return _extents(ranges, after), _extents(ranges, before), ranges


class Change(Protocol):
    """What :func:`in_forward_flags` reads of a change event (a WriteEvent or LogRecord)."""

    @property
    def kind(self) -> EventKind: ...
    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...


def in_forward_flags(changes: Sequence[Change]) -> list[bool]:
    """Per change event (offset order): True iff it is a WRITE/BASELINE event that no later
    change event of the window overlaps, so the forward increment holds exactly its bytes.

    A reverse sweep keeps the ranges written later as a sorted set of disjoint intervals
    (touching ones merged); each event is one bisect to test and one to insert.
    """
    starts: list[int] = []
    ends: list[int] = []
    flags = [False] * len(changes)
    for k in range(len(changes) - 1, -1, -1):
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
    return flags
