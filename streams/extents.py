"""Pure helpers over byte ranges of a volume.

An :class:`Extent` is a run of volume bytes; ``data is None`` means the run is all zeros.
Ranges are half-open ``(start, end)`` pairs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

#: Largest extent stored in an increment (docs/FORMAT.md "Increments").
MAX_EXTENT = 1 << 20


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

    Empty ranges (``end <= start``) are dropped.
    """
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
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
