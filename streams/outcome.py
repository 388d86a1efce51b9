"""What processing a partition's records produces (:class:`Outcome`): dead letters to
publish, windows and gaps stored, and the offset that may be committed."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.gaps import Gap
from schemas.manifest import Manifest

#: A raw record of ``kcdp.writes``: ``(offset, key, value)``.
Record = tuple[int, bytes | None, bytes | None]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be used; publish it to ``kcdp.writes.dlq``."""

    offset: int
    key: bytes | None
    value: bytes | None
    volume: str
    error: str
    reason: str


@dataclass(slots=True)
class Outcome:
    """What one :meth:`PartitionProcessor.feed` call did and what the caller must do."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    windows: list[Manifest] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    skipped: int = 0
    commit_offset: int = 0
