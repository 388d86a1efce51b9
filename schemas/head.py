"""The head document: a volume's newest durable window (docs/FORMAT.md "Head").

No later window's ``previous`` vouches for a volume's newest window; the head does. The
agent puts it after every manifest (:func:`put_head`); readers ask :func:`anchor_problem`
whether the newest stored window is the one the head names (or the window right after it,
a crash between the two puts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from connectors.errors import GapError, IntegrityError, ObjectNotFoundError, OwnershipError
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.chain import Broken
from schemas.document import canonical_digest, check_digest, load_document
from schemas.manifest import Manifest

FORMAT = "kcdp-head"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Head:
    """The newest window of ``volume`` and its manifest's canonical digest."""

    volume: str
    first_offset: int
    last_offset: int
    window_digest: str
    updated_us: int
    digest: str = field(init=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", canonical_digest(self._body()))

    @property
    def key(self) -> str:
        return keys.head_key(self.volume)

    @property
    def window(self) -> str:
        return f"window {self.first_offset}-{self.last_offset}"

    def _body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "volume": self.volume,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
            "window_digest": self.window_digest,
            "updated_us": self.updated_us,
        }

    def to_json(self) -> bytes:
        return orjson.dumps({**self._body(), "digest": self.digest})

    @classmethod
    def of(cls, m: Manifest, updated_us: int) -> Head:
        return cls(m.volume, m.first_offset, m.last_offset, m.digest, updated_us)

    @classmethod
    def from_json(cls, data: bytes, *, name: str = "head") -> Head:
        """Parse a head; :class:`IntegrityError` naming ``name`` if malformed or if it
        does not match its digest."""
        d = load_document(data, fmt=FORMAT, version=VERSION, what="head", name=name)
        check_digest(d, what="head", name=name)
        try:
            return cls(
                volume=str(d["volume"]),
                first_offset=int(d["first_offset"]),
                last_offset=int(d["last_offset"]),
                window_digest=str(d["window_digest"]),
                updated_us=int(d["updated_us"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{name}: malformed head ({type(exc).__name__}: {exc})") from None


def put_head(store: ObjectStore, m: Manifest, updated_us: int) -> Head:
    """Name ``m`` (durable already) the newest window of its volume."""
    head = Head.of(m, updated_us)
    store.put(head.key, head.to_json())
    return head


def load_head(store: ObjectStore, volume: str) -> Head | None:
    """The head of ``volume``; None when it has none; :class:`IntegrityError` if bad."""
    key = keys.head_key(volume)
    try:
        data = store.get(key)
    except ObjectNotFoundError:
        return None
    head = Head.from_json(data, name=key)
    if head.volume != volume:
        raise IntegrityError(f"{key}: holds the head of volume {head.volume!r}")
    return head


def check_still_newest(store: ObjectStore, volume: str, first_offset: int) -> None:
    """Raise :class:`OwnershipError` when the store holds a window of ``volume`` at or
    after ``first_offset`` (the head names one whose manifest is stored): another agent
    stored it since this one last did, so this one lost the volume's partition and must not
    put a window there (docs/FORMAT.md "Ordering invariants", step 2). A head that cannot
    be read, or that names a window whose manifest is missing (lost windows, reported by
    readers), does not refuse: the agent's next head replaces it."""
    try:
        head = load_head(store, volume)
    except IntegrityError:
        return
    if head is None or head.last_offset < first_offset:
        return
    key = keys.manifest_key(volume, head.first_offset, head.last_offset)
    try:
        store.stat(key)
    except ObjectNotFoundError:
        return
    raise OwnershipError(
        f"volume {volume}: another agent stored {head.window} ({key}) while this one was "
        f"about to store a window from offset {first_offset}: this worker lost the "
        "partition; restarted, it resumes after the store's newest window"
    )


def anchor_problem(head: Head | None, newest: Manifest, *, volume: str) -> Broken | None:
    """Why ``newest`` (the newest stored window of ``volume``) is not anchored by ``head``
    (docs/FORMAT.md "Head"); None when it is. The key at fault is the head's, or the
    manifest it names when that is missing."""
    window = f"window {newest.first_offset}-{newest.last_offset}"
    key = keys.head_key(volume)
    if head is None:
        if newest.version < 2:
            return None  # written before heads existed
        return Broken(
            GapError(f"{key} is missing: nothing vouches that {window} is the newest of {volume}"),
            key,
        )
    named = (head.first_offset, head.last_offset)
    if named == (newest.first_offset, newest.last_offset):
        if head.window_digest == newest.digest:
            return None
        return Broken(
            IntegrityError(
                f"{key}: names {head.window} with another manifest digest than {newest.key} "
                "(the head or the manifest was altered or replaced)"
            ),
            key,
        )
    if newest.previous == named:
        if newest.previous_digest == head.window_digest:
            return None  # a crash between putting the manifest and the head
        return Broken(
            IntegrityError(
                f"{key}: names {head.window} with another manifest digest than {window} "
                "records for it"
            ),
            key,
        )
    if head.last_offset > newest.last_offset:
        missing = keys.manifest_key(volume, *named)
        return Broken(
            GapError(
                f"{key} names {head.window}, whose manifest {missing} is missing (the newest "
                f"stored window is {window}: newer windows were lost)"
            ),
            missing,
        )
    return Broken(
        IntegrityError(
            f"{key}: names {head.window}, older than the window before the newest stored "
            f"{window} (the head is stale or was rolled back)"
        ),
        key,
    )
