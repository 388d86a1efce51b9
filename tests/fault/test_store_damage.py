"""A store written by the real worker path (PartitionProcessor, windows stored in child
processes), damaged one key at a time: every object, manifest, checkpoint, chunk and the
head is in turn deleted, truncated and flipped. Restores at the points around it, both
ways, are exact or refused; ``verify --read-data`` names the key; the store is repaired
before the next key."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.errors import GapError, IntegrityError, NotRestorableError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.restore.verify import verify_volume
from connectors.store import open_store
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.checkpoint import Checkpoint
from schemas.events import EventKind, WriteEvent
from streams.options import BuildOptions
from streams.partition import PartitionProcessor
from streams.storing import WindowStorers
from streams.window import WindowPolicy
from tests.streams_support import Volume, feed_events

REFUSALS = (GapError, IntegrityError, NotRestorableError)


def fixed_clock() -> int:
    return 1_795_571_272_001_000


class Written:
    """The store and the model: the volume ``da`` after every offset of the partition."""

    def __init__(self, root: Path) -> None:
        rng = random.Random("store-damage")
        vols = {"da": Volume("da", 3 * 4096 + 77), "db": Volume("db", 4096, session="b" * 32)}
        events: list[WriteEvent] = []
        self.states: list[bytes] = []
        for v in vols.values():
            for ev in v.start():
                events.append(ev)
                self.states.append(bytes(vols["da"].model))
        for i in range(70):
            v = vols["da"] if rng.random() < 0.75 else vols["db"]
            length = rng.randrange(1, 2500)
            at = rng.randrange(0, v.size - length + 1)
            if i == 40:
                events.append(v.event(EventKind.BOOKMARK, name="half"))
            elif rng.random() < 0.85:
                events.append(v.write(at, rng.randbytes(length)))
            else:
                events.append(v.event(EventKind.ZERO, at, length=length))
            self.states.append(bytes(vols["da"].model))
        self.store_url = f"file://{root / 'store'}"
        opts = BuildOptions(
            topic="kcdp.writes",
            partition=0,
            workdir=root / "work",
            policy=WindowPolicy(count=7),
            checkpoint_windows=2,
            chunk_size=4096,
            clock=fixed_clock,
        )
        self.store = open_store(self.store_url)
        storers = WindowStorers(2, root / "spill")
        try:
            proc = PartitionProcessor(self.store, opts, storers=storers)
            proc.open(0)
            feed_events(proc, list(enumerate(events)))
            proc.close()
        finally:
            storers.close()
        self.baseline_end = 2


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Written]:
    w = Written(tmp_path_factory.mktemp("worker"))
    yield w
    w.store.close()


def _keys(store: ObjectStore) -> list[str]:
    out = {i.key for i in store.list(keys.volume_prefix("da"))}
    for info in store.list(keys.checkpoints_prefix("da")):
        cp = Checkpoint.from_json(store.get(info.key))
        out |= {keys.chunk_key(c) for c in cp.chunks if c is not None}
    return sorted(out)


def _around(key: str, catalog_windows: list[tuple[int, int]], low: int, high: int) -> set[int]:
    if "/manifests/" in key or "/data/" in key:
        first, last = keys.parse_window_key(key.rsplit(".", 1)[0] + ".json")
        points = {first - 1, first, (first + last) // 2, last, last + 1}
    elif "/checkpoints/" in key:
        at = keys.parse_offset_key(key)
        points = {at - 1, at, at + 1}
    else:  # chunks and the head: the newest points and a few others
        points = {high, high - 1} | {last for _, last in catalog_windows[::2]}
    return {p for p in points if low <= p <= high}


def test_the_worker_store_is_sound_before_damage(written: Written) -> None:
    report = verify_volume(written.store, "da", read_data=True)
    assert report.ok, report.problems
    assert report.windows >= 6 and report.checkpoints >= 3 and not report.unauthenticated
    kinds = {k.split("/")[3] if "/volumes/" in k else "chunks" for k in _keys(written.store)}
    assert kinds == {"data", "manifests", "checkpoints", "chunks", "head.json"}


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_each_key_damaged_in_turn_is_exact_or_refused(
    written: Written, damage: str, tmp_path: Path
) -> None:
    store = written.store
    catalog = Catalog(store, "da")
    windows = [(w.first, w.last) for w in catalog.windows]
    high = windows[-1][1]
    latest = catalog.latest()
    out = tmp_path / "out.img"
    exact = refused = 0
    for key in _keys(store):
        original = store.get(key)
        if damage == "delete":
            store.delete(key)
        elif damage == "truncate":
            store.put(key, original[: len(original) // 2])
        else:
            flipped = bytearray(original)
            flipped[len(flipped) // 3] ^= 0x10
            store.put(key, bytes(flipped))
        try:
            damaged = Catalog(store, "da")
            for point in sorted(_around(key, windows, written.baseline_end, high)):
                for direction in ("forward", "backward"):
                    out.unlink(missing_ok=True)
                    try:
                        restore_point(
                            store, damaged, point, out, direction=direction, progress=False
                        )
                    except REFUSALS:
                        assert not out.exists()
                        refused += 1
                        continue
                    assert out.read_bytes() == written.states[point], (damage, key, point)
                    exact += 1
            with contextlib.suppress(*REFUSALS):  # the newest point, or refused: never older
                assert damaged.latest() == latest, (damage, key)
            report = verify_volume(store, "da", read_data=True)
            if not (damage == "delete" and "/checkpoints/" in key):
                assert key in {p.key for p in report.problems}, (damage, key, report.problems)
        finally:
            store.put(key, original)
    assert exact and refused
    assert verify_volume(store, "da", read_data=True).ok
