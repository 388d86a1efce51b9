"""Coalesce a batch of writes: last writer wins per byte, result sorted by volume offset.

Applying :meth:`Coalescer.extents` to an image gives the same bytes as applying every
added write in order, with each byte written once and the writes in ascending offset.
"""

from __future__ import annotations

import bisect

from schemas.extents import Extent


class Coalescer:
    """Collects writes (``data``) and zero runs (``data=None``) into disjoint extents."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._pieces: list[Extent] = []
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._pieces)

    def add(self, offset: int, length: int, data: bytes | None) -> None:
        """Record that ``[offset, offset+length)`` now holds ``data`` (None: zeros)."""
        if length <= 0:
            return
        if data is not None and len(data) != length:
            raise ValueError(f"{len(data)} data bytes for a length of {length}")
        end = offset + length
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0 or self._pieces[i].end <= offset:
            i += 1
        j = i
        keep: list[Extent] = []
        while j < len(self._pieces) and self._pieces[j].offset < end:
            p = self._pieces[j]
            if p.offset < offset:
                keep.append(_slice(p, p.offset, offset))
            if p.end > end:
                keep.append(_slice(p, end, p.end))
            self.bytes -= p.length
            j += 1
        new = [e for e in keep if e.offset < offset]
        new.append(Extent(offset, length, data))
        new.extend(e for e in keep if e.offset >= end)
        self._pieces[i:j] = new
        self._starts[i:j] = [e.offset for e in new]
        self.bytes += sum(e.length for e in new)

    def extents(self) -> list[Extent]:
        """The coalesced extents, sorted by offset, disjoint."""
        return list(self._pieces)

    def clear(self) -> None:
        self._starts.clear()
        self._pieces.clear()
        self.bytes = 0


def _slice(ext: Extent, start: int, end: int) -> Extent:
    data = None if ext.data is None else ext.data[start - ext.offset : end - ext.offset]
    return Extent(start, end - start, data)
