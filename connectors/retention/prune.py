"""``kcdp prune``: apply a retention policy to one volume (docs/FORMAT.md "Retention").

Order (the prune's ordering invariants): consolidated windows (objects, then manifest),
then the base checkpoint (chunks, then document), then ``retention.json`` naming the base
and marking what is no longer referenced, then deletion of what was marked at least the
grace period ago, then the store's chunk collection. Every state in between restores every
kept point; a prune killed anywhere is finished by the next one.

A run reads the manifests of the windows older than the journal (consolidated windows,
bounded by the policy, and those that left the journal since the last prune), finds the
journal's new start by bisection over window times, and lists the volume's keys once.
"""

from __future__ import annotations

import bisect
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from connectors.errors import IntegrityError
from connectors.retention.collect import StepHook, collect_chunks, settle, volume_garbage
from connectors.retention.compose import consolidate
from connectors.retention.policy import RetentionPolicy
from connectors.retention.rebase import empty_checkpoint, roll_forward
from connectors.retention.report import PruneReport
from connectors.retention.select import Selection, WindowFacts, select
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.chain import check_link
from schemas.checkpoint import Checkpoint, check_pairing, list_checkpoints, load_checkpoint
from schemas.manifest import Manifest, WindowId, list_window_keys, load_manifest
from schemas.retention import Base, RetentionState, effective_windows, load_retention

log = logging.getLogger("kcdp.retention")


def _no_step(name: str) -> None:
    """The default step hook: nothing (tests inject faults here)."""


class _Windows:
    """The effective windows of a volume, manifests loaded on demand (once)."""

    def __init__(self, store: ObjectStore, spans: list[tuple[int, int, str]]) -> None:
        self.store = store
        self.spans = spans
        self._loaded: dict[int, Manifest] = {}

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, i: int) -> Manifest:
        m = self._loaded.get(i)
        if m is None:
            m = self._loaded[i] = load_manifest(self.store, self.spans[i][2])
        return m

    def load(self, indices: range) -> None:
        todo = [i for i in indices if i not in self._loaded]
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = pool.map(lambda i: load_manifest(self.store, self.spans[i][2]), todo)
            for i, m in zip(todo, found, strict=True):
                self._loaded[i] = m


def prune_volume(
    store: ObjectStore,
    volume: str,
    policy: RetentionPolicy,
    *,
    workdir: Path,
    dry_run: bool = False,
    now_us: int | None = None,
    step: StepHook = _no_step,
) -> PruneReport:
    """Apply ``policy`` to ``volume`` and return what was (``dry_run``: would be) done."""
    now = time.time_ns() // 1000 if now_us is None else now_us
    state = load_retention(store, volume) or RetentionState(volume)
    base = state.base
    spans = effective_windows(
        list_window_keys(store, volume), None if base is None else base.offset
    )
    report = PruneReport(volume=volume, dry_run=dry_run, windows_before=len(spans))
    if not spans:
        return report
    ws = _Windows(store, spans)
    n = len(ws)
    newest = ws[n - 1]
    ref = newest.last_time_us
    cut = _journal_cut(ws, state, policy, ref)
    ws.load(range(cut))
    listing = list(store.list(keys.volume_prefix(volume)))
    sizes = {i.key: i.size for i in listing}
    cut = _fit_max_bytes(ws, cut, policy, sizes, report)
    facts = [_facts(ws[i]) for i in range(cut)]
    base_facts = None
    if base is not None:
        base_facts = WindowFacts(
            base.offset, base.offset, base.time_us, base.consistent, (), merged=True
        )
    cps = list_checkpoints(store, volume)
    ends = {s[1]: i for i, s in enumerate(spans)}
    anchors = frozenset(ends[c] for c in cps[-1:] if c in ends)  # the newest checkpoint's edge
    sel = select(facts, n, cut, policy, ref, base_facts, anchors) if not policy.empty else None
    if sel is not None and _holds_base(ws, sel, policy, sizes):
        sel = select(facts, n, cut, policy, ref, base_facts, anchors, hold=True)
    report.describe(ws, sel, cut, ref, sizes)
    if dry_run or sel is None:
        return report
    new_at = _consolidate(store, ws, sel, workdir, step)
    new_base = _rebase(store, volume, ws, sel, new_at, base, workdir, step)
    referenced, kept_cps = _references(store, volume, ws, sel, new_at, new_base, cut)
    garbage = volume_garbage(
        listing,
        volume=volume,
        referenced=referenced,
        kept_checkpoints=kept_cps,
        base_offset=None if new_base is None else new_base.offset,
        journal_from=ws.spans[cut][0],
    )
    grace = int(policy.grace * 1e6)
    settled = settle(store, state.candidates, garbage, now_us=now, grace_us=grace, step=step)
    step("retention")
    store.put(
        state.key,
        replace(
            state,
            base=new_base,
            journal_from=ws.spans[cut][0],
            candidates=settled.candidates,
            policy=policy.to_dict(),
            updated_us=now,
        ).to_json(),
    )
    chunks = collect_chunks(store, now_us=now, grace_us=grace, step=step)
    report.finish(settled, chunks, new_base)
    return report


def _journal_cut(ws: _Windows, state: RetentionState, policy: RetentionPolicy, ref: int) -> int:
    """Index of the oldest window of the any-point journal (the newest without one)."""
    n = len(ws)
    if policy.keep_within is None:
        return n - 1
    cutoff = ref - int(policy.keep_within * 1e6)
    lo = 0
    if state.journal_from is not None:
        lo = bisect.bisect_left([s[0] for s in ws.spans], state.journal_from)
    lo, hi = min(lo, n - 1), n - 1
    while lo < hi:  # window times never decrease: bisect on last_time_us
        mid = (lo + hi) // 2
        if ws[mid].last_time_us >= cutoff:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _fit_max_bytes(
    ws: _Windows, cut: int, policy: RetentionPolicy, sizes: dict[str, int], report: PruneReport
) -> int:
    """Shorten the journal from its oldest window until the estimate fits ``max_bytes``
    (each window leaving it frees its write log), loudly."""
    if policy.max_bytes is None:
        return cut
    total = _window_bytes(ws, sizes)
    over = total - policy.max_bytes
    start = cut
    while over > 0 and cut < len(ws) - 1:
        m = ws[cut]
        over -= m.writelog.size if m.writelog else 0
        cut += 1
    if cut > start:
        report.shortened = True
        log.warning(
            "volume %s: stored window bytes %d exceed max_bytes %d: the any-point journal "
            "is shortened by %d window(s), its oldest point is now offset %d",
            ws[0].volume,
            total,
            policy.max_bytes,
            cut - start,
            ws.spans[cut][0],
        )
    return cut


def _window_bytes(ws: _Windows, sizes: dict[str, int]) -> int:
    """The volume's stored window object bytes (its ``data/`` keys)."""
    data = f"{keys.volume_prefix(ws[0].volume)}data/"
    return sum(size for key, size in sizes.items() if key.startswith(data))


def _holds_base(
    ws: _Windows, sel: Selection, policy: RetentionPolicy, sizes: dict[str, int]
) -> bool:
    """Whether the base stays put (``base_slack``): the forward increments of the windows
    up to the new base edge total at most the slack, and the store is within max_bytes."""
    if sel.base is None or policy.base_slack <= 0:
        return False
    if policy.max_bytes is not None and _window_bytes(ws, sizes) > policy.max_bytes:
        return False
    ahead = sum(ws[i].forward.size for i in range(sel.base + 1))
    return ahead <= policy.base_slack * ws[sel.base].volume_size


def _facts(m: Manifest) -> WindowFacts:
    return WindowFacts(
        first=m.first_offset,
        last=m.last_offset,
        last_time_us=m.last_time_us,
        consistent=m.consistent,
        bookmark_times=tuple(b.time_us for b in m.bookmarks),
        merged=m.merged is not None,
    )


def _consolidate(
    store: ObjectStore, ws: _Windows, sel: Selection, workdir: Path, step: StepHook
) -> dict[int, Manifest]:
    """Store each run's consolidated window, oldest first; index of its last member ->
    its manifest (each follows the window stored before it, consolidated or not)."""
    new_at: dict[int, Manifest] = {}
    for lo, hi in sel.groups:
        members = [ws[i] for i in range(lo, hi + 1)]
        previous: Manifest | None = new_at.get(lo - 1) or (ws[lo - 1] if lo > 0 else None)
        for prev, m in zip([previous, *members], members, strict=False):
            if prev is not None:
                check_link(prev, m)
        step("consolidate")
        merged = consolidate(store, members, previous, workdir)
        step("manifest")
        store.put(merged.key, merged.to_json())
        new_at[hi] = merged
    return new_at


def _rebase(
    store: ObjectStore,
    volume: str,
    ws: _Windows,
    sel: Selection,
    new_at: dict[int, Manifest],
    base: Base | None,
    workdir: Path,
    step: StepHook,
) -> Base | None:
    """The base after this prune, its checkpoint stored first (found or rolled forward)."""
    if sel.base is None:
        return base
    b = sel.base
    edge = new_at.get(b) or ws[b]
    after = new_at.get(_group_end(sel, b + 1)) or ws[b + 1]
    if after.previous is None:
        raise IntegrityError(f"{after.key}: names no previous window, but {edge.key} is before it")
    link = WindowId(after.previous[0], after.previous[1], after.previous_digest or "")
    if base is not None and base.offset == edge.last_offset:
        return replace(base, link=link)
    cps = [c for c in list_checkpoints(store, volume) if c <= edge.last_offset]
    cp = _paired(store, volume, cps[-1], edge) if cps and cps[-1] == edge.last_offset else None
    if cp is None:
        start, first = _roll_start(store, volume, ws, cps, base, b)
        windows = [ws[i] for i in range(first, b + 1)]
        step("base-checkpoint")
        cp = roll_forward(store, start, windows, edge, workdir)
    return Base(
        offset=edge.last_offset,
        checkpoint_digest=cp.digest,
        link=link,
        consistent=edge.consistent,
        time_us=edge.last_time_us,
    )


def _group_end(sel: Selection, lo: int) -> int:
    """The last index of the run that starts at ``lo`` (``lo`` itself when none does)."""
    return next((hi for g_lo, hi in sel.groups if g_lo == lo), lo)


def _paired(store: ObjectStore, volume: str, offset: int, m: Manifest) -> Checkpoint | None:
    try:
        cp = load_checkpoint(store, volume, offset)
        check_pairing(cp, m)
    except IntegrityError:
        return None
    return cp


def _roll_start(
    store: ObjectStore, volume: str, ws: _Windows, cps: list[int], base: Base | None, b: int
) -> tuple[Checkpoint, int]:
    """The checkpoint to roll the base forward from and the index of the first window to
    apply: the newest usable checkpoint before it, the old base, or the empty image."""
    ends = {ws.spans[i][1]: i for i in range(b + 1)}
    for offset in reversed(cps):
        i = ends.get(offset)
        if i is not None and (cp := _paired(store, volume, offset, ws[i])) is not None:
            return cp, i + 1
    if base is not None:
        cp = load_checkpoint(store, volume, base.offset)
        if cp.digest != base.checkpoint_digest:
            raise IntegrityError(f"{cp.key}: is not the base checkpoint retention.json names")
        return cp, 0
    return empty_checkpoint(volume, ws[b].volume_size), 0


def _references(
    store: ObjectStore,
    volume: str,
    ws: _Windows,
    sel: Selection,
    new_at: dict[int, Manifest],
    base: Base | None,
    cut: int,
) -> tuple[set[str], set[int]]:
    """Keys the new history references before the journal (manifests and window objects;
    the journal is left alone as a whole), and the checkpoint offsets it keeps."""
    dropped = {i for lo, hi in sel.groups for i in range(lo, hi + 1)}
    floor = -1 if sel.base is None else sel.base
    referenced: set[str] = set()
    for i in range(floor + 1, cut):
        if i in dropped and i not in new_at:
            continue
        m = new_at.get(i) or ws[i]
        referenced.add(m.key)
        referenced.update(ref.key for ref in m.objects())
    offsets = list_checkpoints(store, volume)
    journal_edge = ws.spans[cut - 1][1] if cut > 0 else -1
    kept = {c for c in offsets if c >= journal_edge}
    if offsets:
        kept.add(offsets[-1])
    if base is not None:
        kept.add(base.offset)
    return referenced, kept
