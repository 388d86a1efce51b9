"""The value types of a restore plan (what :func:`connectors.restore.planner.plan_restore`
returns and :mod:`connectors.restore.materialize` runs), and how a plan prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas import keys
from schemas.manifest import ObjectRef

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
    volume: str = ""

    @property
    def manifest(self) -> str:
        """The key of the manifest that names the increment."""
        return keys.manifest_key(self.volume, self.first, self.last)


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
class Route:
    """A route to the point: a checkpoint (None: the implicit empty one), steps, replay.

    ``checkpoint_digest``: the checkpoint's canonical digest as planned (the executor reads
    it again and must find the same). ``final``: on a backward path, the edge window's
    forward increment, whose ranges and ``ranges_sha256`` check the image after the last
    rollback.
    """

    direction: str
    checkpoint: int | None
    checkpoint_key: str | None
    checkpoint_bytes: int
    chunk_keys: tuple[str, ...]
    steps: tuple[Step, ...]
    replay: Replay | None
    checkpoint_digest: str | None = None
    final: Step | None = None

    @property
    def bytes(self) -> int:
        """Bytes to read from the store."""
        return (
            self.checkpoint_bytes
            + sum(s.ref.size for s in self.steps)
            + (self.replay.bytes if self.replay else 0)
            + (self.final.ref.size if self.final else 0)
        )

    @property
    def objects(self) -> int:
        return (
            len(self.chunk_keys)
            + (1 if self.checkpoint_key else 0)
            + len(self.steps)
            + ((2 if self.replay.forward else 1) if self.replay else 0)
            + (1 if self.final else 0)
        )

    def keys(self) -> set[str]:
        """Every store key this path reads."""
        out = {s.ref.key for s in self.steps} | set(self.chunk_keys)
        if self.checkpoint_key:
            out.add(self.checkpoint_key)
        if self.replay:
            out |= self.replay.keys()
        if self.final:
            out.add(self.final.ref.key)
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
            "final_check": None if self.final is None else self.final.ref.key,
            "objects": self.objects,
            "bytes": self.bytes,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """The chosen path to point ``offset`` of ``volume`` and what the others would cost."""

    volume: str
    offset: int
    volume_size: int
    path: Route
    alternatives: tuple[Route, ...] = ()
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
