"""The layout-v2 fixture (a pruned store written at commit e3aaaa7; see its README):
every point the policy kept restores exactly both ways, every other point is exact or
refused as dropped, it verifies clean, and today's worker continues it."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from connectors.errors import NotRestorableError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.restore.verify import verify_volume
from connectors.store.file import FileStore
from schemas.events import EventKind, WriteEvent
from schemas.retention import load_retention
from tests.store_fixture_support import (
    STORES,
    continue_with_worker,
    continuing_writer,
    copy_store,
    file_sha,
)

NAME = "layout-v2"
EXPECTED: dict[str, dict[str, list]] = orjson.loads(  # type: ignore[type-arg]
    (STORES / NAME / "expected.json").read_bytes()
)
NEXT_OFFSET = 96


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return copy_store(NAME, tmp_path)


def test_the_fixture_is_pruned_and_verifies_clean(store: FileStore) -> None:
    for volume in EXPECTED:
        state = load_retention(store, volume)
        assert state is not None and state.base is not None
        report = verify_volume(store, volume, read_data=True)
        assert report.ok, report.to_text()
    assert verify_volume(store, "la").consolidated == 1


def test_kept_points_restore_both_ways_and_dropped_ones_are_refused(
    store: FileStore, tmp_path: Path
) -> None:
    out = tmp_path / "p.img"
    for volume, expected in EXPECTED.items():
        catalog = Catalog(store, volume)
        kept = set(expected["kept"])
        refused = 0
        for point in range(NEXT_OFFSET):
            for direction in ("forward", "backward"):
                if direction == "backward" and point > catalog.checkpoints[-1]:
                    continue
                try:
                    restore_point(store, catalog, point, out, direction=direction, progress=False)
                except NotRestorableError as exc:
                    if point in kept:
                        raise AssertionError(f"{volume}@{point} kept, refused: {exc}") from exc
                    refused += 1
                    continue
                assert file_sha(out) == expected["images"][point], f"{direction} {volume}@{point}"
        assert refused and kept


def test_the_worker_continues_a_pruned_store(store: FileStore, tmp_path: Path) -> None:
    writers = {v: continuing_writer(store, v, tmp_path) for v in EXPECTED}
    for w in writers.values():
        w.group = "g"
    events: list[tuple[int, WriteEvent]] = []
    states: dict[int, tuple[str, bytes]] = {}
    for i in range(14):
        w = writers["lb" if i % 3 == 2 else "la"]
        offset = NEXT_OFFSET + i
        if i == 6:
            ev = w.event(EventKind.BOOKMARK, name="after", dt_us=1000)
        else:
            ev = w.write((i * 577) % (w.size - 300), bytes([i + 7]) * (90 + i), dt_us=60_000_000)
        events.append((offset, ev))
        states[offset] = (w.name, bytes(w.model))
    continue_with_worker(store, events, tmp_path / "work", count=3, start=NEXT_OFFSET)
    out = tmp_path / "new.img"
    for offset, (volume, image) in states.items():
        catalog = Catalog(store, volume)
        if offset > catalog.windows[-1].last:
            continue
        restore_point(store, catalog, offset, out, progress=False)
        assert out.read_bytes() == image
    for volume in EXPECTED:
        assert verify_volume(store, volume, read_data=True).ok
