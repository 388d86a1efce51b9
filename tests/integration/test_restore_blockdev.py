"""A restore accepts a block device as output (a loop device) and writes it in place."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.store import MemoryStore
from tests.restore_history import POLICIES, random_history, write_store


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Path]:
    backing = tmp_path / "disk.raw"
    backing.write_bytes(b"\xee" * (128 * 1024))  # stale bytes the restore must overwrite
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield Path(dev)
    finally:
        subprocess.run(["losetup", "--detach", dev], check=True)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_restore_into_a_loop_device(loop_device: Path, direction: str) -> None:
    history = random_history(random.Random("blockdev"), events=80)
    store = MemoryStore()
    write_store(store, history, POLICIES["count7"], checkpoint_every=3)
    catalog = Catalog(store, "va")
    point = (catalog.windows[2].first + catalog.windows[2].last) // 2
    result = restore_point(store, catalog, point, loop_device, direction=direction, progress=False)
    assert result.output == loop_device
    size = history.sizes["va"]
    with loop_device.open("rb") as dev:
        got = dev.read(size + 16)
    assert got[:size] == history.image_at("va", point)
    assert got[size:] == b"\xee" * 16, "bytes past the volume end were touched"
