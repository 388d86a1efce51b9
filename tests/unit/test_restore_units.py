"""Pure parts of the restore side: batch coalescing, partitioning, state files, plans,
time parsing, the progress bar, zero-block runs, and a file restore's fresh sparse output."""

from __future__ import annotations

import io
import itertools
import os
import random
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.cli.target import parse_time
from connectors.errors import IntegrityError, NotRestorableError, UsageError, VolumeError
from connectors.restore.catalog import Catalog
from connectors.restore.coalesce import Coalescer
from connectors.restore.materialize import Progress, restore_point
from connectors.restore.partitioner import partition_for
from connectors.restore.planner import plan_restore
from connectors.restore.replica import Replica
from connectors.store import MemoryStore
from schemas.applied_state import AppliedState, Move, load_state, save_state, state_path
from schemas.extents import ZERO_GRAIN, nonzero_runs
from tests.restore_history import POLICIES, random_history, write_store

writes = st.lists(
    st.tuples(st.integers(0, 200), st.integers(1, 60), st.booleans(), st.integers(0, 255)),
    max_size=40,
)


@given(writes)
def test_coalesced_batch_equals_applying_every_write_in_order(ops: list) -> None:  # type: ignore[type-arg]
    size = 300
    model = bytearray(size)
    c = Coalescer()
    for offset, length, zero, fill in ops:
        data = None if zero else bytes([fill]) * length
        model[offset : offset + length] = data or bytes(length)
        c.add(offset, length, data)
    image = bytearray(size)
    extents = c.extents()
    assert [e.offset for e in extents] == sorted(e.offset for e in extents)
    for a, b in itertools.pairwise(extents):
        assert a.end <= b.offset, "extents overlap"
    for e in extents:
        image[e.offset : e.end] = e.data if e.data is not None else bytes(e.length)
    assert image == model
    assert c.bytes == sum(e.length for e in extents)


def test_partition_for_spreads_groups_and_is_stable() -> None:
    parts = {partition_for(f"group-{i}", 6) for i in range(100)}
    assert parts == set(range(6))
    assert partition_for("grp-7", 3) == partition_for("grp-7", 3)
    with pytest.raises(ValueError, match="partitions must be positive"):
        partition_for("g", 0)


def test_applied_state_round_trip_and_damage(tmp_path: Path) -> None:
    out = tmp_path / "r.img"
    assert load_state(out) is None
    st_ = AppliedState("v", "kcdp.writes", 2, applied_offset=41, session="s", sequence=9)
    save_state(out, st_)
    assert load_state(out) == st_
    doc = orjson.loads(state_path(out).read_bytes())
    assert doc["format"] == "kcdp-replica" and doc["applied_offset"] == 41
    state_path(out).write_bytes(b"{not json")
    with pytest.raises(IntegrityError, match=r"kcdp-replica\.json"):
        load_state(out)


def test_replica_refuses_an_image_in_the_middle_of_a_move(tmp_path: Path) -> None:
    out = tmp_path / "moving.img"
    out.write_bytes(bytes(4096))
    moving = AppliedState("v", "t", 0, applied_offset=9, move=Move(9, 4, "00" * 32))
    save_state(out, moving)
    with pytest.raises(VolumeError, match="in the middle of an in-place move from 9 to 4"):
        Replica(volume="v", output=out, partition=0, kafka_conf={}, topic="t")
    assert load_state(out) == moving


def test_replica_refuses_a_state_without_its_image(tmp_path: Path) -> None:
    out = tmp_path / "gone.img"
    save_state(out, AppliedState("v", "t", 0, applied_offset=5, session="s", sequence=3))
    with pytest.raises(VolumeError, match="is missing"):
        Replica(volume="v", output=out, partition=0, kafka_conf={}, topic="t")
    with pytest.raises(VolumeError, match="belongs to volume 'v'"):
        Replica(volume="w", output=out, partition=0, kafka_conf={}, topic="t")


def test_parse_time() -> None:
    assert parse_time("1970-01-01T00:00:01.5Z") == 1_500_000
    assert parse_time("2026-11-25T01:00:00+01:00") == parse_time("2026-11-25T00:00:00Z")
    with pytest.raises(UsageError, match="zone"):
        parse_time("2026-11-25T01:00:00")
    with pytest.raises(UsageError, match="RFC 3339"):
        parse_time("tomorrow")


def test_plan_is_printable_and_forced_directions_are_checked() -> None:
    history = random_history(random.Random(3), events=60)
    store = MemoryStore()
    write_store(store, history, POLICIES["count7"], checkpoint_last=False)
    catalog = Catalog(store, "va")
    point = catalog.windows[-1].last - 1
    plan = plan_restore(catalog, point)
    assert plan.path.direction == "forward" and plan.path.checkpoint is None
    doc = plan.to_dict()
    assert doc["bytes"] == plan.path.bytes > 0 and doc["offset"] == point
    assert "forward" in plan.to_text() and "empty image" in plan.to_text()
    assert "backward" in plan.refused
    with pytest.raises(NotRestorableError, match="no checkpoint"):
        plan_restore(catalog, point, direction="backward")
    with pytest.raises(UsageError):
        plan_restore(catalog, point, direction="sideways")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    tty, pipe = _Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = Progress(100, stream=stream, label="x")
        bar.advance(50)
        bar.advance(50)
        bar.finish()
    assert "100.0%" in tty.getvalue()
    assert pipe.getvalue() == ""


@given(
    st.lists(st.tuples(st.integers(0, 70_000), st.integers(1, 9000), st.integers(1, 255))),
    st.integers(0, 80_000),
)
def test_nonzero_runs_are_exactly_the_blocks_holding_a_nonzero_byte(
    writes: list[tuple[int, int, int]], size: int
) -> None:
    data = bytearray(size)
    for offset, length, value in writes:
        data[offset : offset + length] = bytes([value]) * len(data[offset : offset + length])
    runs = nonzero_runs(bytes(data))
    inside = [False] * -(-size // ZERO_GRAIN)
    for (start, end), nxt in itertools.zip_longest(runs, runs[1:]):
        assert start % ZERO_GRAIN == 0 and start < end and (end == size or end % ZERO_GRAIN == 0)
        assert nxt is None or end < nxt[0]  # sorted, disjoint, not touching
        for block in range(start // ZERO_GRAIN, -(-end // ZERO_GRAIN)):
            inside[block] = True
    for block, covered in enumerate(inside):
        chunk = data[block * ZERO_GRAIN : (block + 1) * ZERO_GRAIN]
        assert covered == any(chunk)


def test_a_file_restore_starts_from_a_new_file_and_leaves_zero_blocks_as_holes(
    tmp_path: Path,
) -> None:
    size = 1 << 20
    history = random_history(random.Random(5), sizes={"va": size}, events=40)
    store = MemoryStore()
    write_store(store, history, POLICIES["count7"])
    catalog = Catalog(store, "va")
    point = catalog.latest()
    out = tmp_path / "va.img"
    leftover = out.with_name(f".{out.name}.kcdp-restore-{os.getpid()}")
    leftover.write_bytes(b"\xff" * size)  # a killed restore's temporary file, same pid
    result = restore_point(store, catalog, point, out, progress=False)
    assert result.plan.path.checkpoint == point  # the checkpoint path
    want = history.image_at("va", point)
    assert out.read_bytes() == want and not leftover.exists()
    zero_blocks = sum(not any(want[i : i + ZERO_GRAIN]) for i in range(0, size, ZERO_GRAIN))
    assert zero_blocks > 0
    # holes where the image is zero (file system metadata blocks may be counted too)
    assert out.stat().st_blocks * 512 < size - zero_blocks * ZERO_GRAIN // 2
