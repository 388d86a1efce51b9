"""The applied state of an image, ``<image>.kcdp-replica.json`` (docs/FORMAT.md "Local
state files"): which offset of its partition the image holds. Written by the standby
replica (``kcdp replica``) and by the worker for its own images; one codec for both.

The file's name and its ``"format": "kcdp-replica"`` are historical (the replica wrote it
first) and stay, so images and states written before the rename keep reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from connectors.errors import IntegrityError
from connectors.fsutil import write_atomic
from schemas.document import load_document

#: Stored names: historical, kept for compatibility.
STATE_SUFFIX = ".kcdp-replica.json"
FORMAT = "kcdp-replica"
VERSION = 1


@dataclass(frozen=True, slots=True)
class AppliedState:
    """What an image holds: every event of its volume up to partition offset ``applied_offset``.

    ``applied_offset`` is -1 before anything was applied; ``session``/``sequence`` are the
    last applied event's (empty / -1 before the first).
    """

    volume: str
    topic: str
    partition: int
    applied_offset: int = -1
    session: str = ""
    sequence: int = -1

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
            }
        )

    @classmethod
    def from_json(cls, data: bytes, *, where: str = "applied state") -> AppliedState:
        """Parse a state document; :class:`IntegrityError` naming ``where`` if it is not
        JSON, not a state document, of another version than :data:`VERSION`, or damaged."""
        doc = load_document(data, fmt=FORMAT, version=VERSION, what="applied state", name=where)
        try:
            return cls(
                volume=str(doc["volume"]),
                topic=str(doc["topic"]),
                partition=int(doc["partition"]),
                applied_offset=int(doc["applied_offset"]),
                session=str(doc["session"]),
                sequence=int(doc["sequence"]),
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
