"""A worker restarted while a baseline runs still takes its BASELINE_END as the end of that
baseline (the manifest carries ``baseline_open``), and manifests carry the fenced sessions
(docs/FORMAT.md "Manifest")."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from connectors.store import MemoryStore
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent
from schemas.manifest import list_window_keys, load_manifest
from streams.options import BuildOptions
from streams.outcome import Record
from streams.partition import PartitionProcessor
from streams.window import WindowPolicy
from tests.streams_support import Volume, tick

SIZE = 4096


def _options(tmp: Path) -> BuildOptions:
    return BuildOptions(
        topic="t",
        partition=0,
        workdir=tmp,
        policy=WindowPolicy(count=2),
        checkpoint_windows=100,
        chunk_size=1024,
    )


def _records(events: list[WriteEvent]) -> list[Record]:
    codec = AvroCodec()
    return [(o, None, codec.encode(e.to_record())) for o, e in enumerate(events)]


@pytest.mark.parametrize("restart_at", [2, 4, 6])
def test_a_restart_during_the_first_baseline_keeps_it_open(tmp_path: Path, restart_at: int) -> None:
    v = Volume("b", SIZE)
    events = [v.event(EventKind.SESSION_START), v.event(EventKind.BASELINE_START)]
    events += [v.event(EventKind.BASELINE, k * 1024, bytes([k + 1]) * 1024) for k in range(4)]
    events += [v.event(EventKind.BASELINE_END), v.write(5, b"after"), tick(10**18)]
    records = _records(events)
    store = MemoryStore()
    proc = PartitionProcessor(store, _options(tmp_path))
    proc.open(0)
    out = proc.feed(records[:restart_at])
    proc.close()  # the worker stops; windows of 2 events are stored
    proc = PartitionProcessor(store, _options(tmp_path))
    proc.open(out.commit_offset)
    proc.feed(records[out.commit_offset :])
    proc.drain()
    proc.close()
    manifests = [load_manifest(store, k) for _, _, k in list_window_keys(store, "b")]
    end = len(events) - 3  # BASELINE_END's offset
    assert manifests[-1].consistent
    assert [m.consistent for m in manifests] == [m.last_offset >= end for m in manifests]
    assert [m.baseline_open for m in manifests] == [m.last_offset < end for m in manifests]


def test_manifests_carry_the_fenced_sessions(tmp_path: Path) -> None:
    v = Volume("f", SIZE)
    events = v.start()
    probe = v.write(0, b"x")
    v.seq -= 1  # the probe's sequence stays the line's next
    foreign = "a" * 31 + "b"
    events.append(dataclasses.replace(probe, session=foreign).seal())  # a second session
    events += [v.write(100 * k, b"real") for k in range(6)] + [tick(10**18)]
    store = MemoryStore()
    proc = PartitionProcessor(store, _options(tmp_path))
    proc.open(0)
    out = proc.feed(_records(events))
    out.dead_letters += proc.drain().dead_letters
    proc.close()
    assert [d.error for d in out.dead_letters] == ["OutOfLineEventError"]
    manifests = [load_manifest(store, k) for _, _, k in list_window_keys(store, "f")]
    assert manifests[-1].fenced == (foreign,)
