"""A store of today's layout (manifest/checkpoint version 2, heads) stays readable and
restorable, verifies clean and authenticated, and today's worker continues it.

The fixture (tests/fixtures/stores/manifest-v2/README.md) was written by the real worker
path of commit 05b831d; ``expected.json`` holds the model's image digest at every offset.
When a stored format changes, this store must keep passing unchanged.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from connectors.errors import NotRestorableError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.restore.verify import verify_volume
from connectors.store.file import FileStore
from schemas.checkpoint import load_checkpoint
from schemas.events import EventKind, WriteEvent
from schemas.head import load_head
from schemas.manifest import list_window_keys, load_manifest
from tests.store_fixture_support import (
    continue_with_worker,
    continuing_writer,
    copy_store,
    expected_digests,
    file_sha,
    restore_every_point,
)

EXPECTED = expected_digests("manifest-v2")
BASELINE_END = {"fa": 2, "fb": 15}  # offsets of each volume's first BASELINE_END
NEXT_OFFSET = len(EXPECTED["fa"])  # the partition's next offset after the fixture


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return copy_store("manifest-v2", tmp_path)


def test_the_fixture_is_v2_and_verifies_clean_and_authenticated(store: FileStore) -> None:
    for volume in ("fa", "fb"):
        windows = list_window_keys(store, volume)
        manifests = [load_manifest(store, k) for *_, k in windows]
        assert {m.version for m in manifests} == {2}
        head = load_head(store, volume)
        assert head is not None and head.window_digest == manifests[-1].digest
        for offset in Catalog(store, volume).checkpoints:
            assert load_checkpoint(store, volume, offset).version == 2
        report = verify_volume(store, volume, read_data=True)
        assert report.ok, report.problems
        assert report.unauthenticated == []
        assert "unauthenticated" not in report.to_text()
    fb = [load_manifest(store, k) for *_, k in list_window_keys(store, "fb")]
    assert fb[0].baseline_open and not fb[0].consistent  # the copy spans two windows
    assert fb[1].consistent and not fb[1].baseline_open


@pytest.mark.parametrize("volume", ["fa", "fb"])
def test_every_point_restores_exactly_in_both_directions(
    store: FileStore, volume: str, tmp_path: Path
) -> None:
    counts = restore_every_point(
        store, volume, BASELINE_END[volume], EXPECTED[volume], tmp_path / "out.img"
    )
    assert counts.mid >= 10 and counts.backward >= 10, counts
    assert counts.between >= (1 if volume == "fa" else 0), counts


def test_points_inside_the_open_baseline_are_refused(store: FileStore, tmp_path: Path) -> None:
    catalog = Catalog(store, "fb")
    for point in (4, 10, BASELINE_END["fb"] - 1):
        with pytest.raises(NotRestorableError):
            restore_point(store, catalog, point, tmp_path / "out.img", progress=False)


def test_bookmarks_and_latest_come_from_the_head(store: FileStore, tmp_path: Path) -> None:
    for volume, at in (("fa", 18), ("fb", 37)):
        catalog = Catalog(store, volume)
        mark = catalog.find_bookmark("mid")
        assert mark.offset == at
        assert catalog.latest() == catalog.windows[-1].last
        out = tmp_path / f"{volume}.img"
        restore_point(store, catalog, mark.offset, out, progress=False)
        assert file_sha(out) == EXPECTED[volume][mark.offset]


def test_the_worker_continues_a_v2_store_with_chained_windows(
    store: FileStore, tmp_path: Path
) -> None:
    before = {
        v: [load_manifest(store, k) for *_, k in list_window_keys(store, v)] for v in EXPECTED
    }
    writers = {name: continuing_writer(store, name, tmp_path) for name in EXPECTED}
    states: dict[str, dict[int, bytes]] = {"fa": {}, "fb": {}}
    events: list[tuple[int, WriteEvent]] = []
    for i in range(18):
        v = writers["fb" if i % 3 == 2 else "fa"]
        offset = NEXT_OFFSET + i
        if i == 9:
            ev = v.event(EventKind.BOOKMARK, name="after")
        else:
            ev = v.write((i * 811) % (v.size - 400), bytes([i + 1]) * (100 + i))
        events.append((offset, ev))
        states[v.name][offset] = bytes(v.model)
    continue_with_worker(store, events, tmp_path / "work", count=6, start=NEXT_OFFSET)
    assert Catalog(store, "fa").checkpoints[-1] > NEXT_OFFSET  # one taken on the new windows

    for name, old in before.items():
        windows = list_window_keys(store, name)
        new = [load_manifest(store, k) for first, _, k in windows if first >= NEXT_OFFSET]
        assert new and {m.version for m in new} == {2}
        assert new[0].previous == (old[-1].first_offset, old[-1].last_offset)
        assert new[0].previous_digest == old[-1].digest
        for a, b in itertools.pairwise(new):
            assert b.previous_digest == a.digest
        head = load_head(store, name)
        assert head is not None and head.window_digest == new[-1].digest
        for m in new:
            if m.last_offset in Catalog(store, name).checkpoints:
                cp = load_checkpoint(store, name, m.last_offset)
                assert cp.version == 2 and cp.window_digest == m.digest
        report = verify_volume(store, name, read_data=True)
        assert report.ok, report.problems
        assert report.unauthenticated == []

        catalog = Catalog(store, name)
        assert catalog.latest() == new[-1].last_offset
        out = tmp_path / "out.img"
        stored_new = [o for o in states[name] if o <= new[-1].last_offset]
        for point in (BASELINE_END[name], old[-1].last_offset, *stored_new):
            want = states[name].get(point)
            backward = point <= catalog.checkpoints[-1]
            for direction in ("forward", "backward") if backward else ("forward",):
                restore_point(store, catalog, point, out, direction=direction, progress=False)
                if want is None:
                    assert file_sha(out) == EXPECTED[name][point], f"{direction} {name}@{point}"
                else:
                    assert out.read_bytes() == want, f"{direction} {name}@{point}"
