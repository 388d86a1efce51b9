"""The applied state of an image, ``<image>.kcdp-replica.json`` (docs/FORMAT.md "Local
state files"): which offset of its partition the image holds. Written by the standby
replica (``kcdp replica``) and by the worker for its own images; one codec for both.

The file's name and its ``"format": "kcdp-replica"`` are historical (the replica wrote it
first) and stay, so images and states written before the rename keep reading. Version 2
adds ``complete`` and ``move`` (an in-place move under way); version 1 files read as
complete with no move.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from connectors.errors import IntegrityError
from connectors.fsutil import fsync_dir, write_atomic
from schemas.document import load_document

#: Stored names: historical, kept for compatibility.
STATE_SUFFIX = ".kcdp-replica.json"
FORMAT = "kcdp-replica"
VERSION = 2
#: versions this code reads (1: before in-place moves; it reads as complete).
READS = (1, 2)


@dataclass(frozen=True, slots=True)
class Move:
    """An in-place move under way: from point ``source`` to ``target``; ``plan`` is the
    SHA-256 of the move's plan (its object keys, in order), which a resumed run must find."""

    source: int
    target: int
    plan: str


@dataclass(frozen=True, slots=True)
class AppliedState:
    """What an image holds: every event of its volume up to partition offset ``applied_offset``.

    ``applied_offset`` is -1 before anything was applied; ``session``/``sequence`` are the
    last applied event's (empty / -1 before the first, or when not known). While ``move``
    is set (``complete`` False) the image is a mixture of ``move.source`` (which
    ``applied_offset`` then still names) and ``move.target``: only that move may finish it.
    """

    volume: str
    topic: str
    partition: int
    applied_offset: int = -1
    session: str = ""
    sequence: int = -1
    move: Move | None = None

    @property
    def complete(self) -> bool:
        """Whether the image holds exactly point ``applied_offset`` (no move under way)."""
        return self.move is None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "volume": self.volume,
                "topic": self.topic,
                "partition": self.partition,
                "applied_offset": self.applied_offset,
                "session": self.session,
                "sequence": self.sequence,
                "complete": self.complete,
                "move": None
                if self.move is None
                else {
                    "from": self.move.source,
                    "to": self.move.target,
                    "plan": self.move.plan,
                },
            }
        )

    @classmethod
    def from_json(cls, data: bytes, *, where: str = "applied state") -> AppliedState:
        """Parse a state document; :class:`IntegrityError` naming ``where`` if it is not
        JSON, not a state document, of a version not in :data:`READS`, or damaged (``complete``
        must agree with ``move``)."""
        doc = load_document(data, fmt=FORMAT, version=READS, what="applied state", name=where)
        try:
            move = None
            if doc["version"] >= 2:
                raw = doc["move"]
                if raw is not None:
                    move = Move(int(raw["from"]), int(raw["to"]), str(raw["plan"]))
                if doc["complete"] is not (move is None):
                    raise ValueError("'complete' disagrees with 'move'")
            return cls(
                volume=str(doc["volume"]),
                topic=str(doc["topic"]),
                partition=int(doc["partition"]),
                applied_offset=int(doc["applied_offset"]),
                session=str(doc["session"]),
                sequence=int(doc["sequence"]),
                move=move,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{where} is unreadable: {exc!r}") from None


def state_path(output: str | Path) -> Path:
    """Where the applied state of the image ``output`` is kept."""
    return Path(f"{output}{STATE_SUFFIX}")


def load_state(output: str | Path) -> AppliedState | None:
    """The stored state beside ``output``, or None when there is none
    (:meth:`AppliedState.from_json` for what is refused)."""
    path = state_path(output)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return AppliedState.from_json(data, where=str(path))


def save_state(output: str | Path, state: AppliedState) -> None:
    """Store ``state`` atomically: temp file, fsync, rename, fsync the directory."""
    write_atomic(state_path(output), state.to_json())


def remove_state(output: str | Path) -> None:
    """Remove the state beside ``output`` durably (fsync the directory), if any."""
    path = state_path(output)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
