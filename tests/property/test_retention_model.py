"""Property: under a random retention policy, pruned at random moments while the worker
appends windows (and restarts), every point the policy promises restores equal to the
reference model in both directions, every other point restores exactly or is refused
(never wrong bytes), ``verify --read-data`` stays clean, stored bytes fall, and after two
prunes past the grace period no unreferenced object is left.

Events carry synthetic times spanning days (the prune's clock is the same synthetic time).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connectors.restore.verify import verify_volume
from connectors.retention.policy import RetentionPolicy
from connectors.retention.prune import prune_volume
from connectors.store import MemoryStore
from tests.retention_support import (
    HOUR_US,
    Partition,
    check_points,
    promised_points,
    unreferenced,
)

GRACE_S = 2 * 3600.0

policies = st.builds(
    RetentionPolicy,
    keep_within=st.sampled_from([None, 2 * 3600.0, 6 * 3600.0, 12 * 3600.0]),
    keep_hourly=st.sampled_from([None, 0, 3, 8]),
    keep_daily=st.sampled_from([None, 1, 3]),
    keep_weekly=st.sampled_from([None, 1]),
    keep_bookmarks=st.sampled_from([None, 3 * 3600.0, 24 * 3600.0]),
    grace=st.just(GRACE_S),
    base_slack=st.sampled_from([0.0, 0.25, 4.0]),
    unsafe_grace=st.just(True),
)


def _stored_bytes(store: MemoryStore) -> int:
    return sum(info.size for info in store.list(""))


@settings(
    max_examples=7,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(  # the prune clock steps back between rounds: marks ahead of it restart their grace
    seed=2670,
    policy=RetentionPolicy(
        keep_bookmarks=3 * 3600.0, grace=GRACE_S, base_slack=0.0, unsafe_grace=True
    ),
    count=3,
    every=2,
    rounds=[(65, False), (20, False), (21, False), (20, False)],
)
@given(
    seed=st.integers(0, 2**32),
    policy=policies,
    count=st.integers(2, 5),
    every=st.integers(2, 6),
    rounds=st.lists(st.tuples(st.integers(20, 70), st.booleans()), min_size=2, max_size=4),
)
def test_kept_points_restore_and_dropped_points_are_refused(
    seed: int,
    policy: RetentionPolicy,
    count: int,
    every: int,
    rounds: list[tuple[int, bool]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("retention")
    rng = random.Random(seed)
    store = MemoryStore()
    part = Partition(store, tmp / "work", rng, count=count, checkpoint_windows=every)
    out = tmp / "point.img"
    try:
        for events, restart in rounds:
            part.write(events, mean_gap_us=rng.choice([5, 20, 45]) * 60 * 1_000_000)
            if restart:
                part.restart()
            now = part.history.events[-1].timestamp_us
            for volume in part.sizes:
                prune_volume(store, volume, policy, workdir=tmp, now_us=now)
                promised = promised_points(part, volume, policy)
                newest = part.windows[volume][-1].last_offset if part.windows[volume] else -1
                mine = [o for o, _ in part.history.of(volume) if o <= newest]
                sample = set(rng.sample(mine, min(12, len(mine)))) | promised
                check_points(part, volume, sample, out, promised=promised)
        part.close()
        before = _stored_bytes(store)
        later = part.history.events[-1].timestamp_us + int(3 * GRACE_S * 1e6)
        reports = []
        for k in range(2):
            for volume in part.sizes:
                reports.append(
                    prune_volume(store, volume, policy, workdir=tmp, now_us=later + k * HOUR_US * 3)
                )
        after = _stored_bytes(store)
        assert after <= before
        if any(r.deleted for r in reports):
            assert after < before
        for volume in part.sizes:
            assert unreferenced(store, volume) == []
            report = verify_volume(store, volume, read_data=True)
            assert report.ok, report.to_text()
            promised = promised_points(part, volume, policy)
            check_points(part, volume, promised, out, promised=promised)
    finally:
        part.close()


def test_no_policy_deletes_nothing_and_dry_run_writes_nothing(tmp_path: Path) -> None:
    store = MemoryStore()
    part = Partition(store, tmp_path / "work", random.Random(5))
    part.write(120, mean_gap_us=30 * 60 * 1_000_000)
    part.close()
    snapshot = {i.key: store.get(i.key) for i in store.list("")}
    now = part.history.events[-1].timestamp_us + 10**12
    for volume in part.sizes:
        report = prune_volume(store, volume, RetentionPolicy(), workdir=tmp_path, now_us=now)
        assert report.windows_after == report.windows_before
        strict = RetentionPolicy(keep_within=3600.0, grace=GRACE_S, unsafe_grace=True)
        dry = prune_volume(store, volume, strict, workdir=tmp_path, now_us=now, dry_run=True)
        assert dry.windows_after < dry.windows_before
        assert dry.consolidate or dry.base is not None
    after = {i.key: store.get(i.key) for i in store.list("")}
    assert after == snapshot
