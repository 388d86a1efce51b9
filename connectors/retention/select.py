"""Which windows and edges a policy keeps: a pure function of window facts.

Edges are indices into the volume's effective windows: edge ``i`` is the end of window
``i``; edge ``-1`` the start of window 0 (the base, or the empty image before the first
window). The windows from ``cut`` on are the any-point journal. docs/FORMAT.md "Retention"
states the rules.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from connectors.retention.policy import RetentionPolicy

HOUR_US = 3600 * 1_000_000
DAY_US = 24 * HOUR_US


@dataclass(frozen=True, slots=True)
class WindowFacts:
    """What selection needs of a window older than the journal."""

    first: int
    last: int
    last_time_us: int
    consistent: bool
    bookmark_times: tuple[int, ...]
    merged: bool


@dataclass(frozen=True, slots=True)
class Selection:
    """The outcome: kept edges (ascending), windows kept intact, runs of windows to
    consolidate (inclusive index ranges), and the new base edge (None: nothing before
    window 0 changes)."""

    edges: tuple[int, ...]
    intact: frozenset[int]
    groups: tuple[tuple[int, int], ...]
    base: int | None

    def dropped(self, n: int) -> int:
        """How many of ``n`` windows disappear (consolidated into others or before the base)."""
        gone = sum(hi - lo for lo, hi in self.groups)
        return gone + (0 if self.base is None else self.base + 1)


def _hour(t: int) -> int:
    return t // HOUR_US


def _day(t: int) -> int:
    return t // DAY_US


def _week(t: int) -> int:
    return (t // DAY_US + 3) // 7  # ISO weeks: 1970-01-01 was a Thursday


def _month(t: int) -> int:
    d = datetime.datetime.fromtimestamp(t / 1e6, tz=datetime.UTC)
    return d.year * 12 + d.month - 1


TIERS: tuple[tuple[str, Callable[[int], int]], ...] = (
    ("keep_hourly", _hour),
    ("keep_daily", _day),
    ("keep_weekly", _week),
    ("keep_monthly", _month),
)


def tier_edges(
    facts: Sequence[WindowFacts],
    policy: RetentionPolicy,
    ref_us: int,
    base: WindowFacts | None = None,
) -> dict[int, str]:
    """Edge index -> the tier that keeps it: in each of the N buckets up to the
    reference time, the newest consistent window end (``base``: the edge before window
    0, index -1, competes too)."""
    out: dict[int, str] = {}
    indexed = [*([(-1, base)] if base is not None else []), *enumerate(facts)]
    for name, bucket in TIERS:
        n = getattr(policy, name)
        if not n:
            continue
        horizon = bucket(ref_us) - n + 1
        newest: dict[int, int] = {}
        for i, f in indexed:
            b = bucket(f.last_time_us)
            if f.consistent and b >= horizon:
                newest[b] = i
        for i in newest.values():
            out.setdefault(i, name)
    return out


def select(
    facts: Sequence[WindowFacts],
    n: int,
    cut: int,
    policy: RetentionPolicy,
    ref_us: int,
    base: WindowFacts | None = None,
    anchors: frozenset[int] = frozenset(),
    hold: bool = False,
) -> Selection:
    """Apply ``policy`` to ``n`` windows of which ``facts`` are the first ``cut`` (the
    windows before the journal); windows ``cut..n-1`` are kept intact. ``base``: the
    current base edge's facts (it stays the base while a tier keeps it). ``anchors``:
    edges kept whatever the policy (the newest checkpoint's, for backward restores).
    ``hold``: the base stays where it is, every edge before the oldest kept one is kept
    too (``base_slack``)."""
    if policy.empty or n == 0:
        return Selection(tuple(range(-1, n)), frozenset(range(n)), (), None)
    cut = min(max(cut, 0), n - 1)  # the newest window is always intact
    intact = set(range(cut, n))
    if policy.keep_bookmarks is not None:
        young = ref_us - int(policy.keep_bookmarks * 1e6)
        intact |= {
            i for i, f in enumerate(facts[:cut]) if any(t >= young for t in f.bookmark_times)
        }
    tiers = tier_edges(facts[:cut], policy, ref_us, base)
    ordered = sorted(set(intact) | {i - 1 for i in intact} | set(tiers) | set(anchors))
    if hold:
        ordered = sorted({*range(-1, ordered[0]), *ordered})
    new_base = ordered[0] if ordered[0] >= 0 else None
    groups: list[tuple[int, int]] = []
    for lo_edge, hi_edge in itertools.pairwise(ordered):
        lo, hi = lo_edge + 1, hi_edge
        if lo == hi and (lo in intact or facts[lo].merged):
            continue  # intact, or consolidated already
        groups.append((lo, hi))
    return Selection(tuple(ordered), frozenset(intact), tuple(groups), new_base)
