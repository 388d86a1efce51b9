"""streams.reader.BulkReader against the real broker: assign() at given offsets, batches
grouped by partition in offset order, unassigned partitions no longer read."""

from __future__ import annotations

import time
import uuid

from connectors.kafka import ensure_topics
from streams.outcome import Record
from streams.reader import BulkReader
from tests.streams_support import produce


def read_until(
    reader: BulkReader, want: dict[int, int], timeout: float = 30
) -> dict[int, list[Record]]:
    """Read until each partition in ``want`` has that many records (or time runs out)."""
    got: dict[int, list[Record]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(len(got.get(p, [])) < n for p, n in want.items()):
        for p, records in reader.read().items():
            got.setdefault(p, []).extend(records)
    return got


def test_reads_assigned_partitions_from_their_offsets(bootstrap: str) -> None:
    topic = f"reader-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 2})
    for p in (0, 1):
        produce(bootstrap, topic, [(b"k", f"{p}-{i}".encode()) for i in range(20)], partition=p)
    reader = BulkReader(
        {"bootstrap.servers": bootstrap}, topic, group_id=f"{topic}.reader", batch_size=7
    )
    try:
        assert reader.read() == {}  # nothing assigned yet
        reader.assign({0: 5, 1: None})
        got = read_until(reader, {0: 15, 1: 20})
        assert got[0] == [(i, b"k", f"0-{i}".encode()) for i in range(5, 20)]
        assert got[1] == [(i, b"k", f"1-{i}".encode()) for i in range(20)]

        reader.unassign({0})
        produce(bootstrap, topic, [(b"k", b"late-0")], partition=0)
        produce(bootstrap, topic, [(b"k", b"late-1")], partition=1)
        got = read_until(reader, {1: 1})
        assert got == {1: [(20, b"k", b"late-1")]}

        reader.assign({0: 18, 1: 999})  # partition 1 stays where it is
        got = read_until(reader, {0: 3}, timeout=30)
        assert got == {0: [(18, b"k", b"0-18"), (19, b"k", b"0-19"), (20, b"k", b"late-0")]}
    finally:
        reader.close()
