"""Restore planning: which objects to read to materialize point N of a volume.

Point N falls in window *i* (the last window whose first offset is ≤ N). Its *edge* is the
end of window *i* when N ≥ its last offset (no replay), else the end of window *i-1* (the
implicit empty image before the first window), followed by replaying window *i*'s write
log up to N. Two candidate paths reach the edge (docs/FORMAT.md "Restore"):

* **forward** — the newest checkpoint at or before the edge (or the implicit empty
  checkpoint, usable only while the volume's first window is stored), then the forward
  increments of the windows after it up to the edge, oldest first;
* **backward** — the oldest checkpoint at or after the edge, then the backward increments
  of the windows from it down to the edge, newest first.

Before any byte is written, a path is refused unless it stands on an unbroken history
(docs/FORMAT.md "Restore"): every window from the checkpoint's to the target window follows
the one before it (:func:`schemas.manifest.check_link`: offsets and digests), a version 2
checkpoint pairs with the manifest ending at its offset, and a point after a window's end
has the next window (or the head) vouch for that window (:meth:`Catalog.check_point`).
A stored path may cross a recorded gap (the point is consistent, so a baseline begun after
the gap rewrote every byte before it; docs/FORMAT.md "Restore", rule 4) unless the window
after the gap claims consistency from its first event (:func:`_check_healed`); a Kafka
tail may not cross one. A path is refused when it uses an object in ``avoid`` (known bad);
an older (forward) or newer (backward) checkpoint is tried then. Each path costs the bytes
it reads: checkpoint chunks + increments + the write log + the target window's forward
increment, which a write-log replay may need for its ``in_forward`` records
(docs/FORMAT.md "Write log"; the executor fetches it only when a record up to N is
``in_forward``, so this is an upper bound) + on a backward path the edge window's forward
increment, whose ranges check the result (``final``). ``auto`` takes the cheaper (forward
on a tie).
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.errors import GapError, IntegrityError, NotRestorableError, UsageError
from connectors.restore.catalog import Catalog
from connectors.restore.plan import DEFAULT_THROUGHPUT, DIRECTIONS, Plan, Replay, Route, Step
from schemas import keys
from schemas.chain import Predecessor, check_link
from schemas.checkpoint import check_pairing
from schemas.manifest import Manifest


def plan_restore(
    catalog: Catalog,
    offset: int,
    *,
    direction: str = "auto",
    avoid: frozenset[str] | set[str] = frozenset(),
    throughput: int = DEFAULT_THROUGHPUT,
    tail: bool = False,
) -> Plan:
    """Plan point ``offset``; raises NotRestorableError/GapError naming why no path works.

    ``tail`` allows points after the newest stored window: they are reached from its end
    by replaying Kafka (the executor then needs a Kafka source).
    """
    if direction not in DIRECTIONS:
        raise UsageError(f"--direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    catalog.require_windows()
    if tail and offset > catalog.windows[-1].last:
        edge_index = len(catalog.windows) - 1
        m = catalog.manifest(edge_index)
        if not m.consistent:
            raise NotRestorableError(
                f"the newest window of {catalog.volume} ({m.first_offset}-{m.last_offset}) "
                "does not end consistent; later points are not restorable"
            )
        catalog.check_after(edge_index, offset)
        _check_gaps(catalog, m.last_offset, offset)
        replay: Replay | None = Replay(m.last_offset + 1, offset, None, offset)
    else:
        edge_index, replay, m = _edge(catalog, offset)
    edge = catalog.windows[edge_index].last if edge_index >= 0 else _floor(catalog)
    paths: list[Route] = []
    refused: dict[str, str] = {}
    for name in ("forward", "backward") if direction == "auto" else (direction,):
        try:
            paths.append(_path(catalog, name, edge_index, edge, replay, frozenset(avoid)))
        except (NotRestorableError, GapError, IntegrityError) as exc:
            refused[name] = str(exc)
    if not paths:
        reasons = "; ".join(f"{d}: {why}" for d, why in refused.items())
        raise NotRestorableError(f"no restore path to {catalog.volume}@{offset}: {reasons}")
    paths.sort(key=lambda p: (p.bytes, p.direction != "forward"))
    return Plan(
        volume=catalog.volume,
        offset=offset,
        volume_size=m.volume_size,
        path=paths[0],
        alternatives=tuple(paths[1:]),
        refused=refused,
        throughput=throughput,
    )


def _floor(catalog: Catalog) -> int:
    """The edge before the first stored window: the base, or -1 (the empty image)."""
    return -1 if catalog.base is None else catalog.base.offset


def _edge(catalog: Catalog, offset: int) -> tuple[int, Replay | None, Manifest]:
    """(edge window index, replay, target window's manifest) of a stored point; the base
    point is edge -1 (its checkpoint, nothing applied) and takes the first window's."""
    base = catalog.base
    if base is not None and offset == base.offset:
        if not base.consistent:
            raise NotRestorableError(
                f"point {offset} of {catalog.volume} (its retention base) is not consistent"
            )
        return -1, None, catalog.manifest(0)
    index, m = catalog.check_point(offset)
    if offset >= m.last_offset:
        return index, None, m
    return index - 1, Replay(m.first_offset, m.last_offset, m.writelog, offset, m.forward), m


def _check_chain(catalog: Catalog, before: Predecessor, lo: int, hi: int) -> None:
    """Windows ``lo..hi`` (indices) must each follow the one before them; ``before`` is
    window ``lo - 1`` (``lo`` 0: the base's link, else None: the volume's first window)."""
    prev = before
    for m in catalog.manifests(range(lo, hi + 1)):
        check_link(prev, m)
        prev = m


def _check_healed(catalog: Catalog, low: int, high: int) -> None:
    """A stored path over ``low..high`` may cross a gap only if the window after it starts
    inconsistent, as the worker writes it (the point's consistency then rests on a
    baseline begun after the gap); a store claiming otherwise contradicts its gap record."""
    for g in catalog.gaps_between(low, high):
        k = next((i for i, w in enumerate(catalog.windows) if w.first >= g.at_offset), None)
        if k is None:
            continue
        m = catalog.manifest(k)
        if m.restorable_from == m.first_offset:
            raise GapError(
                f"the path crosses a recorded {g.kind} gap of {catalog.volume} at offset "
                f"{g.at_offset} that no baseline healed: window {m.first_offset}-"
                f"{m.last_offset} after it claims consistency from its first event"
            )


def _check_gaps(catalog: Catalog, low: int, high: int) -> None:
    gaps = catalog.gaps_between(low, high)
    if gaps:
        g = gaps[0]
        raise GapError(
            f"the path crosses a recorded {g.kind} gap of {catalog.volume} at offset "
            f"{g.at_offset} ({g.detail or 'see ' + g.key})"
        )


@dataclass(frozen=True, slots=True)
class _Start:
    """A checkpoint a path starts from, checked against the manifest ending at it."""

    offset: int
    index: int  # of the window ending at it (-1: the base)
    before: Predecessor  # what the window after it follows
    key: str
    stored_bytes: int
    chunks: tuple[str, ...]
    digest: str


def _start(catalog: Catalog, offset: int) -> _Start:
    base = catalog.base
    cp = catalog.checkpoint(offset)
    before: Predecessor
    if base is not None and offset == base.offset:
        index = -1
        if cp.digest != base.checkpoint_digest:
            raise IntegrityError(
                f"{cp.key}: is not the base checkpoint {keys.retention_key(catalog.volume)} "
                "records (replaced or altered)"
            )
        before = base.link
    else:
        index = _window_index_ending_at(catalog, offset)
        before = catalog.manifest(index)
        check_pairing(cp, before)
    chunks = tuple(sorted({keys.chunk_key(c) for c in cp.chunks if c is not None}))
    return _Start(offset, index, before, cp.key, cp.stored_bytes, chunks, cp.digest)


def _window_index_ending_at(catalog: Catalog, offset: int) -> int:
    for k, w in enumerate(catalog.windows):
        if w.last == offset:
            return k
    raise GapError(f"checkpoint {catalog.volume}@{offset} is not at the end of a stored window")


def _path(
    catalog: Catalog,
    direction: str,
    edge_index: int,
    edge: int,
    replay: Replay | None,
    avoid: frozenset[str],
) -> Route:
    """The first usable ``direction`` path, trying its checkpoints from the nearest."""
    if direction == "forward":
        starts: list[int | None] = [c for c in reversed(catalog.checkpoints) if c <= edge]
        if catalog.base is None:
            starts.append(None)  # the implicit empty checkpoint
    else:
        starts = [c for c in catalog.checkpoints if c >= edge]
        if not starts:
            raise NotRestorableError(
                f"no checkpoint of {catalog.volume} at or after offset {max(edge, 0)} "
                "to roll back from"
            )
    if not starts:
        raise NotRestorableError(
            f"no checkpoint of {catalog.volume} at or before offset {edge} (the base "
            f"{keys.retention_key(catalog.volume)} names has none)"
        )
    first: NotRestorableError | GapError | IntegrityError | None = None
    for start in starts:
        try:
            if direction == "forward":
                path = _forward(catalog, start, edge_index, edge, replay)
            else:
                assert start is not None
                path = _backward(catalog, start, edge_index, edge, replay)
            bad = sorted(path.keys() & avoid)
            if bad:
                raise NotRestorableError(f"it reads {bad[0]}, which failed verification")
            return path
        except (NotRestorableError, GapError, IntegrityError) as exc:
            first = first or exc
    assert first is not None
    raise first


def _target_index(edge_index: int, replay: Replay | None) -> int:
    """The last window a path stands on: the edge's, or the target window replayed."""
    return edge_index + (1 if replay and replay.ref else 0)


def _forward(
    catalog: Catalog, offset: int | None, edge_index: int, edge: int, replay: Replay | None
) -> Route:
    start = None if offset is None else _start(catalog, offset)
    _check_healed(catalog, -1 if offset is None else offset, edge)
    first_index = 0 if start is None else start.index + 1
    before = None if start is None else start.before
    _check_chain(catalog, before, first_index, _target_index(edge_index, replay))
    steps = tuple(
        Step(m.first_offset, m.last_offset, m.forward, m.ranges_sha256, m.volume)
        for m in catalog.manifests(range(first_index, edge_index + 1))
    )
    if start is None:
        return Route("forward", None, None, 0, (), steps, replay)
    return Route(
        "forward", offset, start.key, start.stored_bytes, start.chunks, steps, replay, start.digest
    )


def _backward(
    catalog: Catalog, offset: int, edge_index: int, edge: int, replay: Replay | None
) -> Route:
    start = _start(catalog, offset)
    _check_healed(catalog, edge, offset)
    before: Predecessor = catalog.manifest(edge_index) if edge_index >= 0 else None
    if edge_index < 0 and catalog.base is not None:
        before = catalog.base.link
    _check_chain(
        catalog, before, edge_index + 1, max(start.index, _target_index(edge_index, replay))
    )
    steps = tuple(
        Step(m.first_offset, m.last_offset, m.backward, m.ranges_sha256, m.volume)
        for m in reversed(catalog.manifests(range(edge_index + 1, start.index + 1)))
    )
    final = None
    if steps and isinstance(before, Manifest):
        final = Step(
            before.first_offset,
            before.last_offset,
            before.forward,
            before.ranges_sha256,
            before.volume,
        )
    return Route(
        "backward",
        offset,
        start.key,
        start.stored_bytes,
        start.chunks,
        steps,
        replay,
        start.digest,
        final,
    )
