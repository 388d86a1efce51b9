"""Property: forward and backward restores agree with the reference model at random points.

Random unaligned, overlapping workloads over two volumes of one group, cut by several
window policies; ≥ 50 restores at random offsets per policy, each direction compared
byte for byte with the model; bookmarks and timestamps map to the model's offsets.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.restore.planner import plan_restore
from connectors.store import MemoryStore
from schemas.applied_state import load_state, state_path
from tests.restore_history import (
    POLICIES,
    History,
    random_history,
    replays_from_forward,
    write_store,
)

Built = tuple[History, MemoryStore, dict[str, Catalog]]


@pytest.fixture(scope="module", params=sorted(POLICIES))
def built(request: pytest.FixtureRequest) -> Built:
    rng = random.Random(f"restore-{request.param}")
    history = random_history(rng, events=260)
    store = MemoryStore()
    write_store(store, history, POLICIES[request.param], checkpoint_every=6)
    return history, store, {v: Catalog(store, v) for v in history.sizes}


def _points(history: History, catalog: Catalog, rng: random.Random, n: int) -> list[int]:
    low = history.baseline_end(catalog.volume)
    high = catalog.windows[-1].last
    return [rng.randint(low, high) for _ in range(n)]


def test_both_directions_equal_the_model_at_random_offsets(built: Built, tmp_path: Path) -> None:
    history, store, catalogs = built
    rng = random.Random(7)
    restores = from_forward = 0
    out = tmp_path / "out.img"
    for volume, catalog in catalogs.items():
        for point in _points(history, catalog, rng, 14):
            want = history.image_at(volume, point)
            for direction in ("forward", "backward"):
                result = restore_point(
                    store, catalog, point, out, direction=direction, progress=False
                )
                assert result.plan.path.direction == direction
                assert out.read_bytes() == want, f"{direction} {volume}@{point}"
                state = load_state(out)
                assert state is not None and state.complete
                assert (state.volume, state.applied_offset) == (volume, point)
                restores += 1
                from_forward += replays_from_forward(store, result.plan)
    assert restores >= 50
    if all(len(c.windows) < len(history.of(v)) // 2 for v, c in catalogs.items()):
        # windows of several events: many points land mid-window after in_forward records
        assert from_forward >= 10, from_forward
    assert sorted(tmp_path.iterdir()) == [out, state_path(out)], "temporary files left behind"


def test_auto_takes_the_cheaper_path_and_is_correct(built: Built, tmp_path: Path) -> None:
    history, store, catalogs = built
    rng = random.Random(11)
    chosen = set()
    out = tmp_path / "auto.img"
    for volume, catalog in catalogs.items():
        for point in _points(history, catalog, rng, 8):
            plan = plan_restore(catalog, point)
            assert all(plan.path.bytes <= alt.bytes for alt in plan.alternatives)
            chosen.add(plan.path.direction)
            restore_point(store, catalog, point, out, progress=False)
            assert out.read_bytes() == history.image_at(volume, point)
    assert chosen == {"forward", "backward"}


def test_bookmarks_and_timestamps_equal_the_model(built: Built, tmp_path: Path) -> None:
    history, store, catalogs = built
    out = tmp_path / "bm.img"
    for volume, catalog in catalogs.items():
        marks = [(o, e) for o, e in history.of(volume) if e.name.startswith("bm")]
        assert marks, "workload has no bookmarks"
        for offset, event in marks[:4]:
            assert catalog.find_bookmark(event.name).offset == offset
            restore_point(store, catalog, offset, out, progress=False)
            assert out.read_bytes() == history.image_at(volume, offset)
        events = history.of(volume)
        rng = random.Random(volume)
        start = next(i for i, (o, _) in enumerate(events) if o >= history.baseline_end(volume))
        for _ in range(6):
            i = rng.randrange(start, len(events))
            t = events[i][1].timestamp_us + rng.choice([0, 1])  # on an event, or just after
            want = max(o for o, e in events if e.timestamp_us <= t)
            assert catalog.offset_at_time(t) == want
            restore_point(store, catalog, want, out, progress=False)
            assert out.read_bytes() == history.image_at(volume, want)


@settings(max_examples=8)
@given(
    seed=st.integers(0, 2**32),
    policy=st.sampled_from(sorted(POLICIES)),
    every=st.integers(0, 4),
    picks=st.lists(st.floats(0, 1), min_size=3, max_size=6),
)
def test_generated_histories_restore_exactly(
    seed: int, policy: str, every: int, picks: list[float], tmp_path_factory: pytest.TempPathFactory
) -> None:
    rng = random.Random(seed)
    history = random_history(rng, events=80, sizes={"a": 20_000, "b": 7_777}, max_write=3000)
    store = MemoryStore()
    write_store(store, history, POLICIES[policy], checkpoint_every=every)
    out = tmp_path_factory.mktemp("gen") / "x.img"
    for volume in history.sizes:
        catalog = Catalog(store, volume)
        low, high = history.baseline_end(volume), catalog.windows[-1].last
        for f in picks:
            point = low + int(f * (high - low))
            for direction in ("forward", "backward"):
                restore_point(store, catalog, point, out, direction=direction, progress=False)
                assert out.read_bytes() == history.image_at(volume, point)
