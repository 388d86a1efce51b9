"""Shared by the layout-fixture tests (tests/fixtures/stores/*): a working copy of a
fixture store, its expected image digests, and the every-point restore check."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import orjson

from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.store.base import ObjectStore
from connectors.store.file import FileStore
from schemas.events import WriteEvent
from streams.options import BuildOptions
from streams.partition import PartitionProcessor
from streams.window import WindowPolicy
from tests.streams_support import Volume, feed_events

STORES = Path(__file__).parent / "fixtures" / "stores"


def expected_digests(name: str) -> dict[str, list[str]]:
    """Per volume, the SHA-256 of the model image after every offset of fixture ``name``."""
    digests: dict[str, list[str]] = orjson.loads((STORES / name / "expected.json").read_bytes())
    return digests


def copy_store(name: str, tmp_path: Path) -> FileStore:
    """A writable copy of fixture ``name``'s store under ``tmp_path``."""
    shutil.copytree(STORES / name / "store", tmp_path / "store")
    return FileStore(tmp_path / "store")


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class PointCounts:
    """What kinds of point an every-point check restored."""

    mid: int = 0  # inside a window: a write-log replay
    between: int = 0  # after a window's end, before the next window
    backward: int = 0  # restored both ways (a checkpoint to roll back from)


def restore_every_point(
    store: ObjectStore, volume: str, first: int, expected: list[str], out: Path
) -> PointCounts:
    """Restore every point of ``volume`` from ``first`` to its newest, forward and (where a
    checkpoint follows) backward, asserting each image's digest equals ``expected``."""
    catalog = Catalog(store, volume)
    counts = PointCounts()
    for point in range(first, catalog.windows[-1].last + 1):
        index = catalog.index_for(point)
        assert index is not None
        counts.mid += point < catalog.windows[index].last
        counts.between += point > catalog.windows[index].last
        backward = point <= catalog.checkpoints[-1]
        counts.backward += backward
        for direction in ("forward", "backward") if backward else ("forward",):
            restore_point(store, catalog, point, out, direction=direction, progress=False)
            assert file_sha(out) == expected[point], f"{direction} {volume}@{point}"
    return counts


def continuing_writer(store: ObjectStore, volume: str, tmp_path: Path) -> Volume:
    """A writer of ``volume`` continuing its newest stored session from its restored image."""
    catalog = Catalog(store, volume)
    last = catalog.manifest(len(catalog) - 1)
    image = tmp_path / f"{volume}-latest.img"
    restore_point(store, catalog, last.last_offset, image, progress=False)
    v = Volume(volume, last.volume_size, session=last.session, seq=last.last_sequence + 1)
    v.t_us = last.last_time_us
    v.model = bytearray(image.read_bytes())
    return v


def continue_with_worker(
    store: ObjectStore,
    events: list[tuple[int, WriteEvent]],
    workdir: Path,
    *,
    count: int,
    start: int,
) -> None:
    """Today's worker (its partition processor) stores ``events`` (offset, event) after the
    fixture's history: count windows of ``count`` events, a checkpoint every 2 windows."""
    opts = BuildOptions(
        topic="kcdp.writes",
        partition=0,
        workdir=workdir,
        policy=WindowPolicy(count=count),
        checkpoint_windows=2,
        chunk_size=4096,
    )
    proc = PartitionProcessor(store, opts)
    proc.open(start)
    feed_events(proc, events)
    proc.close()
