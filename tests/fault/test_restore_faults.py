"""Corruption, missing objects and gaps: detected, named, never restored as wrong bytes."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from connectors.errors import GapError, IntegrityError, KcdpError, NotRestorableError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.restore.planner import plan_restore
from connectors.restore.verify import verify_volume
from connectors.store import MemoryStore
from schemas.extents import Extent
from schemas.gaps import Gap
from schemas.increment import read_increment, write_increment
from schemas.manifest import Manifest, ObjectRef
from schemas.writelog import read_log
from tests.restore_history import POLICIES, History, random_history, reseal, write_store


@pytest.fixture(scope="module")
def history() -> History:
    return random_history(random.Random("faults"), events=240)


@pytest.fixture
def store(history: History) -> MemoryStore:
    s = MemoryStore()
    write_store(s, history, POLICIES["count7"], checkpoint_every=5)
    return s


def _point(catalog: Catalog) -> int:
    """A point in the middle of a window, with both paths available."""
    w = catalog.windows[len(catalog.windows) // 2 + 1]
    return (w.first + w.last) // 2 if w.last > w.first else w.last


def _flip(store: MemoryStore, key: str) -> None:
    data = bytearray(store.get(key))
    data[len(data) // 2] ^= 0x40
    store.put(key, bytes(data))


def _truncate(store: MemoryStore, key: str) -> None:
    store.put(key, store.get(key)[:-7])


def _delete(store: MemoryStore, key: str) -> None:
    store.delete(key)


@pytest.mark.parametrize(
    ("damage", "error"),
    [(_flip, IntegrityError), (_truncate, IntegrityError), (_delete, GapError)],
    ids=["flipped-byte", "truncated", "missing"],
)
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_damaged_increment_is_named_and_nothing_is_written(
    store: MemoryStore,
    history: History,
    tmp_path: Path,
    damage: Callable[[MemoryStore, str], None],
    error: type[KcdpError],
    direction: str,
) -> None:
    catalog = Catalog(store, "va")
    point = _point(catalog)
    plan = plan_restore(catalog, point, direction=direction)
    assert plan.path.steps, "the path must apply increments"
    key = plan.path.steps[len(plan.path.steps) // 2].ref.key
    damage(store, key)
    out = tmp_path / "out.img"
    with pytest.raises(error) as info:
        restore_point(store, catalog, point, out, direction=direction, progress=False)
    assert key in str(info.value)
    assert list(tmp_path.iterdir()) == [], "a failed restore left files behind"
    report = verify_volume(store, "va", read_data=True)
    assert key in {p.key for p in report.problems}


def test_auto_avoids_a_bad_object_by_taking_the_other_direction(
    store: MemoryStore, history: History, tmp_path: Path
) -> None:
    catalog = Catalog(store, "va")
    point = _point(catalog)
    first = plan_restore(catalog, point)
    key = first.path.steps[0].ref.key
    _flip(store, key)
    out = tmp_path / "out.img"
    result = restore_point(store, catalog, point, out, progress=False)
    assert result.retried_after == key
    assert result.plan.path.direction != first.path.direction
    assert out.read_bytes() == history.image_at("va", point)


def test_corrupt_write_log_fails_in_every_direction(
    store: MemoryStore, history: History, tmp_path: Path
) -> None:
    catalog = Catalog(store, "va")
    point = _point(catalog)
    plan = plan_restore(catalog, point)
    assert plan.path.replay is not None
    ref = plan.path.replay.ref
    assert ref is not None
    _flip(store, ref.key)
    with pytest.raises(IntegrityError, match=ref.key):
        restore_point(store, catalog, point, tmp_path / "o.img", progress=False)
    assert not (tmp_path / "o.img").exists()


def _in_forward_points(store: MemoryStore, catalog: Catalog) -> list[tuple[int, int, Manifest]]:
    """(first in_forward record's offset, window index, manifest) of windows whose log has
    an in_forward record before the window's last offset (a mid-window point needing it)."""
    out = []
    for i in range(len(catalog.windows) // 2, len(catalog.windows)):
        m = catalog.manifest(i)
        hits = [
            r.kafka_offset
            for r in read_log(store.get(_log(m).key))
            if r.in_forward and r.kafka_offset < m.last_offset
        ]
        if hits:
            out.append((hits[0], i, m))
    assert out, "no window of the workload has an in_forward record mid-window"
    return out


@pytest.mark.parametrize("damage", [_flip, _truncate, _delete], ids=["flipped", "cut", "missing"])
def test_corrupt_forward_breaks_mid_window_replays_and_is_named(
    store: MemoryStore, history: History, tmp_path: Path, damage: Callable[[MemoryStore, str], None]
) -> None:
    """The target window's forward holds the bytes of in_forward log records: a replay up
    to such a record fails naming it, in every direction (auto included)."""
    catalog = Catalog(store, "va")
    point, _, m = _in_forward_points(store, catalog)[0]
    plan = plan_restore(catalog, point)
    assert plan.path.replay is not None and plan.path.replay.forward == m.forward
    needed = plan.path.keys()
    assert m.forward.key in needed and plan.path.bytes >= m.forward.size
    damage(store, m.forward.key)
    for direction in ("forward", "backward", "auto"):
        with pytest.raises((IntegrityError, GapError), match=m.forward.key):
            restore_point(
                store, catalog, point, tmp_path / "o.img", direction=direction, progress=False
            )
    assert list(tmp_path.iterdir()) == []
    report = verify_volume(store, "va", read_data=damage is not _delete)
    assert m.forward.key in {p.key for p in report.problems}


def test_replay_before_any_in_forward_record_does_not_need_the_forward(
    store: MemoryStore, history: History, tmp_path: Path
) -> None:
    catalog = Catalog(store, "va")
    hit, _, m = next(
        (h, i, m) for h, i, m in _in_forward_points(store, catalog) if h > m.first_offset
    )
    point = hit - 1
    _flip(store, m.forward.key)
    for direction in ("forward", "backward"):
        result = restore_point(
            store, catalog, point, tmp_path / "o.img", direction=direction, progress=False
        )
        assert result.replay_source == "log"
        assert (tmp_path / "o.img").read_bytes() == history.image_at("va", point)


def test_forward_bytes_not_matching_the_log_crc_are_named(
    store: MemoryStore, history: History, tmp_path: Path
) -> None:
    """A well-formed forward increment (digest recorded) whose bytes differ from what an
    in_forward record's CRC-32C says: the replay fails naming the log and the forward."""
    catalog = Catalog(store, "va")
    point, _, m = _in_forward_points(store, catalog)[0]
    rec = next(r for r in read_log(store.get(_log(m).key)) if r.kafka_offset == point)
    extents = []
    for ext in read_increment(store.get(m.forward.key)):
        if ext.offset <= rec.offset < ext.end:
            data = bytearray(ext.data if ext.data is not None else bytes(ext.length))
            data[rec.offset - ext.offset] ^= 0x01
            ext = Extent(ext.offset, ext.length, bytes(data))
        extents.append(ext)
    buf = io.BytesIO()
    info = write_increment(
        buf,
        extents,
        direction="forward",
        volume="va",
        first_offset=m.first_offset,
        last_offset=m.last_offset,
    )
    blob = buf.getvalue()
    store.put(m.forward.key, blob)
    ref = ObjectRef.of(m.forward.key, blob, extents=info.extents, logical_bytes=info.logical_bytes)
    store.put(m.key, replace(m, forward=ref).to_json())
    reseal(store, "va")  # as a writer of the store could: only the log's CRC catches it
    catalog = Catalog(store, "va")
    for direction in ("forward", "backward"):
        with pytest.raises(IntegrityError, match=f"{_log(m).key}: .* in {m.forward.key} .*CRC-32C"):
            restore_point(
                store, catalog, point, tmp_path / "o.img", direction=direction, progress=False
            )
    report = verify_volume(store, "va", read_data=True)
    assert _log(m).key in {p.key for p in report.problems}


def test_corrupt_checkpoint_chunk_is_named(
    store: MemoryStore, history: History, tmp_path: Path
) -> None:
    catalog = Catalog(store, "va")
    point = _point(catalog)
    plan = plan_restore(catalog, point, direction="backward")
    chunk = plan.path.chunk_keys[0]
    _flip(store, chunk)
    with pytest.raises(IntegrityError, match=chunk):
        restore_point(
            store, catalog, point, tmp_path / "o.img", direction="backward", progress=False
        )
    report = verify_volume(store, "va", read_data=True)
    assert chunk in {p.key for p in report.problems}


def test_verify_sizes_only_finds_missing_and_truncated_objects(
    store: MemoryStore, history: History
) -> None:
    assert verify_volume(store, "va").ok
    assert verify_volume(store, "va", read_data=True).ok
    catalog = Catalog(store, "va")
    m = catalog.manifest(2)
    _truncate(store, m.forward.key)
    _delete(store, _log(m).key)
    problems = {p.key: p.kind for p in verify_volume(store, "va").problems}
    assert problems == {m.forward.key: "integrity", _log(m).key: "gap"}


def test_missing_manifest_breaks_the_chain(
    store: MemoryStore, history: History, tmp_path: Path
) -> None:
    catalog = Catalog(store, "va")
    gone = catalog.windows[1]
    store.delete(gone.key)
    catalog = Catalog(store, "va")
    report = verify_volume(store, "va")
    assert [p.kind for p in report.problems] == ["gap"]
    point = catalog.windows[2].last  # the first checkpoint is later: forward starts empty
    with pytest.raises(NotRestorableError, match=f"{gone.first}-{gone.last}"):
        plan_restore(catalog, point, direction="forward")
    # rolling back from a later checkpoint does not cross the hole
    restore_point(store, catalog, point, tmp_path / "o.img", progress=False)
    assert (tmp_path / "o.img").read_bytes() == history.image_at("va", point)


def test_restore_across_a_recorded_gap_is_refused(history: History, tmp_path: Path) -> None:
    store = MemoryStore()
    write_store(
        store,
        history,
        POLICIES["count7"],
        checkpoint_last=False,
        gap_at={"va": 4},
        gap_breaks=False,
    )
    catalog = Catalog(store, "va")
    gap = catalog.gaps[0]
    after = catalog.windows[6].last
    with pytest.raises(NotRestorableError, match=f"gap of va at offset {gap.at_offset}"):
        restore_point(store, catalog, after, tmp_path / "o.img", progress=False)
    assert not (tmp_path / "o.img").exists()
    before = catalog.windows[2].last  # before the gap: still restorable
    restore_point(store, catalog, before, tmp_path / "o.img", progress=False)
    assert (tmp_path / "o.img").read_bytes() == history.image_at("va", before)


def test_points_after_an_unhealed_gap_are_not_restorable(history: History, tmp_path: Path) -> None:
    store = MemoryStore()
    write_store(store, history, POLICIES["count7"], gap_at={"va": 4})
    catalog = Catalog(store, "va")
    with pytest.raises(NotRestorableError, match="not consistent"):
        plan_restore(catalog, catalog.windows[5].last)
    assert catalog.restorable_span() == (history.baseline_end("va"), catalog.windows[3].last)


def test_points_after_the_newest_window_are_refused_across_a_recorded_gap(
    store: MemoryStore, history: History
) -> None:
    catalog = Catalog(store, "va")
    newest = catalog.windows[-1].last
    gap = Gap("va", "retention", newest + 3, newest, "", None, None, "deleted (test)", 0)
    store.put(gap.key, gap.to_json())
    catalog = Catalog(store, "va")
    plan = plan_restore(catalog, newest + 2, tail=True)
    assert plan.path.replay is not None and plan.path.replay.ref is None
    with pytest.raises(GapError, match=f"retention gap of va at offset {newest + 3}"):
        plan_restore(catalog, newest + 9, tail=True)


def _log(m: Manifest) -> ObjectRef:
    assert m.writelog is not None, "the faults act on windows with a write log"
    return m.writelog
