"""Retention documents (docs/FORMAT.md "Retention"): a volume's ``retention.json`` and the
store's chunk deletion candidates.

:class:`RetentionState` records the volume's base (the oldest kept edge, its checkpoint and
the identity the oldest stored window names as its previous), where the any-point journal
started at the last prune, and the volume's deletion candidates. :class:`ChunkCandidates`
holds the candidates among the store's checkpoint chunks. Both are sealed with the
canonical digest. :func:`effective_windows` is the one rule for which stored manifests
make a volume's history (superseded spans and windows before the base are left out).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from connectors.errors import IntegrityError, ObjectNotFoundError
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.document import check_digest, load_document, sealed
from schemas.manifest import Manifest, WindowId

FORMAT = "kcdp-retention"
CHUNKS_FORMAT = "kcdp-chunk-candidates"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Candidate:
    """A key to delete once it has been a candidate for the grace period: when it was
    marked (prune's clock) and the store's modification time it had then."""

    key: str
    marked_us: int
    modified_us: int

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "marked_us": self.marked_us, "modified_us": self.modified_us}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        return cls(str(d["key"]), int(d["marked_us"]), int(d["modified_us"]))


@dataclass(frozen=True, slots=True)
class Base:
    """The oldest kept edge: its offset, its checkpoint's digest, the identity of the
    (dropped) window ending there, which the oldest stored window names, whether the
    point there is consistent (else it only anchors the windows after it), and the time
    of its last event (the base stays a candidate edge of the policy's tiers)."""

    offset: int
    checkpoint_digest: str
    link: WindowId
    consistent: bool = True
    time_us: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "consistent": self.consistent,
            "time_us": self.time_us,
            "checkpoint_digest": self.checkpoint_digest,
            "link": {
                "first_offset": self.link.first_offset,
                "last_offset": self.link.last_offset,
                "digest": self.link.digest,
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Base:
        link = d["link"]
        return cls(
            offset=int(d["offset"]),
            checkpoint_digest=str(d["checkpoint_digest"]),
            link=WindowId(int(link["first_offset"]), int(link["last_offset"]), str(link["digest"])),
            consistent=bool(d["consistent"]),
            time_us=int(d["time_us"]),
        )


@dataclass(frozen=True, slots=True)
class RetentionState:
    """A volume's ``retention.json`` (field meanings in docs/FORMAT.md)."""

    volume: str
    base: Base | None = None
    journal_from: int | None = None
    candidates: tuple[Candidate, ...] = ()
    policy: dict[str, Any] = field(default_factory=dict)
    updated_us: int = 0

    @property
    def key(self) -> str:
        return keys.retention_key(self.volume)

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT,
            "version": VERSION,
            "volume": self.volume,
            "base": None if self.base is None else self.base.to_dict(),
            "journal_from": self.journal_from,
            "candidates": [c.to_dict() for c in self.candidates],
            "policy": self.policy,
            "updated_us": self.updated_us,
        }
        return orjson.dumps(sealed(body))

    @classmethod
    def from_json(cls, data: bytes, *, name: str) -> RetentionState:
        d = load_document(data, fmt=FORMAT, version=VERSION, what="retention state", name=name)
        check_digest(d, what="retention state", name=name)
        try:
            return cls(
                volume=str(d["volume"]),
                base=None if d["base"] is None else Base.from_dict(d["base"]),
                journal_from=None if d["journal_from"] is None else int(d["journal_from"]),
                candidates=tuple(Candidate.from_dict(c) for c in d["candidates"]),
                policy=dict(d["policy"]),
                updated_us=int(d["updated_us"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{name}: malformed retention state ({exc})") from None


def load_retention(store: ObjectStore, volume: str) -> RetentionState | None:
    """The retention state of ``volume``; None before its first prune."""
    key = keys.retention_key(volume)
    try:
        data = store.get(key)
    except ObjectNotFoundError:
        return None
    state = RetentionState.from_json(data, name=key)
    if state.volume != volume:
        raise IntegrityError(f"{key}: holds the retention state of volume {state.volume!r}")
    return state


@dataclass(frozen=True, slots=True)
class ChunkCandidates:
    """The store's checkpoint chunks no checkpoint referenced when they were marked."""

    candidates: tuple[Candidate, ...] = ()
    updated_us: int = 0

    def to_json(self) -> bytes:
        body = {
            "format": CHUNKS_FORMAT,
            "version": VERSION,
            "candidates": [c.to_dict() for c in self.candidates],
            "updated_us": self.updated_us,
        }
        return orjson.dumps(sealed(body))


def load_chunk_candidates(store: ObjectStore) -> ChunkCandidates:
    """The store's chunk candidates (none before the first prune)."""
    key = keys.chunk_candidates_key()
    try:
        data = store.get(key)
    except ObjectNotFoundError:
        return ChunkCandidates()
    d = load_document(data, fmt=CHUNKS_FORMAT, version=VERSION, what="chunk candidates", name=key)
    check_digest(d, what="chunk candidates", name=key)
    try:
        found = tuple(Candidate.from_dict(c) for c in d["candidates"])
        return ChunkCandidates(found, int(d["updated_us"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"{key}: malformed chunk candidates ({exc})") from None


def effective_windows(
    spans: Iterable[tuple[int, int, str]], base: int | None = None
) -> list[tuple[int, int, str]]:
    """The windows that make a volume's history: ``spans`` (first, last, key) without
    those whose span lies inside another's (superseded by a consolidation not yet
    deleted) and, with a ``base``, without those ending at or before it. By offset."""
    ordered = sorted(spans, key=lambda s: (s[0], -s[1]))
    out: list[tuple[int, int, str]] = []
    reach = -1
    for first, last, key in ordered:
        if last <= reach or (base is not None and last <= base):
            reach = max(reach, last)
            continue
        reach = last
        out.append((first, last, key))
    return out


#: Tiers of restore points (``kcdp points``, ``kcdp_stored_bytes{tier}``).
TIER_ANY_POINT = "any-point"
TIER_CONSOLIDATED = "consolidated"
TIER_BOOKMARK = "bookmark"
TIER_BASE = "base"


def tier_of(m: Manifest, journal_from: int | None) -> str:
    """A window's tier: consolidated (no write log), a window kept intact for a bookmark
    (before the journal), or part of the any-point journal."""
    if m.merged is not None:
        return TIER_CONSOLIDATED
    if journal_from is not None and m.last_offset < journal_from:
        return TIER_BOOKMARK
    return TIER_ANY_POINT
