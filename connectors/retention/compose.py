"""Consolidation: one window made of consecutive stored windows (docs/FORMAT.md
"Retention", step 1), composed from their stored increments — no event is replayed.

The forward increment holds the bytes of the last member's end for every range any member
changed: the members' forward increments applied oldest first onto a scratch sparse file.
The backward increment holds the bytes before the first member: their backward increments
applied newest first onto another. Both cover the union of the members' ranges, split at the
same points; memory holds one member's increment at a time and the union of ranges.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from connectors.store.base import ObjectStore
from schemas import keys
from schemas.extents import MAX_EXTENT, Extent, split_ranges, union_ranges
from schemas.image import Image
from schemas.increment import read_increment, write_increment
from schemas.manifest import MERGED_VERSION, Manifest, Merged, ObjectRef, get_verified

_ZEROS = bytes(MAX_EXTENT)


def consolidate(
    store: ObjectStore, members: Sequence[Manifest], previous: Manifest | None, workdir: Path
) -> Manifest:
    """Store the consolidated window of ``members`` (consecutive, oldest first) and
    return its manifest, not yet put. ``previous`` is the stored window before the first
    member; None: the first member starts the volume or follows the base, and its own
    ``previous`` is kept."""
    first, last = members[0], members[-1]
    if len(members) == 1:
        forward, backward, ranges = first.forward, first.backward, first.ranges_sha256
    else:
        forward, backward, ranges = _compose(store, members, workdir)
    if isinstance(previous, Manifest):
        prev: tuple[int, int] | None = (previous.first_offset, previous.last_offset)
        prev_digest: str | None = previous.digest
    else:
        prev, prev_digest = first.previous, first.previous_digest
    windows = sum(m.merged.windows if m.merged else 1 for m in members)
    return Manifest(
        volume=last.volume,
        group=last.group,
        topic=last.topic,
        partition=last.partition,
        volume_size=last.volume_size,
        first_offset=first.first_offset,
        last_offset=last.last_offset,
        first_time_us=first.first_time_us,
        last_time_us=last.last_time_us,
        session=last.session,
        first_sequence=first.first_sequence,
        last_sequence=last.last_sequence,
        events=sum(m.events for m in members),
        bytes_written=sum(m.bytes_written for m in members),
        policy=last.policy,
        period_us=last.period_us,
        close_reason=last.close_reason,
        previous=prev,
        restorable_from=last.last_offset if last.consistent else None,
        consistent=last.consistent,
        bookmarks=tuple(b for m in members for b in m.bookmarks if b.offset == last.last_offset),
        ranges_sha256=ranges,
        forward=forward,
        backward=backward,
        writelog=None,
        created_us=time.time_ns() // 1000,
        previous_digest=prev_digest if prev is not None else None,
        fenced=last.fenced,
        baseline_open=last.baseline_open,
        version=MERGED_VERSION,
        merged=Merged(windows=windows, aliases=last.identities()),
    )


def _compose(
    store: ObjectStore, members: Sequence[Manifest], workdir: Path
) -> tuple[ObjectRef, ObjectRef, str]:
    """Upload the composed increments of ``members``; (forward, backward, ranges_sha256)."""
    first, last = members[0], members[-1]
    size = last.volume_size
    ranges: list[tuple[int, int]] = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        fwd = Image(Path(tmp) / "forward", size)
        bwd = Image(Path(tmp) / "backward", size)
        try:
            for m in members:
                extents = _extents(store, m.forward, "forward")
                fwd.apply(extents)
                ranges.extend((e.offset, e.end) for e in extents)
            for m in reversed(members):
                bwd.apply(_extents(store, m.backward, "backward"))
            pieces = split_ranges(union_ranges(ranges), MAX_EXTENT)
            refs: list[ObjectRef] = []
            digest = ""
            for direction, image in (("forward", fwd), ("backward", bwd)):
                buf = io.BytesIO()
                info = write_increment(
                    buf,
                    _read_out(image, pieces),
                    direction=direction,
                    volume=last.volume,
                    first_offset=first.first_offset,
                    last_offset=last.last_offset,
                    digest=direction == "forward",
                )
                part = "fwd" if direction == "forward" else "bwd"
                key = keys.data_key(last.volume, first.first_offset, last.last_offset, part)
                data = buf.getvalue()
                store.put(key, data)
                refs.append(
                    ObjectRef.of(key, data, extents=info.extents, logical_bytes=info.logical_bytes)
                )
                digest = digest or info.ranges_sha256
        finally:
            fwd.close()
            bwd.close()
    return refs[0], refs[1], digest


def _extents(store: ObjectStore, ref: ObjectRef, direction: str) -> list[Extent]:
    data = get_verified(store, ref)
    return list(read_increment(data, expect_direction=direction, name=ref.key))


def _read_out(image: Image, pieces: list[tuple[int, int]]) -> Iterator[Extent]:
    """The image's bytes over ``pieces``; all-zero pieces as zero runs."""
    for start, end in pieces:
        data = image.pread(start, end - start)
        yield Extent(start, end - start, None if data == _ZEROS[: end - start] else data)
