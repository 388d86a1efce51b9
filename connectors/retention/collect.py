"""Deletion after a grace period (docs/FORMAT.md "Retention", steps 4-5).

A prune computes the keys that should be deletion candidates *now* (:func:`volume_garbage`:
objects no effective manifest references, superseded manifests, checkpoints and gap records
it dropped); :func:`settle` marks the new ones, un-marks those that are kept again or were
written again, and deletes those marked at least ``grace`` ago whose modification time is
still the one marked. :func:`collect_chunks` does the same for checkpoint chunks over the
whole store (a chunk may be shared by volumes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from connectors.errors import ObjectNotFoundError
from connectors.store.base import ObjectInfo, ObjectStore
from schemas import keys
from schemas.checkpoint import Checkpoint
from schemas.retention import Candidate, ChunkCandidates, load_chunk_candidates

log = logging.getLogger("kcdp.retention")

#: Called with a step's name before every change a prune makes to the store.
StepHook = Callable[[str], None]
#: Due candidates stat'ed and deleted at a time (each is one or two store requests).
DELETE_WORKERS = 8


@dataclass(slots=True)
class Settled:
    """What :func:`settle` did: the candidates left, and what it deleted."""

    candidates: tuple[Candidate, ...] = ()
    marked: int = 0
    deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0


def settle(
    store: ObjectStore,
    candidates: Iterable[Candidate],
    garbage: Mapping[str, ObjectInfo],
    *,
    now_us: int,
    grace_us: int,
    step: StepHook,
    delete: bool = True,
) -> Settled:
    """Bring the candidate list to ``garbage`` (key -> listing of what should be deleted):
    delete the due ones (marked ≥ ``grace_us`` ago, not written since: each is stat'ed
    just before its deletion, up to :data:`DELETE_WORKERS` at a time), keep the others,
    mark the new ones, and those marked after ``now_us`` (a clock ahead), at ``now_us``."""
    out = Settled()
    left: dict[str, Candidate] = {}
    due: list[Candidate] = []
    ahead = 0
    for c in candidates:
        info = garbage.get(c.key)
        if info is None or info.modified_us != c.modified_us:
            continue  # kept again, gone, or written again: re-marked below if still garbage
        if c.marked_us > now_us:  # marked by a clock ahead of this one: the grace restarts
            left[c.key] = Candidate(c.key, now_us, c.modified_us)
            ahead += 1
        elif delete and now_us - c.marked_us >= grace_us:
            due.append(c)
        else:
            left[c.key] = c
    if ahead:
        log.warning(
            "%d deletion candidate(s) were marked after this prune's clock (it stepped back, "
            "or an earlier prune ran on a host whose clock was ahead): marked again now",
            ahead,
        )
    lock = threading.Lock()

    def remove(c: Candidate) -> int | None:
        """The bytes freed by deleting ``c`` (None: gone, or written again: kept)."""
        try:
            current = store.stat(c.key)
        except ObjectNotFoundError:
            return None
        if current.modified_us != c.modified_us:
            return None
        with lock:  # a step hook (a crash test's) sees one step at a time
            step("delete")
        store.delete(c.key)
        return current.size

    with ThreadPoolExecutor(max_workers=DELETE_WORKERS, thread_name_prefix="kcdp-delete") as pool:
        for c, freed in zip(due, pool.map(remove, due), strict=True):
            if freed is not None:
                out.deleted.append(c.key)
                out.bytes_freed += freed
    deleted = set(out.deleted)
    for key, info in garbage.items():
        if key not in left and key not in deleted:
            left[key] = Candidate(key, now_us, info.modified_us)
            out.marked += 1
    out.candidates = tuple(sorted(left.values(), key=lambda c: c.key))
    return out


def volume_garbage(
    listing: Iterable[ObjectInfo],
    *,
    volume: str,
    referenced: set[str],
    kept_checkpoints: set[int],
    base_offset: int | None,
    journal_from: int,
) -> dict[str, ObjectInfo]:
    """The keys of ``volume`` (from ``listing`` of its prefix) that should be deleted:
    window objects and manifests not in ``referenced`` (leaving alone everything from
    ``journal_from`` on: the any-point journal, which a prune never changes, and windows a
    worker may be storing), checkpoints not kept, gap records at or before the base."""
    out: dict[str, ObjectInfo] = {}
    manifests = keys.manifests_prefix(volume)
    data = f"{keys.volume_prefix(volume)}data/"
    for info in listing:
        key = info.key
        if key.startswith((manifests, data)):
            span = _span(key)
            if span is None or span[0] >= journal_from or key in referenced:
                continue
            out[key] = info
        elif key.startswith(keys.checkpoints_prefix(volume)):
            if _offset(key) not in kept_checkpoints:
                out[key] = info
        elif key.startswith(keys.gaps_prefix(volume)):
            at = _offset(key)
            if base_offset is not None and at is not None and at <= base_offset:
                out[key] = info
    return out


def _span(key: str) -> tuple[int, int] | None:
    name = key.rsplit("/", 1)[-1].split(".", 1)[0]
    first, sep, last = name.partition("-")
    if not sep or not first.isdigit() or not last.isdigit():
        return None
    return int(first), int(last)


def _offset(key: str) -> int | None:
    try:
        return keys.parse_offset_key(key)
    except ValueError:
        return None


def collect_chunks(
    store: ObjectStore, *, now_us: int, grace_us: int, step: StepHook, delete: bool = True
) -> Settled:
    """Chunk garbage collection over the whole store: chunks no stored checkpoint of any
    volume references become candidates, and due ones are deleted (see :func:`settle`).
    The references are listed before the chunks, so a chunk uploaded for a checkpoint
    not yet stored is at most marked, never deleted (its mark is younger than grace)."""
    referenced: set[str] = set()
    for info in store.list(keys.volumes_prefix()):
        if "/checkpoints/" not in info.key or not info.key.endswith(".json"):
            continue
        try:
            cp = Checkpoint.from_json(store.get(info.key), name=info.key)
        except ObjectNotFoundError:
            continue
        referenced.update(keys.chunk_key(c) for c in cp.chunks if c is not None)
    garbage = {i.key: i for i in store.list(keys.chunks_prefix()) if i.key not in referenced}
    doc = load_chunk_candidates(store)
    settled = settle(
        store,
        doc.candidates,
        garbage,
        now_us=now_us,
        grace_us=grace_us,
        step=step,
        delete=delete,
    )
    if delete and (settled.candidates != doc.candidates or settled.deleted):
        step("chunk-candidates")
        store.put(
            keys.chunk_candidates_key(), ChunkCandidates(settled.candidates, now_us).to_json()
        )
    if settled.deleted:
        log.info("deleted %d unreferenced checkpoint chunk(s)", len(settled.deleted))
    return settled
