"""Properties of an export: the extent map is a byte model of layered writes; a point read
through it (either path) equals the reference model; one damaged object makes reads fail
or stay right, never wrong; the writable overlay reads back what was written over it."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.errors import ExportReadError, GapError, IntegrityError, NotRestorableError
from connectors.restore.catalog import Catalog
from connectors.restore.export import ObjectCache, Overlay, PointExport, open_point
from connectors.restore.extent_map import LITERAL, ExtentMap, Source, build_map
from connectors.restore.materialize import BadObjectError
from connectors.restore.planner import plan_restore
from connectors.store import MemoryStore
from tests.damage_support import DAMAGES, damage_object
from tests.restore_history import POLICIES, random_history, write_store

SIZE = 5000


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-50, SIZE + 50), st.integers(1, 900)), max_size=40))
def test_map_layers_like_writes_into_an_image(writes: list[tuple[int, int]]) -> None:
    model = bytearray(SIZE)
    emap = ExtentMap(SIZE)
    for k, (at, n) in enumerate(writes):
        data = bytes([k + 1]) * n
        emap.put(at, at + n, Source(LITERAL, at, data=data))
        lo, hi = max(0, at), min(SIZE, at + n)
        if lo < hi:
            model[lo:hi] = data[lo - at : hi - at]
    got = bytearray()
    for start, end, src in emap.lookup(0, SIZE):
        got += (
            bytes(end - start)
            if src.data is None
            else src.data[start - src.origin : end - src.origin]
        )
    assert got == model
    assert emap.starts == sorted(set(emap.starts)) and emap.starts[0] == 0


def _ranges(rng: random.Random, size: int) -> list[tuple[int, int]]:
    out = [(0, size)]
    for _ in range(8):
        at = rng.randrange(size)
        out.append((at, rng.randrange(1, size - at + 1)))
    return out


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    policy=st.sampled_from(["count7", "bytes40k", "time150ms"]),
    every=st.integers(1, 3),
    direction=st.sampled_from(["forward", "backward"]),
)
def test_reads_equal_the_model_on_either_path(
    seed: int, policy: str, every: int, direction: str
) -> None:
    rng = random.Random(seed)
    history = random_history(rng, events=90, sizes={"a": 12_000, "b": 5_003}, max_write=2500)
    store = MemoryStore()
    write_store(store, history, POLICIES[policy], checkpoint_every=every)
    catalog = Catalog(store, "a")
    for point in {rng.randint(catalog.latest() // 2, catalog.latest()) for _ in range(4)}:
        try:
            plan = plan_restore(catalog, point, direction=direction)
        except NotRestorableError:
            continue  # e.g. no checkpoint after the point to roll back from
        cache = ObjectCache(rng.choice([0, 1 << 20]))
        export = PointExport(store, plan, build_map(store, catalog, plan), cache)
        want = history.image_at("a", point)
        for at, n in _ranges(rng, export.size):
            assert export.read(at, n) == want[at : at + n]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), kind=st.sampled_from(DAMAGES))
def test_one_damaged_object_fails_reads_never_wrong_bytes(seed: int, kind: str) -> None:
    rng = random.Random(seed)
    history = random_history(rng, events=90, sizes={"a": 12_000, "b": 5_003}, max_write=2500)
    store = MemoryStore()
    write_store(store, history, POLICIES["count7"], checkpoint_every=2)
    point = rng.randint(Catalog(store, "a").latest() // 2, Catalog(store, "a").latest())
    export = open_point(store, "a", point, cache_mib=0)
    served = sorted(export.map.object_keys())
    if not served:  # only replayed writes and zeros: nothing stored left to damage
        return
    key = rng.choice(served)
    damage_object(store, key, kind, rng)
    want = history.image_at("a", point)
    ranges = _ranges(rng, export.size)
    results = [_read(export, at, n) for at, n in ranges]
    for r, (at, n) in zip(results, ranges, strict=True):
        assert r == want[at : at + n] or (isinstance(r, str) and key in r)
    assert isinstance(results[0], str)  # the whole volume: it reads the damaged object
    try:  # opened anew, the export avoids the object or refuses the point
        again = open_point(store, "a", point)
    except (GapError, IntegrityError, NotRestorableError, BadObjectError):
        return
    for at, n in _ranges(rng, again.size):
        r = _read(again, at, n)
        assert r == want[at : at + n] or (isinstance(r, str) and key in r)


def _read(export: PointExport, at: int, n: int) -> bytes | str:
    """The bytes read, or the message of the read's failure."""
    try:
        return export.read(at, n)
    except ExportReadError as exc:
        return exc.message


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.integers(0, 11_999), st.integers(1, 5000), st.booleans()), max_size=12
    ),
    seed=st.integers(0, 2**32),
)
def test_overlay_reads_back_writes_over_the_point(
    writes: list[tuple[int, int, bool]], seed: int
) -> None:
    rng = random.Random(seed)
    history = random_history(rng, events=40, sizes={"a": 12_000}, max_write=2500)
    store = MemoryStore()
    write_store(store, history, POLICIES["count7"], checkpoint_every=2)
    point = Catalog(store, "a").latest()
    model = bytearray(history.image_at("a", point))
    with tempfile.TemporaryDirectory() as tmp:
        overlay = Overlay(open_point(store, "a", point), Path(tmp) / "o.img")
        for k, (at, n, zero) in enumerate(writes):
            n = min(n, 12_000 - at)
            data = bytes(n) if zero else bytes([k + 1]) * n
            if zero:
                overlay.zero(at, n)
            else:
                overlay.write(at, data)
            model[at : at + n] = data
        assert overlay.read(0, 12_000) == bytes(model)
        for at, n in _ranges(rng, 12_000):
            assert overlay.read(at, n) == model[at : at + n]
        overlay.close()
        reopened = Overlay(open_point(store, "a", point), Path(tmp) / "o.img")
        assert reopened.read(0, 12_000) == bytes(model)
        reopened.close()
