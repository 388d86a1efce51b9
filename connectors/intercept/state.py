"""The intercept's local state file ``<backing>.kcdp-state.json`` (docs/FORMAT.md).

It records the last session of a volume and whether it closed cleanly (every event
acknowledged, ``SESSION_END`` published). A clean state that matches the volume lets the
next open resume without a baseline; anything else requires one. A state of another
version than this code reads is refused, never taken for an unclean one and overwritten.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from connectors.errors import VolumeError
from connectors.fsutil import write_atomic

STATE_FORMAT = "kcdp-intercept-state"
STATE_VERSION = 1

log = logging.getLogger("kcdp.intercept")


def state_path(backing: str | os.PathLike[str]) -> Path:
    """Where the state of the volume backed by ``backing`` lives."""
    return Path(f"{os.fspath(backing)}.kcdp-state.json")


@dataclass(frozen=True, slots=True)
class InterceptState:
    """One state document; ``sequence`` is the last sequence the session used."""

    volume: str
    group: str
    session: str
    sequence: int
    clean: bool
    volume_size: int

    def matches(self, *, volume: str, group: str, volume_size: int) -> bool:
        """True if this state describes the same volume, group and size."""
        return (self.volume, self.group, self.volume_size) == (volume, group, volume_size)


def load_state(backing: str | os.PathLike[str]) -> InterceptState | None:
    """The state beside ``backing``; None if there is none, or if it is unusable (unreadable,
    not JSON, not a state document, fields missing: a warning names the file, and the next
    open takes a baseline).

    :class:`VolumeError` naming the file if it is of another version than
    :data:`STATE_VERSION` (a newer kcdp wrote it).
    """
    path = state_path(backing)
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        _unusable(path, f"unreadable ({exc})")
        return None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        _unusable(path, f"not a {STATE_FORMAT} document")
        return None
    version = doc.get("version")
    if type(version) is not int or version != STATE_VERSION:
        raise VolumeError(
            f"{path}: intercept state version {version!r}, this kcdp reads version "
            f"{STATE_VERSION}; open the volume with the kcdp that wrote it, or remove the "
            "file to take a baseline"
        )
    try:
        return InterceptState(
            volume=str(doc["volume"]),
            group=str(doc["group"]),
            session=str(doc["session"]),
            sequence=int(doc["sequence"]),
            clean=bool(doc["clean"]),
            volume_size=int(doc["volume_size"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        _unusable(path, f"a field is missing or invalid ({exc!r})")
        return None


def _unusable(path: Path, why: str) -> None:
    log.warning(
        "intercept state %s is %s: ignored, the volume's history needs a baseline", path, why
    )


def save_state(backing: str | os.PathLike[str], state: InterceptState) -> None:
    """Write the state atomically: temp file, fsync, rename, fsync of the directory."""
    path = state_path(backing)
    doc = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "volume": state.volume,
        "group": state.group,
        "session": state.session,
        "sequence": state.sequence,
        "clean": state.clean,
        "volume_size": state.volume_size,
    }
    try:
        write_atomic(path, orjson.dumps(doc))
    except OSError as exc:
        raise VolumeError(f"cannot write intercept state {path}: {exc}") from None
