"""Property: moving an image in place between random points equals the reference model.

Random unaligned, overlapping workloads stored window by window (tests/restore_history.py,
several window policies and checkpoint spacings); an image starts at a random point (a
full restore, which records it) and is moved through a random chain of targets — far and
near, both directions, across checkpoints, from and to points inside windows — each move
compared byte for byte with the model and its applied state with the target.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.errors import NotRestorableError
from connectors.restore.catalog import Catalog
from connectors.restore.inplace import move_in_place
from connectors.restore.inplace_plan import choose
from connectors.restore.materialize import restore_point
from connectors.store import MemoryStore
from schemas.applied_state import load_state
from tests.restore_history import POLICIES, random_history, write_store


def _targets(rng: random.Random, low: int, high: int, start: int, n: int) -> list[int]:
    """A chain of ``n`` targets: half far (anywhere), half near the previous point."""
    out, at = [], start
    for k in range(n):
        near = k % 2 == 1
        at = min(high, max(low, at + rng.randint(-6, 6))) if near else rng.randint(low, high)
        out.append(at)
    return out


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    policy=st.sampled_from(sorted(POLICIES)),
    every=st.integers(0, 4),
)
def test_moves_between_random_points_equal_the_model(
    seed: int, policy: str, every: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rng = random.Random(seed)
    history = random_history(rng, events=160, sizes={"a": 24_000, "b": 9_001}, max_write=3000)
    store = MemoryStore()
    write_store(store, history, POLICIES[policy], checkpoint_every=every)
    image = tmp_path_factory.mktemp("inplace") / "x.img"
    kinds: set[str] = set()
    for volume in history.sizes:
        catalog = Catalog(store, volume)
        low, high = history.baseline_end(volume), catalog.windows[-1].last
        at = rng.randint(low, high)
        restore_point(store, catalog, at, image, progress=False)
        for target in _targets(rng, low, high, at, 8):
            before = image.read_bytes()
            moved = move_in_place(store, catalog, image, target)
            assert image.read_bytes() == history.image_at(volume, target), (
                f"{volume}: {at} -> {target} ({moved.plan.direction})"
            )
            state = load_state(image)
            assert state is not None and state.complete
            assert (state.volume, state.applied_offset) == (volume, target)
            kinds.add(moved.plan.direction)
            after = image.read_bytes()
            assert sum(x != y for x, y in zip(before, after, strict=True)) <= moved.bytes_written
            at = target
    assert kinds - {"none"}, kinds


def test_moves_cover_every_shape(tmp_path: Path) -> None:
    """Fixed histories: moves across several windows and checkpoints, within a window both
    ways, from mid-window and edge points, and a no-op, all equal the model."""
    rng = random.Random("shapes")
    history = random_history(rng, events=200)
    store = MemoryStore()
    write_store(store, history, POLICIES["count7"], checkpoint_every=5)
    catalog = Catalog(store, "va")
    w = catalog.windows
    mid = [(x.first + x.last) // 2 for x in w]
    cases = [
        (w[-1].last, w[2].last),  # far back, edge to edge, across checkpoints
        (w[2].last, w[-2].last),  # far forward
        (mid[3], mid[9]),  # mid-window to mid-window, forward
        (mid[9], mid[3]),  # and back
        (mid[5], mid[5] + 1),  # within a window, forward
        (mid[5] + 1, mid[5] - 1),  # within a window, backward
        (w[4].last, mid[5]),  # edge into the next window
        (mid[6], w[5].last),  # mid-window back to the edge before it
        (mid[7], mid[7]),  # nowhere
    ]
    image = tmp_path / "va.img"
    seen = set()
    for source, target in cases:
        restore_point(store, catalog, source, image, progress=False)
        moved = move_in_place(store, catalog, image, target)
        assert image.read_bytes() == history.image_at("va", target), (source, target)
        seen.add(moved.plan.direction)
        differs = history.image_at("va", source) != history.image_at("va", target)
        assert moved.ranges_written > 0 or not differs, (source, target)
        if source != target:
            assert moved.plan.bytes > 0
        again = move_in_place(store, catalog, image, target)  # already there: writes nothing
        assert again.plan.direction == "none" and again.ranges_written == 0
    assert seen == {"forward", "backward", "none"}


def test_auto_takes_the_path_reading_fewer_bytes(tmp_path: Path) -> None:
    rng = random.Random("auto")
    history = random_history(rng, events=240)
    store = MemoryStore()
    write_store(store, history, POLICIES["bytes40k"], checkpoint_every=4)
    catalog = Catalog(store, "va")
    low, high = history.baseline_end("va"), catalog.windows[-1].last
    image = tmp_path / "va.img"
    chosen = set()
    pairs = [(rng.randint(low, high), rng.randint(low, high)) for _ in range(10)]
    pairs += [(high, catalog.checkpoints[0]), (high, high - 1)]  # far onto a checkpoint, near
    for source, target in pairs:
        restore_point(store, catalog, source, image, progress=False)
        state = load_state(image)
        assert state is not None
        choice = choose(catalog, state, target)
        assert choice.move is not None and choice.full is not None
        assert (choice.chosen == "in-place") == (choice.move.bytes <= choice.full.path.bytes)
        assert choice.bytes == min(choice.move.bytes, choice.full.path.bytes)
        chosen.add(choice.chosen)
        for forced in ("forward", "backward"):
            try:
                c = choose(catalog, state, target, direction=forced)
            except NotRestorableError:
                continue
            assert c.chosen == "full" or (
                c.move is not None and c.move.direction in (forced, "none")
            )
    assert chosen == {"in-place", "full"}
