"""The extent map of a restore point: which stored source serves each byte of the volume.

:func:`build_map` lays a restore plan's sources over each other in plan order, exactly as
:mod:`connectors.restore.materialize` would write them into an image — the checkpoint's
chunks, then each step's increment extents, then the replayed write-log records up to the
point — so later sources overwrite earlier ones and what no source covers reads as zeros.
Only manifests, the checkpoint document and the increments' extent lists are read (an
increment's ranges live in the object itself; docs/FORMAT.md "Increments"), and every
increment is verified as a restore verifies it (digest, CRCs, recorded counts, and on a
forward path the window's ``ranges_sha256``). Replayed single writes are kept in memory
(at most one window's log). Checkpoint chunks are not read here.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

from connectors.errors import GapError, IntegrityError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import BadObjectError
from connectors.restore.plan import Plan, Step
from connectors.store.base import SHA256_NAMES, ObjectStore
from schemas import keys
from schemas.extents import Extent
from schemas.image import Image
from schemas.increment import ranges_digest, read_increment
from schemas.manifest import ObjectRef, get_verified
from schemas.writelog import ForwardBytes, apply_records, needs_forward, read_log

#: source kinds of a :class:`Source`
ZERO, CHUNK, EXTENT, LITERAL = "zero", "chunk", "extent", "literal"


@dataclass(frozen=True, slots=True)
class Source:
    """Where the bytes of a segment come from; volume byte ``p`` is byte ``p - origin``.

    ``kind`` ZERO: zeros. CHUNK: checkpoint chunk named ``key`` of ``length`` raw bytes.
    EXTENT: extent ``index`` of the increment stored at ``key``. LITERAL: ``data`` (a
    replayed single write).
    """

    kind: str
    origin: int = 0
    key: str = ""
    length: int = 0
    index: int = 0
    data: bytes | None = None

    @property
    def object_key(self) -> str:
        """The store key of the object that serves this source ('' for zeros/literals)."""
        if self.kind == CHUNK:
            return keys.chunk_key(self.key)
        return self.key if self.kind == EXTENT else ""


_ZERO = Source(ZERO)


class ExtentMap:
    """Non-overlapping segments ``[starts[i], starts[i+1])`` covering ``[0, size)``;
    ``chunk_names``: how the checkpoint's chunks are named (for their verification)."""

    def __init__(self, size: int, chunk_names: str = SHA256_NAMES) -> None:
        self.size = size
        self.chunk_names = chunk_names
        #: the plan's steps by increment key, and the plan's direction
        self.steps: dict[str, Step] = {}
        self.direction = "forward"
        self.starts: list[int] = [0]
        self.sources: list[Source] = [_ZERO]

    def __len__(self) -> int:
        return len(self.starts)

    def end(self, i: int) -> int:
        return self.starts[i + 1] if i + 1 < len(self.starts) else self.size

    def put(self, start: int, end: int, source: Source) -> None:
        """Make ``source`` serve ``[start, end)`` (clipped to the volume), over what was."""
        start, end = max(0, start), min(self.size, end)
        if start >= end:
            return
        i = bisect.bisect_right(self.starts, start) - 1
        j = bisect.bisect_right(self.starts, end - 1) - 1
        new_starts: list[int] = []
        new_sources: list[Source] = []
        if self.starts[i] < start:
            new_starts.append(self.starts[i])
            new_sources.append(self.sources[i])
        new_starts.append(start)
        new_sources.append(source)
        if self.end(j) > end:
            new_starts.append(end)
            new_sources.append(self.sources[j])
        self.starts[i : j + 1] = new_starts
        self.sources[i : j + 1] = new_sources

    def lookup(self, offset: int, length: int) -> list[tuple[int, int, Source]]:
        """The ``(start, end, source)`` pieces covering ``[offset, offset + length)``."""
        out: list[tuple[int, int, Source]] = []
        end = offset + length
        i = bisect.bisect_right(self.starts, offset) - 1
        pos = offset
        while pos < end:
            stop = min(end, self.end(i))
            out.append((pos, stop, self.sources[i]))
            pos = stop
            i += 1
        return out

    def object_keys(self) -> set[str]:
        """Store keys of the objects the map still reads from."""
        return {k for s in self.sources if (k := s.object_key)}


class _Recorder:
    """Stands in for an :class:`Image` while write-log records are replayed into a map."""

    def __init__(self, emap: ExtentMap) -> None:
        self.emap = emap
        self.size = emap.size

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        self.emap.put(offset, offset + len(data), Source(LITERAL, offset, data=bytes(data)))

    def zero(self, offset: int, length: int) -> None:
        self.emap.put(offset, offset + length, _ZERO)


def increment_extents(
    store: ObjectStore, ref: ObjectRef, direction: str, manifest: str, ranges_sha256: str = ""
) -> list[Extent]:
    """The verified extents of increment ``ref`` (digest, CRCs, recorded counts, and
    ``ranges_sha256`` when given: a forward increment's bytes are its window's ranges).

    Raises :class:`GapError` / :class:`IntegrityError` naming the object."""
    data = get_verified(store, ref)
    extents = list(read_increment(data, expect_direction=direction, name=ref.key))
    ref.check_counts(
        manifest=manifest, extents=len(extents), logical_bytes=sum(e.length for e in extents)
    )
    if ranges_sha256 and ranges_digest(extents) != ranges_sha256:
        raise IntegrityError(f"{ref.key}: does not match the recorded digest of {manifest}")
    return extents


def step_extents(store: ObjectStore, step: Step, direction: str) -> list[Extent]:
    """:func:`increment_extents` of a plan step (forward steps checked by ranges)."""
    digest = step.ranges_sha256 if direction == "forward" else ""
    return increment_extents(store, step.ref, direction, step.manifest, digest)


def _fetched(
    store: ObjectStore, steps: Sequence[Step], direction: str, workers: int
) -> Iterator[tuple[Step, list[Extent]]]:
    """(step, verified extents) in order, downloads running ahead in a bounded window."""

    def one(step: Step) -> list[Extent]:
        with _blame(step.ref.key):
            return step_extents(store, step, direction)

    ahead = 2 * max(1, workers)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        queue: deque[tuple[Step, Future[list[Extent]]]] = deque()
        todo = iter(steps)
        try:
            for step in todo:
                queue.append((step, pool.submit(one, step)))
                if len(queue) >= ahead:
                    break
            while queue:
                step, fut = queue.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    queue.append((nxt, pool.submit(one, nxt)))
                yield step, fut.result()
        finally:
            for _, fut in queue:
                fut.cancel()


@contextmanager
def _blame(key: str) -> Iterator[None]:
    """Turn a GapError / IntegrityError into a BadObjectError naming ``key``."""
    try:
        yield
    except (GapError, IntegrityError) as exc:
        raise BadObjectError(key, exc) from None


def build_map(
    store: ObjectStore,
    catalog: Catalog,
    plan: Plan,
    keep: Callable[[str, list[Extent], int], None] | None = None,
    *,
    workers: int = 4,
) -> ExtentMap:
    """The extent map of ``plan`` (its checkpoint, steps and stored replay, in order).

    ``keep(key, extents, nbytes)`` is offered each verified increment (a cache).
    Increments are downloaded by ``workers`` threads, at most ``2·workers`` ahead.

    Raises :class:`~connectors.restore.materialize.BadObjectError` wrapping the
    GapError / IntegrityError of the object at fault (the checkpoint when it is not the
    one planned).
    """
    path = plan.path
    emap = ExtentMap(plan.volume_size)
    emap.direction = path.direction
    if path.checkpoint is not None:
        assert path.checkpoint_key is not None
        with _blame(path.checkpoint_key):
            cp = catalog.checkpoint(path.checkpoint)
            if cp.digest != path.checkpoint_digest:
                raise IntegrityError(f"{cp.key}: changed since the export was planned")
            if cp.volume_size != plan.volume_size:
                raise IntegrityError(
                    f"{cp.key}: volume size {cp.volume_size}, not {plan.volume_size}"
                )
        emap.chunk_names = cp.chunk_names
        for i, digest in enumerate(cp.chunks):
            start, end = cp.chunk_range(i)
            if digest is not None:
                emap.put(start, end, Source(CHUNK, start, key=digest, length=end - start))
    for step, extents in _fetched(store, path.steps, path.direction, workers):
        emap.steps[step.ref.key] = step
        for k, ext in enumerate(extents):
            src = _ZERO if ext.data is None else Source(EXTENT, ext.offset, step.ref.key, index=k)
            emap.put(ext.offset, ext.end, src)
        if keep is not None:
            keep(step.ref.key, extents, sum(e.length for e in extents if e.data is not None))
    replay = path.replay
    if replay is not None:
        if replay.ref is None:
            raise GapError(
                f"offsets {replay.first}..{replay.upto} of {plan.volume} are in no stored "
                "window; an export serves stored points only"
            )
        manifest = keys.manifest_key(plan.volume, replay.first, replay.last)
        logged = list(read_log(get_verified(store, replay.ref), name=replay.ref.key))
        replay.ref.check_counts(manifest=manifest, records=len(logged))
        forward = None
        if replay.forward is not None and needs_forward(logged, upto_offset=replay.upto):
            exts = increment_extents(store, replay.forward, "forward", manifest)
            forward = ForwardBytes(exts, name=replay.forward.key)
        image = cast(Image, _Recorder(emap))  # only pwrite/zero are called
        apply_records(image, logged, upto_offset=replay.upto, forward=forward, name=replay.ref.key)
    return emap
