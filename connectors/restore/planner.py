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

A path is refused when the window chain on it is broken (a manifest missing: ``previous``
does not link), when a recorded gap lies between its checkpoint and the edge, or when it
uses an object in ``avoid`` (known bad). Each path costs the bytes it reads: checkpoint
chunks + increments + the write log + the target window's forward increment, which a
write-log replay may need for its ``in_forward`` records (docs/FORMAT.md "Write log"; the
executor fetches it only when a record up to N is ``in_forward``, so this is an upper
bound). ``auto`` takes the cheaper (forward on a tie).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connectors.errors import GapError, IntegrityError, NotRestorableError, UsageError
from connectors.restore.catalog import Catalog
from streams import keys
from streams.manifest import Manifest, ObjectRef

DIRECTIONS = ("auto", "forward", "backward")
#: assumed read throughput for the time estimate of a plan (bytes/s); an estimate only.
DEFAULT_THROUGHPUT = 200 << 20


@dataclass(frozen=True, slots=True)
class Step:
    """Apply one increment of window ``first``-``last``; ``ranges_sha256`` checks it."""

    first: int
    last: int
    ref: ObjectRef
    ranges_sha256: str


@dataclass(frozen=True, slots=True)
class Replay:
    """Replay window ``first``-``last``'s write log up to offset ``upto``; ``ref`` None:
    the tail after the newest window (offsets ``first..upto``), only in Kafka, continuing
    the event at offset ``first - 1``. ``forward``: the window's forward increment, which
    holds the bytes of the log's ``in_forward`` records (None with ``ref`` None)."""

    first: int
    last: int
    ref: ObjectRef | None
    upto: int
    forward: ObjectRef | None = None

    @property
    def bytes(self) -> int:
        """Bytes to read from the store: the log and (at most) the forward increment."""
        if self.ref is None:
            return 0
        return self.ref.size + (self.forward.size if self.forward else 0)

    def keys(self) -> set[str]:
        return {r.key for r in (self.ref, self.forward) if r is not None}


@dataclass(frozen=True, slots=True)
class Path:
    """One way to reach the point: a checkpoint (None: the implicit empty one), steps, replay."""

    direction: str
    checkpoint: int | None
    checkpoint_key: str | None
    checkpoint_bytes: int
    chunk_keys: tuple[str, ...]
    steps: tuple[Step, ...]
    replay: Replay | None

    @property
    def bytes(self) -> int:
        """Bytes to read from the store."""
        return (
            self.checkpoint_bytes
            + sum(s.ref.size for s in self.steps)
            + (self.replay.bytes if self.replay else 0)
        )

    @property
    def objects(self) -> int:
        return (
            len(self.chunk_keys)
            + (1 if self.checkpoint_key else 0)
            + len(self.steps)
            + ((2 if self.replay.forward else 1) if self.replay else 0)
        )

    def keys(self) -> set[str]:
        """Every store key this path reads."""
        out = {s.ref.key for s in self.steps} | set(self.chunk_keys)
        if self.checkpoint_key:
            out.add(self.checkpoint_key)
        if self.replay:
            out |= self.replay.keys()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "checkpoint": self.checkpoint,
            "checkpoint_bytes": self.checkpoint_bytes,
            "increments": [
                {"window": [s.first, s.last], "key": s.ref.key, "bytes": s.ref.size}
                for s in self.steps
            ],
            "replay": None
            if self.replay is None
            else {
                "window": [self.replay.first, self.replay.last],
                "key": self.replay.ref.key if self.replay.ref else None,
                "forward_key": self.replay.forward.key if self.replay.forward else None,
                "source": "log" if self.replay.ref else "kafka",
                "bytes": self.replay.bytes,
                "upto": self.replay.upto,
            },
            "objects": self.objects,
            "bytes": self.bytes,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """The chosen path to point ``offset`` of ``volume`` and what the others would cost."""

    volume: str
    offset: int
    volume_size: int
    path: Path
    alternatives: tuple[Path, ...] = ()
    refused: dict[str, str] = field(default_factory=dict)
    throughput: int = DEFAULT_THROUGHPUT

    @property
    def estimated_seconds(self) -> float:
        return self.path.bytes / self.throughput

    def to_dict(self) -> dict[str, Any]:
        return {
            "volume": self.volume,
            "offset": self.offset,
            "volume_size": self.volume_size,
            "direction": self.path.direction,
            "bytes": self.path.bytes,
            "objects": self.path.objects,
            "estimated_seconds": round(self.estimated_seconds, 3),
            "path": self.path.to_dict(),
            "alternatives": [
                {"direction": p.direction, "bytes": p.bytes, "objects": p.objects}
                for p in self.alternatives
            ],
            "refused": dict(self.refused),
        }

    def to_text(self) -> str:
        p = self.path
        start = "empty image" if p.checkpoint is None else f"checkpoint @{p.checkpoint}"
        lines = [
            f"restore {self.volume} to offset {self.offset} ({self.volume_size} bytes)",
            f"  direction   {p.direction}",
            f"  start       {start} ({_size(p.checkpoint_bytes)})",
            f"  increments  {len(p.steps)} ({_size(sum(s.ref.size for s in p.steps))})",
        ]
        if p.replay and p.replay.ref:
            lines.append(
                f"  replay      window {p.replay.first}-{p.replay.last} up to {p.replay.upto} "
                f"({_size(p.replay.bytes)} with the forward increment)"
            )
        elif p.replay:
            lines.append(
                f"  replay      offsets {p.replay.first}-{p.replay.upto} from Kafka "
                "(after the newest window)"
            )
        lines.append(
            f"  total       {p.objects} objects, {_size(p.bytes)}, "
            f"~{self.estimated_seconds:.1f} s at {_size(self.throughput)}/s"
        )
        for alt in self.alternatives:
            lines.append(
                f"  other       {alt.direction}: {alt.objects} objects, {_size(alt.bytes)}"
            )
        for direction, why in self.refused.items():
            lines.append(f"  refused     {direction}: {why}")
        return "\n".join(lines)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


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
        _check_gaps(catalog, m.last_offset, offset)
        replay: Replay | None = Replay(m.last_offset + 1, offset, None, offset)
    else:
        edge_index, replay, m = _edge(catalog, offset)
    edge = catalog.windows[edge_index].last if edge_index >= 0 else -1
    paths: list[Path] = []
    refused: dict[str, str] = {}
    builders = {"forward": _forward, "backward": _backward}
    for name in ("forward", "backward") if direction == "auto" else (direction,):
        try:
            path = builders[name](catalog, edge_index, edge, replay)
            bad = sorted(path.keys() & set(avoid))
            if bad:
                raise NotRestorableError(f"it reads {bad[0]}, which failed verification")
            paths.append(path)
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


def _edge(catalog: Catalog, offset: int) -> tuple[int, Replay | None, Manifest]:
    """(edge window index, replay, target window's manifest) of a stored point."""
    index, m = catalog.check_point(offset)
    if offset >= m.last_offset:
        return index, None, m
    return index - 1, Replay(m.first_offset, m.last_offset, m.writelog, offset, m.forward), m


def _check_chain(catalog: Catalog, lo: int, hi: int) -> None:
    """Windows ``lo..hi`` (indices) must each link to the window before them."""
    for k in range(max(lo, 0), hi + 1):
        prev = catalog.manifest(k).previous
        want = None if k == 0 else (catalog.windows[k - 1].first, catalog.windows[k - 1].last)
        if prev != want:
            if k == 0:
                raise GapError(
                    f"the history of {catalog.volume} before window "
                    f"{catalog.windows[0].first}-{catalog.windows[0].last} is not stored"
                )
            assert prev is not None
            raise GapError(
                f"window {prev[0]}-{prev[1]} of {catalog.volume} is missing (window "
                f"{catalog.windows[k].first}-{catalog.windows[k].last} follows it)"
            )


def _check_gaps(catalog: Catalog, low: int, high: int) -> None:
    gaps = catalog.gaps_between(low, high)
    if gaps:
        g = gaps[0]
        raise GapError(
            f"the path crosses a recorded {g.kind} gap of {catalog.volume} at offset "
            f"{g.at_offset} ({g.detail or 'see ' + g.key})"
        )


def _checkpoint_start(catalog: Catalog, offset: int) -> tuple[str, int, tuple[str, ...]]:
    cp = catalog.checkpoint(offset)
    chunks = tuple(sorted({keys.chunk_key(c) for c in cp.chunks if c is not None}))
    return cp.key, cp.stored_bytes, chunks


def _window_index_ending_at(catalog: Catalog, offset: int) -> int:
    for k, w in enumerate(catalog.windows):
        if w.last == offset:
            return k
    raise GapError(f"checkpoint {catalog.volume}@{offset} is not at the end of a stored window")


def _forward(catalog: Catalog, edge_index: int, edge: int, replay: Replay | None) -> Path:
    before = [c for c in catalog.checkpoints if c <= edge]
    if before:
        start: int | None = before[-1]
        first_index = _window_index_ending_at(catalog, before[-1]) + 1
        cp_key, cp_bytes, chunks = _checkpoint_start(catalog, before[-1])
    else:
        start, first_index, cp_key, cp_bytes, chunks = None, 0, None, 0, ()
    _check_gaps(catalog, -1 if start is None else start, edge)
    _check_chain(catalog, first_index, edge_index + (1 if replay and replay.ref else 0))
    steps = tuple(
        Step(m.first_offset, m.last_offset, m.forward, m.ranges_sha256)
        for m in catalog.manifests(range(first_index, edge_index + 1))
    )
    return Path("forward", start, cp_key, cp_bytes, chunks, steps, replay)


def _backward(catalog: Catalog, edge_index: int, edge: int, replay: Replay | None) -> Path:
    after = [c for c in catalog.checkpoints if c >= edge]
    if not after:
        raise NotRestorableError(
            f"no checkpoint of {catalog.volume} at or after offset {max(edge, 0)} to roll back from"
        )
    start = after[0]
    last_index = _window_index_ending_at(catalog, start)
    cp_key, cp_bytes, chunks = _checkpoint_start(catalog, start)
    _check_gaps(catalog, edge, start)
    _check_chain(catalog, edge_index + 1, last_index)
    steps = tuple(
        Step(m.first_offset, m.last_offset, m.backward, m.ranges_sha256)
        for m in reversed(catalog.manifests(range(edge_index + 1, last_index + 1)))
    )
    return Path("backward", start, cp_key, cp_bytes, chunks, steps, replay)
