"""Restores over stores written by the agents' own window builder (streams.partition).

The same random two-volume workloads as test_restore_paths, fed through
:class:`streams.partition.PartitionProcessor` with several window policies and its own
checkpoints; restores at random offsets, both directions where a path exists, must equal
the reference model.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from connectors.errors import NotRestorableError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.restore.planner import plan_restore
from connectors.store import MemoryStore
from streams.options import BuildOptions
from streams.partition import PartitionProcessor
from streams.window import WindowPolicy
from tests.restore_history import random_history, replays_from_forward
from tests.streams_support import feed_events

POLICIES = {
    "count5": WindowPolicy(count=5),
    "bytes30k": WindowPolicy(bytes=30_000),
    "seconds0.2": WindowPolicy(seconds=0.2),
    "adaptive": WindowPolicy(adaptive=True, adaptive_target=50_000, adaptive_min=0.05,
                             adaptive_max=1.0),
}  # fmt: skip


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_builder_stores_restore_exactly(policy: str, tmp_path: Path) -> None:
    history = random_history(random.Random(f"builder-{policy}"), events=220)
    store = MemoryStore()
    options = BuildOptions(
        topic="kcdp.writes",
        partition=0,
        workdir=tmp_path / "agent",
        policy=POLICIES[policy],
        checkpoint_windows=5,
    )
    processor = PartitionProcessor(store, options)
    processor.open(0)
    outcome = feed_events(processor, list(enumerate(history.events)))
    processor.close()
    assert not outcome.dead_letters
    rng = random.Random(policy)
    out = tmp_path / "out.img"
    restores = {"forward": 0, "backward": 0}
    from_forward = 0
    for volume in history.sizes:
        catalog = Catalog(store, volume)
        assert len(catalog) >= 3, "the policy cut too few windows"
        low, high = history.baseline_end(volume), catalog.windows[-1].last
        for _ in range(8):
            point = rng.randint(low, high)
            want = history.image_at(volume, point)
            for direction in ("forward", "backward"):
                try:
                    plan_restore(catalog, point, direction=direction)
                except NotRestorableError:
                    continue  # no later checkpoint to roll back from
                result = restore_point(
                    store, catalog, point, out, direction=direction, progress=False
                )
                assert out.read_bytes() == want, f"{direction} {volume}@{point}"
                restores[direction] += 1
                from_forward += replays_from_forward(store, result.plan)
    assert restores["forward"] == 16 and restores["backward"] > 0
    assert from_forward > 0, "no restore replayed in_forward records mid-window"
