"""A volume's timeline as the object store records it.

The catalog lists window keys (names only), checkpoint offsets and gap records when it is
built, and loads manifests lazily (in parallel when many are needed). It answers: which
window holds point N, where bookmarks are, which offset a time maps to (manifests' times,
then the window's write log: the last event with ``timestamp_us ≤ T``, times clamped to be
non-decreasing as the window policy does), and the oldest / newest restorable point.

It also answers what a point after a window's end stands on (:meth:`Catalog.check_after`):
the next stored window must follow that window, or it must be the newest and anchored by
the volume's head (docs/FORMAT.md "Head"), so a point inside a deleted window is never
taken for the end of the window before it, and ``--latest`` (:meth:`Catalog.latest`) is
never silently an older point.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from connectors.errors import IntegrityError, NotRestorableError
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.chain import Broken, check_link
from schemas.checkpoint import Checkpoint, list_checkpoints, load_checkpoint
from schemas.gaps import Gap, list_gaps
from schemas.head import Head, anchor_problem, load_head
from schemas.manifest import (
    Bookmark,
    Manifest,
    get_verified,
    list_window_keys,
    load_manifest,
)
from schemas.retention import Base, RetentionState, effective_windows, load_retention
from schemas.writelog import read_log


@dataclass(frozen=True, slots=True)
class WindowKey:
    """A window known from its manifest key: offsets of its first and last event."""

    first: int
    last: int
    key: str


class Catalog:
    """The windows, checkpoints and gaps of ``volume`` in ``store``.

    ``workers`` (default 8) bounds parallel manifest downloads.
    """

    def __init__(self, store: ObjectStore, volume: str, *, workers: int = 8) -> None:
        self.store = store
        self.volume = keys.check_name(volume)
        self.workers = max(1, workers)
        self.retention: RetentionState | None = load_retention(store, volume)
        self.base: Base | None = self.retention.base if self.retention else None
        floor = None if self.base is None else self.base.offset
        spans = effective_windows(list_window_keys(store, volume), floor)
        self.windows = [WindowKey(f, last, k) for f, last, k in spans]
        self._firsts = [w.first for w in self.windows]
        leaving = {c.key for c in self.retention.candidates} if self.retention else set()
        self.checkpoints: list[int] = [
            c
            for c in list_checkpoints(store, volume)
            if (floor is None or c >= floor) and keys.checkpoint_key(volume, c) not in leaving
        ]
        self.gaps: list[Gap] = list_gaps(store, volume)
        self._manifests: dict[int, Manifest] = {}
        self._head: list[Head | None] = []  # [head] once loaded
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.windows)

    # -- manifests ---------------------------------------------------------------------
    def manifest(self, index: int) -> Manifest:
        """The manifest of window ``index`` (loaded once; GapError/IntegrityError naming it)."""
        with self._lock:
            found = self._manifests.get(index)
        if found is not None:
            return found
        window = self.windows[index]
        m = load_manifest(self.store, window.key)
        if m.volume != self.volume:
            raise IntegrityError(f"{window.key}: manifest of volume {m.volume!r}")
        with self._lock:
            self._manifests[index] = m
        return m

    def manifests(self, indices: Iterable[int] | None = None) -> list[Manifest]:
        """Manifests of ``indices`` (default: every window), loaded in parallel, in order."""
        wanted = list(range(len(self.windows)) if indices is None else indices)
        missing = [i for i in wanted if i not in self._manifests]
        if len(missing) > 1:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                list(pool.map(self.manifest, missing))
        return [self.manifest(i) for i in wanted]

    def checkpoint(self, offset: int) -> Checkpoint:
        return load_checkpoint(self.store, self.volume, offset)

    def head(self) -> Head | None:
        """The volume's head (loaded once; None: it has none; IntegrityError if bad)."""
        if not self._head:
            self._head.append(load_head(self.store, self.volume))
        return self._head[0]

    def anchor_problem(self) -> Broken | None:
        """Why the newest stored window is not anchored by the head; None when it is."""
        self.require_windows()
        try:
            head = self.head()
        except IntegrityError as exc:
            return Broken(exc, keys.head_key(self.volume))
        return anchor_problem(head, self.manifest(len(self.windows) - 1), volume=self.volume)

    def history_problem(self) -> str | None:
        """:meth:`anchor_problem` as text, for reports (None: anchored, or no window)."""
        broken = self.anchor_problem() if self.windows else None
        return None if broken is None else f"{broken.key}: {broken.error.message}"

    def check_after(self, index: int, offset: int) -> None:
        """Check what point ``offset``, after the end of window ``index``, stands on: the
        next stored window follows it (GapError/IntegrityError otherwise), or it is the
        newest and anchored (NotRestorableError otherwise)."""
        if index + 1 < len(self.windows):
            check_link(self.manifest(index), self.manifest(index + 1))
            return
        broken = self.anchor_problem()
        if broken is not None:
            w = self.windows[index]
            raise NotRestorableError(
                f"point {offset} of {self.volume} lies after window {w.first}-{w.last}, "
                f"which cannot be verified as the newest: {broken.error.message}"
            )

    # -- lookups -----------------------------------------------------------------------
    def require_windows(self) -> None:
        if not self.windows:
            raise NotRestorableError(
                f"volume {self.volume} has no windows in {self.store.url} "
                "(nothing was protected yet, or the name or store is wrong)"
            )

    def index_for(self, offset: int) -> int | None:
        """Index of the last window whose first offset is ≤ ``offset`` (None: none is)."""
        i = bisect.bisect_right(self._firsts, offset) - 1
        return i if i >= 0 else None

    def bookmarks(self) -> list[Bookmark]:
        """Every bookmark of the volume, by offset."""
        return sorted((b for m in self.manifests() for b in m.bookmarks), key=lambda b: b.offset)

    def find_bookmark(self, name: str) -> Bookmark:
        """The newest bookmark called ``name``."""
        found = [b for b in self.bookmarks() if b.name == name]
        if not found:
            raise NotRestorableError(f"volume {self.volume} has no bookmark named {name!r}")
        return found[-1]

    def offset_at_time(self, time_us: int) -> int:
        """The offset of the last event of the volume with (clamped) time ≤ ``time_us``."""
        self.require_windows()
        manifests = self.manifests()
        firsts = [m.first_time_us for m in manifests]
        i = bisect.bisect_right(firsts, time_us) - 1
        if i < 0:
            if self.base is not None:
                raise self.dropped(f"time {time_us} µs", -1)
            raise NotRestorableError(
                f"volume {self.volume} has no event at or before time {time_us} µs "
                f"(its first event is at {firsts[0]} µs)"
            )
        m = manifests[i]
        if time_us >= m.last_time_us:
            return m.last_offset
        if m.writelog is None:
            raise self.dropped(f"time {time_us} µs", i)
        data = get_verified(self.store, m.writelog)
        best = m.first_offset
        clamp = 0
        for rec in read_log(data, name=m.writelog.key):
            clamp = max(clamp, rec.timestamp_us)
            if clamp > time_us:
                break
            best = rec.kafka_offset
        return best

    def edge_before(self, index: int) -> int | None:
        """The kept edge before window ``index``: the end of the window before it, the
        base, or None (the implicit empty image before the volume's first window)."""
        if index > 0:
            return self.windows[index - 1].last
        return None if self.base is None else self.base.offset

    def dropped(self, what: str, index: int) -> NotRestorableError:
        """The refusal of a point the retention policy dropped: ``what`` lies before the
        base (``index`` -1) or strictly inside consolidated window ``index``."""
        before = self.edge_before(index) if index >= 0 else None
        after = self.windows[index].last if index >= 0 else self.base and self.base.offset
        kept = [f"{label} {p}" for label, p in (("before it:", before), ("after it:", after)) if p]
        where = (
            "before the oldest kept point"
            if index < 0
            else (
                f"inside consolidated window {self.windows[index].first}-{self.windows[index].last}"
            )
        )
        return NotRestorableError(
            f"{what} of {self.volume} was dropped by the retention policy ({where}); "
            f"nearest kept points {', '.join(kept) or 'none'}"
        )

    def gaps_between(self, low: int, high: int) -> list[Gap]:
        """Gap records with ``low < at_offset ≤ high``."""
        return [g for g in self.gaps if low < g.at_offset <= high]

    def latest(self) -> int:
        """The newest restorable point, only while the newest window is anchored."""
        span = self.restorable_span()
        if span is None:
            raise NotRestorableError(f"volume {self.volume} has no restorable point")
        broken = self.anchor_problem()
        if broken is not None:
            raise NotRestorableError(
                f"the newest point of {self.volume} cannot be established: {broken.error.message}"
            )
        return span[1]

    def restorable_span(self) -> tuple[int, int] | None:
        """(oldest, newest) restorable point recorded in the store, or None."""
        self.require_windows()
        oldest = next(
            (m.restorable_from for m in self.manifests() if m.restorable_from is not None), None
        )
        if self.base is not None and self.base.consistent:
            oldest = self.base.offset
        newest = next((m.last_offset for m in reversed(self.manifests()) if m.consistent), None)
        if oldest is None or newest is None:
            return None
        return oldest, newest

    def check_point(self, offset: int) -> tuple[int, Manifest]:
        """(window index, manifest) of point ``offset``, if the history is consistent there
        and, for a point after the window's end, :meth:`check_after` holds. A point the
        retention policy dropped is refused naming the nearest kept points (the base
        point itself is the planner's: it has no window)."""
        self.require_windows()
        if self.base is not None and offset < self.base.offset:
            raise self.dropped(f"point {offset}", -1)
        index = self.index_for(offset)
        if index is None:
            raise NotRestorableError(
                f"volume {self.volume} has no event at or before offset {offset} "
                f"(its first window starts at {self.windows[0].first})"
            )
        m = self.manifest(index)
        newest = self.windows[-1].last
        if offset > newest:
            raise NotRestorableError(
                f"offset {offset} is past the newest window of {self.volume} in the store "
                f"(it ends at {newest}); use --latest or a smaller offset"
            )
        if offset >= m.last_offset:
            ok = m.consistent
        elif m.merged is not None:
            raise self.dropped(f"point {offset}", index)
        else:
            ok = m.restorable_from is not None and offset >= m.restorable_from
        if not ok:
            raise NotRestorableError(
                f"point {offset} of {self.volume} is not consistent (window "
                f"{m.first_offset}-{m.last_offset}: restorable from {m.restorable_from}, "
                f"consistent end: {m.consistent}); a gap or an unfinished baseline precedes it"
            )
        for g in self.gaps:
            if (g.after_offset if g.after_offset is not None else -1) < offset < g.at_offset:
                raise NotRestorableError(
                    f"point {offset} of {self.volume} lies between the last event before a "
                    f"{g.kind} gap ({g.after_offset}) and the gap at offset {g.at_offset}: "
                    "the records lost there may precede it"
                )
        if offset > m.last_offset:
            self.check_after(index, offset)
        return index, m


def group_volumes(store: ObjectStore, group: str) -> list[str]:
    """Volumes of consistency group ``group``, from partition markers (else every volume's
    manifests), confirmed by the ``group`` of each volume's newest manifest."""
    keys.check_name(group, "group")
    candidates = {info.key.rsplit("/", 1)[-1] for info in store.list(f"{keys.LAYOUT}/partitions/")}
    if not candidates:
        prefix = keys.volumes_prefix()
        candidates = {
            info.key[len(prefix) :].split("/", 1)[0]
            for info in store.list(prefix)
            if "/manifests/" in info.key
        }
    found = []
    for volume in sorted(candidates):
        windows = list_window_keys(store, volume)
        if windows and load_manifest(store, windows[-1][2]).group == group:
            found.append(volume)
    if not found:
        raise NotRestorableError(f"no volume of group {group!r} in {store.url}")
    return found
