"""Reference pieces of the window assembly, for tests and benchmarks only: the extents of
:func:`streams.assemble.assemble_window` without the flags, and the ``in_forward`` flags
alone (docs/FORMAT.md "Write log")."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from schemas.events import DATA_KINDS, WriteEvent
from schemas.extents import Extent
from streams.assemble import Change, _sweep_into, assemble_window


def assemble(
    changes: Sequence[WriteEvent], read: Callable[[int, int], bytes]
) -> tuple[list[Extent], list[Extent], list[tuple[int, int]]]:
    """``(forward, backward, ranges)`` of :func:`assemble_window`."""
    forward, backward, ranges, _ = assemble_window(changes, read)
    return forward, backward, ranges


def in_forward_flags(changes: Sequence[Change]) -> list[bool]:
    """Per change event (in event order): True iff it is a WRITE/BASELINE event that no
    later change event of the window overlaps, so the forward increment holds exactly its
    bytes.

    One sort by offset finds the clusters of overlapping events; an event outside every
    such cluster is True iff it is a WRITE/BASELINE event, and only the events of a cluster
    go through the reverse sweep.
    """
    flags = [c.length > 0 and c.kind in DATA_KINDS for c in changes]
    items = sorted([(c.offset, c.offset + c.length, k) for k, c in enumerate(changes) if c.length])
    lo, reach = 0, -1
    for i, (s, e, _) in enumerate(items):
        if s >= reach:  # overlaps no earlier event: the cluster before it ends
            if i - lo > 1:
                _sweep_into(flags, sorted([it[2] for it in items[lo:i]]), changes)
            lo = i
        if e > reach:
            reach = e
    if len(items) - lo > 1:
        _sweep_into(flags, sorted([it[2] for it in items[lo:]]), changes)
    return flags
