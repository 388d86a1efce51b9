"""A store written before manifest/checkpoint version 2 stays readable and restorable, and
today's worker continues it with v2 windows chained onto the v1 ones.

The fixture (tests/fixtures/stores/manifest-v1/README.md) was written by the real worker
path of commit 32d7102; ``expected.json`` holds the model's image digest at every offset.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.restore.verify import verify_volume
from connectors.store.file import FileStore
from schemas import keys
from schemas.checkpoint import load_checkpoint
from schemas.events import EventKind
from schemas.head import load_head
from schemas.manifest import list_window_keys, load_manifest
from streams.options import BuildOptions
from streams.partition import PartitionProcessor
from streams.window import WindowPolicy
from tests.store_fixture_support import (
    continuing_writer,
    copy_store,
    expected_digests,
    file_sha,
    restore_every_point,
)
from tests.streams_support import feed_events

EXPECTED = expected_digests("manifest-v1")
BASELINE_END = {"fa": 2, "fb": 5}  # offsets of each volume's BASELINE_END


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return copy_store("manifest-v1", tmp_path)


def test_the_fixture_is_v1_and_verifies_as_unauthenticated(store: FileStore) -> None:
    for volume in ("fa", "fb"):
        assert load_head(store, volume) is None
        windows = list_window_keys(store, volume)
        assert {load_manifest(store, k).version for *_, k in windows} == {1}
        report = verify_volume(store, volume, read_data=True)
        assert report.ok, report.problems
        assert report.unauthenticated == [k for *_, k in windows]
        assert "unauthenticated" in report.to_text()
    assert load_checkpoint(store, "fa", 27).version == 1


@pytest.mark.parametrize("volume", ["fa", "fb"])
def test_every_point_restores_exactly_in_both_directions(
    store: FileStore, volume: str, tmp_path: Path
) -> None:
    counts = restore_every_point(
        store, volume, BASELINE_END[volume], EXPECTED[volume], tmp_path / "out.img"
    )
    assert counts.mid >= 10 and counts.between >= 1, counts


def test_bookmark_and_latest_of_a_store_without_a_head(store: FileStore, tmp_path: Path) -> None:
    catalog = Catalog(store, "fa")
    mark = catalog.find_bookmark("mid")
    assert catalog.latest() == catalog.windows[-1].last  # v1 without a head: anchored
    out = tmp_path / "bm.img"
    restore_point(store, catalog, mark.offset, out, progress=False)
    assert file_sha(out) == EXPECTED["fa"][mark.offset]


def test_the_worker_continues_a_v1_store_with_chained_v2_windows(
    store: FileStore, tmp_path: Path
) -> None:
    catalog = Catalog(store, "fa")
    last = catalog.manifest(len(catalog) - 1)
    v = continuing_writer(store, "fa", tmp_path)
    states = {}
    events = []
    for i in range(13):
        if i == 9:
            ev = v.event(EventKind.BOOKMARK, name="after")
        else:
            ev = v.write((i * 811) % (v.size - 900), bytes([i + 1]) * (300 + i))
        events.append((70 + i, ev))
        states[70 + i] = bytes(v.model)
    opts = BuildOptions(
        topic="kcdp.writes",
        partition=0,
        workdir=tmp_path / "work",
        policy=WindowPolicy(count=6),
        checkpoint_windows=2,
        chunk_size=4096,
    )
    proc = PartitionProcessor(store, opts)
    proc.open(70)
    feed_events(proc, events)
    proc.close()

    windows = list_window_keys(store, "fa")
    new = [load_manifest(store, k) for first, _, k in windows if first >= 70]
    assert [(m.first_offset, m.last_offset, m.version) for m in new] == [(70, 75, 2), (76, 81, 2)]
    assert new[0].previous == (last.first_offset, last.last_offset)
    assert new[0].previous_digest == last.digest  # the canonical digest of the v1 manifest
    assert new[1].previous_digest == new[0].digest
    head = load_head(store, "fa")
    assert head is not None and head.window_digest == new[1].digest
    cp = load_checkpoint(store, "fa", new[1].last_offset)
    assert cp.version == 2 and cp.window_digest == new[1].digest
    report = verify_volume(store, "fa", read_data=True)
    assert report.ok, report.problems
    assert len(report.unauthenticated) == len(windows) - 2

    catalog = Catalog(store, "fa")
    out = tmp_path / "out.img"
    for point in (30, last.last_offset, 72, 75, 76, 79, 81):
        want = states.get(point)
        for direction in ("forward", "backward"):
            restore_point(store, catalog, point, out, direction=direction, progress=False)
            if want is None:
                assert file_sha(out) == EXPECTED["fa"][point]
            else:
                assert out.read_bytes() == want, f"{direction} fa@{point}"
    assert catalog.latest() == new[1].last_offset
    assert keys.head_key("fa") in {i.key for i in store.list(keys.volume_prefix("fa"))}
