"""Windows stored in the background — on threads (``close_threads`` > 0) or in child
processes (:class:`~streams.storing.WindowStorers`) — are the windows stored inline:
same keys and bytes, reported in window order, and no commit offset passes a window before
it is reported. A failed background store, or a child process that dies, is raised, never
skipped over."""

from __future__ import annotations

import os
import random
import signal
import tempfile
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.errors import StoreError
from connectors.store import open_store
from connectors.store.base import ObjectStore
from connectors.store.memory import MemoryStore
from schemas.codec import AvroCodec
from schemas.events import EventKind
from schemas.manifest import Manifest, list_window_keys
from streams.options import BuildOptions
from streams.partition import PartitionProcessor
from streams.storing import WindowStorers
from streams.window import WindowPolicy
from tests.streams_support import Volume, tick

codec = AvroCodec("WriteEvent")


def _records(seed: int, volumes: int, writes: int) -> list[tuple[int, None, bytes]]:
    rng = random.Random(seed)
    vols = [Volume(f"v{i}", 1 << 16) for i in range(volumes)]
    events = [e for v in vols for e in v.start()]
    for _ in range(writes):
        v = rng.choice(vols)
        off = rng.randrange((1 << 16) - 600)
        if rng.random() < 0.1:  # zeroed ranges: zero extents, data-less events
            events.append(v.event(EventKind.ZERO, off, length=rng.randrange(1, 600)))
        else:
            events.append(v.write(off, rng.randbytes(rng.randrange(1, 600))))
    events.append(tick(max(v.t_us for v in vols) + 10**9))
    return [(o, None, codec.encode(e.to_record())) for o, e in enumerate(events)]


def fixed_clock() -> int:
    """Manifests and checkpoints compare byte for byte (module level: picklable)."""
    return 1


_calls = [0]


def dying_clock() -> int:
    """In a window-storing child: kill the process at its third window's manifest."""
    _calls[0] += 1
    if _calls[0] > 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return 1


@pytest.fixture(scope="module")
def storers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WindowStorers]:
    pool = WindowStorers(2, tmp_path_factory.mktemp("spill"))
    yield pool
    pool.close()


def _options(tmp: Path, close_threads: int) -> BuildOptions:
    return BuildOptions(
        topic="t",
        partition=0,
        workdir=tmp,
        policy=WindowPolicy(seconds=0.01, count=9, max_bytes=3000),
        checkpoint_windows=4,
        chunk_size=4096,
        close_threads=close_threads,
        clock=fixed_clock,
    )


def _run(
    records: list[tuple[int, None, bytes]],
    batches: list[int],
    close_threads: int,
    storers: WindowStorers | None = None,
) -> tuple[dict[str, bytes], list[Manifest]]:
    reported: list[Manifest] = []
    commits: list[tuple[int, int]] = []  # (commit offset, windows reported before it)
    with tempfile.TemporaryDirectory() as tmp:
        # child processes need a store they can open by URL
        store = open_store(f"file://{tmp}/store") if storers else MemoryStore()
        opts = _options(Path(tmp) / "work", close_threads)
        proc = PartitionProcessor(store, opts, on_window=reported.append, storers=storers)
        proc.open(0)
        pos = 0
        for size in [*batches, len(records)]:
            out = proc.feed(records[pos : pos + size])
            pos += size
            if out.windows:  # reported to on_window first, in the same order
                assert out.windows == reported[-len(out.windows) :]
            commits.append((out.commit_offset, len(reported)))
            if pos >= len(records):
                break
        out = proc.drain()
        commits.append((out.commit_offset, len(reported)))
        proc.close()
        objects = {i.key: store.get(i.key) for i in store.list("")}
    for offset, seen in commits:  # a window reported later starts at or after the commit
        assert all(offset <= m.first_offset for m in reported[seen:])
    return objects, reported


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    volumes=st.integers(1, 3),
    writes=st.integers(1, 120),
    batches=st.lists(st.integers(1, 40), max_size=8),
)
def test_background_stores_equal_inline_stores(
    storers: WindowStorers, seed: int, volumes: int, writes: int, batches: list[int]
) -> None:
    records = _records(seed, volumes, writes)
    inline, inline_windows = _run(records, batches, 0)
    for close_threads, pool in ((2, None), (0, storers)):
        background, background_windows = _run(records, batches, close_threads, pool)
        assert background == inline
        assert [m.key for m in background_windows if m.volume == "v0"] == [
            m.key for m in inline_windows if m.volume == "v0"
        ]
        for name in {m.volume for m in background_windows}:  # window order within a volume
            firsts = [m.first_offset for m in background_windows if m.volume == name]
            assert firsts == sorted(firsts)


class FailingStore(MemoryStore):
    """Fails every put of a write-log object after the first ``ok`` of them."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok = ok

    def put(self, key: str, data: bytes) -> None:
        if key.endswith(".log"):
            if self.ok <= 0:
                raise StoreError(f"put {key}: injected failure")
            self.ok -= 1
        super().put(key, data)


def test_a_failed_background_store_is_raised_and_never_committed(tmp_path: Path) -> None:
    records = _records(7, 1, 60)
    store = FailingStore(ok=2)
    proc = PartitionProcessor(store, _options(tmp_path, 2))
    proc.open(0)
    commits = []
    with pytest.raises(StoreError, match="injected failure"):  # noqa: PT012 (fails mid-run)
        for i in range(0, len(records), 5):
            commits.append(proc.feed(records[i : i + 5]).commit_offset)
        proc.drain()
    durable = list_window_keys(store, "v0")
    assert len(durable) == 2  # the windows before the failed one
    # nothing past the failed window was ever committed
    assert commits and max(commits) <= durable[-1][1] + 1


def test_a_window_storing_child_that_dies_is_raised_and_never_committed(tmp_path: Path) -> None:
    records = _records(7, 1, 60)
    store: ObjectStore = open_store(f"file://{tmp_path}/store")
    opts = BuildOptions(
        topic="t",
        partition=0,
        workdir=tmp_path / "work",
        policy=WindowPolicy(count=9),
        checkpoint_windows=0,
        checkpoint_bytes=0,
        clock=dying_clock,
    )
    pool = WindowStorers(1, tmp_path / "spill")
    proc = PartitionProcessor(store, opts, storers=pool)
    proc.open(0)
    commits = []
    try:
        with pytest.raises(BrokenProcessPool):  # noqa: PT012 (fails mid-run)
            for i in range(0, len(records), 5):
                commits.append(proc.feed(records[i : i + 5]).commit_offset)
            proc.drain()
    finally:
        pool.close()
    durable = list_window_keys(store, "v0")
    assert len(durable) == 2  # the windows before the child died
    assert commits and max(commits) <= durable[-1][1] + 1
