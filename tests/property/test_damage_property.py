"""Property: one damaged object never yields wrong bytes.

A random history (unaligned, overlapping writes of two interleaved volumes, a few windows,
checkpoints) is stored; then exactly one object of volume ``a`` is damaged — an increment,
a write log, a manifest, a checkpoint, a checkpoint chunk or the head is deleted,
truncated or has a byte flipped, or two windows' manifests are swapped. Every restore at
every sampled point, in every direction, equals the reference model or is refused
(GapError / IntegrityError / NotRestorableError); ``--latest`` and the Kafka tail are never
answered from behind a damaged head; and ``verify --read-data`` names the damaged key.
"""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.errors import GapError, IntegrityError, NotRestorableError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.restore.planner import plan_restore
from connectors.restore.verify import verify_volume
from connectors.store import MemoryStore
from schemas import keys
from schemas.checkpoint import Checkpoint
from tests.damage_support import DAMAGES, damage_object
from tests.restore_history import POLICIES, random_history, write_store

REFUSALS = (GapError, IntegrityError, NotRestorableError)
KINDS = (*DAMAGES, "swap")


def _targets(store: MemoryStore, volume: str) -> list[str]:
    """Every key the volume's restores stand on: its objects, manifests, checkpoints,
    the chunks its checkpoints name, its head."""
    out = {i.key for i in store.list(keys.volume_prefix(volume))}
    for info in store.list(keys.checkpoints_prefix(volume)):
        cp = Checkpoint.from_json(store.get(info.key))
        out |= {keys.chunk_key(c) for c in cp.chunks if c is not None}
    return sorted(out)


def _damage(store: MemoryStore, kind: str, keys_: list[str], rng: random.Random) -> set[str]:
    """Damage one object (two manifests for ``swap``); return the keys damaged."""
    if kind == "swap":
        manifests = [k for k in keys_ if "/manifests/" in k]
        a, b = rng.sample(manifests, 2)
        da, db = store.get(a), store.get(b)
        store.put(a, db)
        store.put(b, da)
        return {a, b}
    key = rng.choice(keys_)
    damage_object(store, key, kind, rng)
    return {key}


def _points(catalog: Catalog, low: int, damaged: set[str], rng: random.Random) -> list[int]:
    """Random points, plus the edges of any damaged window and the points just after."""
    high = catalog.windows[-1].last
    points = {rng.randint(low, high) for _ in range(6)} | {high}
    for key in damaged:
        if "/manifests/" in key or "/data/" in key:
            first, last = keys.parse_window_key(key.rsplit(".", 1)[0] + ".json")
            points |= {first, (first + last) // 2, last, last + 1}
        elif "/checkpoints/" in key:
            points.add(keys.parse_offset_key(key))
    return sorted(p for p in points if low <= p <= high)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    policy=st.sampled_from(["count7", "bytes40k", "time150ms"]),
    every=st.integers(1, 3),
    kind=st.sampled_from(KINDS),
)
def test_one_damaged_object_is_refused_or_avoided_never_wrong_bytes(
    seed: int, policy: str, every: int, kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rng = random.Random(seed)
    history = random_history(rng, events=90, sizes={"a": 12_000, "b": 5_003}, max_write=2500)
    store = MemoryStore()
    write_store(store, history, POLICIES[policy], checkpoint_every=every)
    before = Catalog(store, "a")
    latest, newest = before.latest(), before.windows[-1].last
    if kind == "swap" and len(before.windows) < 2:
        kind = "flip"
    damaged = _damage(store, kind, _targets(store, "a"), rng)

    report = verify_volume(store, "a", read_data=True)
    named = {p.key for p in report.problems}
    deleted_checkpoint = kind == "delete" and any("/checkpoints/" in k for k in damaged)
    if not deleted_checkpoint:  # nothing records that a checkpoint existed: a lost shortcut
        assert named & damaged, (kind, damaged, report.problems)
    assert verify_volume(store, "b", read_data=True).ok  # the other volume is untouched

    catalog = Catalog(store, "a")
    if not catalog.windows:
        return
    out = tmp_path_factory.mktemp("damage") / "a.img"
    for point in _points(catalog, history.baseline_end("a"), damaged, rng):
        for direction in ("forward", "backward", "auto"):
            out.unlink(missing_ok=True)
            try:
                restore_point(store, catalog, point, out, direction=direction, progress=False)
            except REFUSALS:
                assert not out.exists()
                continue
            assert out.read_bytes() == history.image_at("a", point), (kind, damaged, point)

    # the newest point is the newest there was, or refused; never silently an older one
    with contextlib.suppress(*REFUSALS):
        assert catalog.latest() == latest
    try:
        plan = plan_restore(catalog, newest + 1, tail=True)
    except REFUSALS:
        return
    assert plan.path.replay is not None and plan.path.replay.first == newest + 1


def test_damage_kinds_cover_every_object_type() -> None:
    """The targets include each kind of key a restore stands on."""
    rng = random.Random(3)
    history = random_history(rng, events=90, sizes={"a": 12_000, "b": 5_003}, max_write=2500)
    store = MemoryStore()
    write_store(store, history, POLICIES["count7"], checkpoint_every=2)
    targets = _targets(store, "a")
    for part in (".fwd", ".bwd", ".log", "/manifests/", "/checkpoints/", "/chunks/", "head"):
        assert any(part in k for k in targets), part
