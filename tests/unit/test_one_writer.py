"""One writer per volume (docs/FORMAT.md "Ordering invariants"): an agent that lost its
partition (paused past its session timeout while another resumed from the store) stores
nothing more of the volume: no object, no manifest, no head. It stops with
OwnershipError; the other agent's chain stays exact, and the stopped agent, restarted,
resumes after the store's newest window."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from connectors.errors import OwnershipError
from connectors.store import MemoryStore
from schemas.codec import AvroCodec
from schemas.events import WriteEvent
from schemas.head import load_head
from streams.options import BuildOptions
from streams.outcome import Record
from streams.partition import PartitionProcessor
from streams.window import WindowPolicy
from tests.streams_support import Volume, blob_of, check_chain, states_after, tick

SIZE = 8192


def _proc(store: MemoryStore, tmp: Path, name: str, start: int) -> PartitionProcessor:
    opt = BuildOptions(
        topic="t",
        partition=0,
        workdir=tmp / name,
        policy=WindowPolicy(count=3),
        checkpoint_windows=100,
        chunk_size=1024,
    )
    proc = PartitionProcessor(store, opt)
    proc.open(start)
    return proc


def _records(events: list[WriteEvent]) -> list[Record]:
    codec = AvroCodec()
    return [(o, None, codec.encode(e.to_record())) for o, e in enumerate(events)]


def _run(proc: PartitionProcessor, records: list[Record]) -> None:
    proc.feed(records)
    proc.drain()


def _history() -> tuple[list[WriteEvent], list[Record]]:
    v = Volume("w", SIZE)
    events = v.start() + [v.write(k * 700 % (SIZE - 900), bytes([k + 1]) * 900) for k in range(9)]
    return events, _records([*events, tick(10**18)])


@pytest.mark.parametrize("zombie_first", [False, True])
def test_an_agent_that_lost_its_partition_stores_nothing(
    tmp_path: Path, zombie_first: bool
) -> None:
    events, records = _history()
    store = MemoryStore()
    first = _proc(store, tmp_path, "first", 0)
    out = first.feed(records[:6])  # its first windows are stored
    first.close()
    resume_at = out.commit_offset
    old = _proc(store, tmp_path, "old", resume_at)  # both resume from the same store state
    new = _proc(store, tmp_path, "new", resume_at)
    winner, loser = (old, new) if zombie_first else (new, old)
    winner.feed(records[resume_at:])
    winner.drain()
    winner.close()
    stored = blob_of(store)
    head = load_head(store, "w")
    with pytest.raises(OwnershipError, match="lost the partition"):
        _run(loser, records[resume_at:])
    with contextlib.suppress(OwnershipError):
        loser.close()
    assert blob_of(store) == stored  # not one object written, replaced or removed
    assert load_head(store, "w") == head
    states = states_after(events, list(range(len(events))), SIZE)
    manifests = check_chain(store, "w", SIZE, states)
    assert manifests[-1].last_offset == len(events) - 1
    again = _proc(store, tmp_path, "again", resume_at)  # the loser restarted
    again.feed(records[resume_at:])
    again.drain()
    again.close()
    assert blob_of(store) == stored  # it resumed after the newest window: nothing to store


def test_a_head_naming_a_lost_window_does_not_stop_the_agent(tmp_path: Path) -> None:
    events, records = _history()
    store = MemoryStore()
    proc = _proc(store, tmp_path, "a", 0)
    out = proc.feed(records[:6])
    proc.close()
    head = load_head(store, "w")
    assert head is not None
    store.delete(f"v1/volumes/w/manifests/{head.first_offset:020d}-{head.last_offset:020d}.json")
    proc = _proc(store, tmp_path, "b", out.commit_offset)  # resumes before the lost window
    proc.feed(records[out.commit_offset :])
    proc.drain()
    proc.close()
    newest = load_head(store, "w")
    assert newest is not None and newest.last_offset == len(events) - 1
