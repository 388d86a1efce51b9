"""Pure helpers over byte ranges of a volume.

An :class:`Extent` is a run of volume bytes; ``data is None`` means the run is all zeros.
Ranges are half-open ``(start, end)`` pairs.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import itemgetter
from typing import NamedTuple

#: Largest extent stored in an increment (docs/FORMAT.md "Increments").
MAX_EXTENT = 1 << 20

_start = itemgetter(0)


class Extent(NamedTuple):
    """``length`` bytes at ``offset``: ``data`` (``len(data) == length``) or zeros (None).

    An immutable record (a named tuple: windows build thousands per close, and a tuple is
    built several times faster than a frozen dataclass).
    """

    offset: int
    length: int
    data: bytes | None

    @property
    def end(self) -> int:
        return self.offset + self.length

    def payload(self) -> bytes:
        """The extent's bytes, zeros expanded."""
        return bytes(self.length) if self.data is None else self.data


def union_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge ``(start, end)`` ranges: sorted, non-overlapping, touching ranges joined.

    Empty ranges (``end <= start``) are dropped. One sort by start (ties in any order).
    """
    spans = sorted([r for r in ranges if r[1] > r[0]], key=_start)
    if not spans:
        return []
    out: list[tuple[int, int]] = []
    it = iter(spans)
    cur_start, cur_end = next(it)
    for start, end in it:
        if start > cur_end:
            out.append((cur_start, cur_end))
            cur_start, cur_end = start, end
        elif end > cur_end:
            cur_end = end
    out.append((cur_start, cur_end))
    return out


def split_ranges(
    ranges: Iterable[tuple[int, int]], max_len: int = MAX_EXTENT
) -> list[tuple[int, int]]:
    """Cut each range into consecutive pieces of at most ``max_len`` bytes, in order."""
    if max_len <= 0:
        raise ValueError("max_len must be positive")
    out: list[tuple[int, int]] = []
    for start, end in ranges:
        pos = start
        while pos < end:
            nxt = min(end, pos + max_len)
            out.append((pos, nxt))
            pos = nxt
    return out


def intersects(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    """Does any of the sorted, merged ``ranges`` overlap ``[start, end)``?"""
    import bisect

    i = bisect.bisect_right(ranges, (start, 1 << 62))
    if i > 0 and ranges[i - 1][1] > start:
        return True
    return i < len(ranges) and ranges[i][0] < end


#: Granule of :func:`nonzero_runs`: a 4 KiB block, the file system's block size.
ZERO_GRAIN = 4096
_COARSE = 16 * ZERO_GRAIN
_ZEROS = bytes(_COARSE)


def nonzero_runs(data: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` runs of ``data`` outside its all-zero :data:`ZERO_GRAIN` blocks.

    Blocks are aligned to the start of ``data`` (the last may be shorter); adjacent
    non-zero blocks are joined, so the runs are sorted, disjoint and not touching, and
    every byte outside them is zero. Compared in place (``startswith``: no copy).
    """
    runs: list[tuple[int, int]] = []
    size = len(data)
    start = -1  # start of the open run, or -1
    pos = 0
    while pos < size:
        step = _COARSE if pos + _COARSE <= size and data.startswith(_ZEROS, pos) else 0
        if step == 0:  # not a zero 64 KiB block: decide 4 KiB at a time
            step = min(ZERO_GRAIN, size - pos)
            if not data.startswith(_ZEROS[:step], pos):
                if start < 0:
                    start = pos
                pos += step
                continue
        if start >= 0:
            runs.append((start, pos))
            start = -1
        pos += step
    if start >= 0:
        runs.append((start, size))
    return runs
