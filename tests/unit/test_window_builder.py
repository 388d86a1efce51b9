"""Window policies and the partition processor: determinism, gaps, dead letters, commits."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.errors import UsageError
from connectors.store.memory import MemoryStore
from schemas import keys
from schemas.events import EventKind, WriteEvent
from schemas.gaps import list_gaps
from schemas.manifest import list_window_keys, load_manifest
from streams.options import BuildOptions
from streams.outcome import Record
from streams.partition import PartitionProcessor
from streams.window import WindowCutter, WindowPolicy
from tests.streams_support import Volume, blob_of, feed_events, tick


def _proc(
    tmp: Path, policy: WindowPolicy, store: MemoryStore | None = None, start: int = 0
) -> PartitionProcessor:
    opts = BuildOptions(
        topic="t",
        partition=0,
        workdir=tmp,
        policy=policy,
        checkpoint_windows=2,
        chunk_size=4096,
        clock=lambda: 42,
    )
    p = PartitionProcessor(store or MemoryStore(), opts)
    p.open(start)
    return p


def test_time_deadline_is_aligned_and_clamped() -> None:
    c = WindowCutter(WindowPolicy(seconds=1.0))
    assert c.add(c.clamp(2_500_000), 10, 10) is None
    assert c.deadline_us == 3_000_000
    assert c.close_before(c.clamp(2_999_999)) is None
    assert c.close_before(c.clamp(1_000_000)) is None  # backwards time clamps to 2.999999 s
    assert c.close_before(c.clamp(3_000_000)) == "time"


def test_count_bytes_and_cap() -> None:
    c = WindowCutter(WindowPolicy(count=3, bytes=100, max_bytes=50))
    assert c.add(0, 10, 10) is None
    assert c.add(0, 0, 45) == "size"
    c.closed()
    assert c.add(0, 1, 1) is None and c.add(0, 1, 1) is None and c.add(0, 1, 1) == "count"


def test_adaptive_period_rule() -> None:
    p = WindowPolicy(adaptive=True, adaptive_target=1000, adaptive_min=0.01, adaptive_max=2.0)
    c = WindowCutter(p)
    c.add(0, 100, 100)
    assert c.period_us == 10_000  # first period = min
    c.add(5_000, 400, 400)
    c.closed()  # 500 bytes in 5 ms -> target 1000 bytes needs 10 ms
    c.add(1_000_000, 0, 0)
    assert c.period_us == 10_000
    c.closed()  # no bytes -> max
    c.add(2_000_000, 0, 0)
    assert c.period_us == 2_000_000
    assert c.adaptive_period(1_000_000, 10) == 2_000_000  # quiet: clamped to max
    assert c.adaptive_period(1, 10**9) == 10_000  # busy: clamped to min


def test_policy_rejects_bad_values() -> None:
    with pytest.raises(UsageError):
        WindowPolicy(seconds=0)
    with pytest.raises(UsageError):
        WindowPolicy(seconds=1.0, adaptive=True)


def _workload() -> list[WriteEvent]:
    v = Volume("db", 3 * 4096 + 7)
    evs = v.start()
    for i in range(40):
        evs.append(v.write((i * 977) % (v.size - 600), bytes([i]) * (100 + 13 * i), dt_us=300_000))
        if i % 9 == 0:
            evs.append(v.event(EventKind.TRIM, 5, length=700))
        if i == 20:
            evs.append(v.event(EventKind.BOOKMARK, name="half"))
    return evs


def test_determinism_same_keys_and_bytes(tmp_path: Path) -> None:
    evs = list(enumerate(_workload()))
    stores = []
    for run in ("a", "b"):
        p = _proc(tmp_path / run, WindowPolicy(seconds=1.0, count=7))
        for i in range(0, len(evs), 5):  # different batching must not matter either
            feed_events(p, evs[i : i + 5])
        stores.append(blob_of(p.store))
        p.close()
    assert stores[0] == stores[1]
    assert any(k.endswith(".fwd") for k in stores[0])
    assert any("/checkpoints/" in k for k in stores[0])


def test_batching_does_not_change_windows(tmp_path: Path) -> None:
    evs = list(enumerate(_workload()))
    a = _proc(tmp_path / "a", WindowPolicy(seconds=2.0))
    feed_events(a, evs)
    b = _proc(tmp_path / "b", WindowPolicy(seconds=2.0))
    for e in evs:
        feed_events(b, [e])
    assert blob_of(a.store) == blob_of(b.store)


def test_tick_closes_quiet_window_and_commit_offset(tmp_path: Path) -> None:
    v = Volume("q", 4096)
    p = _proc(tmp_path, WindowPolicy(seconds=1.0))
    evs = [*v.start(), v.write(0, b"abc")]
    out = feed_events(p, list(enumerate(evs)))
    assert out.windows == [] and out.commit_offset == 0
    deadline = p.next_deadline()
    assert deadline is not None
    out = feed_events(p, [(4, tick(deadline - 1))])
    assert out.windows == [] and out.commit_offset == 0
    out = feed_events(p, [(5, tick(deadline))])
    assert [(m.first_offset, m.last_offset, m.close_reason) for m in out.windows] == [
        (0, 3, "tick")
    ]
    assert out.commit_offset == 6
    m = out.windows[0]
    assert m.consistent and m.restorable_from == 2 and m.events == 4


def test_sequence_gap_recorded_and_window_closed_before(tmp_path: Path) -> None:
    v = Volume("g", 4096)
    evs = [*v.start(), v.write(0, b"one")]
    v.seq += 3  # three events never arrive
    evs += [
        v.write(10, b"two"),
        v.event(EventKind.BASELINE_END),
        v.write(1, b"3"),
        v.write(2, b"4"),
    ]
    p = _proc(tmp_path, WindowPolicy(count=100))
    out = feed_events(p, list(enumerate(evs)))
    assert [g.kind for g in out.gaps] == ["sequence"]  # believed once 3 events continue it
    gap = list_gaps(p.store, "g")[0]
    assert (gap.at_offset, gap.after_offset, gap.expected_sequence, gap.got_sequence) == (
        4,
        3,
        4,
        7,
    )
    (m,) = out.windows
    assert (m.first_offset, m.last_offset, m.close_reason, m.consistent) == (0, 3, "gap", True)
    feed_events(p, [(8, tick(10**18))])  # count policy: the tick does not close anything
    assert p.commit_offset == 4


def test_dead_letters_consume_nothing_and_protection_continues(tmp_path: Path) -> None:
    v = Volume("d", 4096)
    evs = [*v.start(), v.write(0, b"ok")]
    bad = v.write(4000, bytes(200))  # past the volume end: sequence 4 is lost with it
    evs += [bad, v.write(5, b"later")]
    p = _proc(tmp_path, WindowPolicy(count=3))
    recs: list[Record] = [(o, None, p.codec.encode(e.to_record())) for o, e in enumerate(evs)]
    recs.insert(4, (4, b"k", b"garbage"))
    recs = [(o, k, val) for o, (_, k, val) in enumerate(recs)]
    out = p.feed(recs)
    assert [(d.offset, d.error) for d in out.dead_letters] == [
        (4, "DecodeError"),
        (5, "InvalidEventError"),
    ]
    assert out.dead_letters[1].volume == "d" and "past the volume end" in out.dead_letters[1].reason
    assert out.gaps == [] and p.held == 1  # sequence 5 is held: 4 never came
    again = p.feed([(7, None, recs[3][2])])  # a duplicate of an applied sequence
    assert [d.error for d in again.dead_letters] == ["StaleEventError"]
    assert "duplicate" in again.dead_letters[0].reason
    assert p.commit_offset == 3  # the open window holds 3; 6 is held
    out = feed_events(p, [(8 + i, v.write(9 + i, b"more")) for i in range(3)])
    assert [(g.kind, g.at_offset, g.expected_sequence, g.got_sequence) for g in out.gaps] == [
        ("sequence", 6, 4, 5)
    ]
    manifests = [load_manifest(p.store, k) for *_, k in list_window_keys(p.store, "d")]
    assert [(m.first_offset, m.last_offset, m.events) for m in manifests] == [
        (0, 2, 3),
        (3, 3, 1),
        (6, 9, 3),
    ]
    assert manifests[-1].last_sequence == v.seq - 2 and not manifests[-1].consistent


def test_unclean_session_is_a_gap(tmp_path: Path) -> None:
    v = Volume("s", 4096)
    evs = [*v.start(), v.write(0, b"x")]
    v.session, v.seq = "b" * 32, 0
    evs += [v.event(EventKind.SESSION_START, name="a" * 32), v.write(1, b"y")]
    evs += [v.event(EventKind.BASELINE_START), v.write(2, b"z")]  # the new session goes on
    p = _proc(tmp_path, WindowPolicy(count=50))
    out = feed_events(p, list(enumerate(evs)))
    assert [(g.kind, g.at_offset) for g in out.gaps] == [("session", 4)]
    assert p.volumes["s"].line.fenced == ["a" * 32]  # the superseded session is fenced


def test_restart_skips_durable_records(tmp_path: Path) -> None:
    evs = list(enumerate(_workload()))
    store = MemoryStore()
    p = _proc(tmp_path, WindowPolicy(count=5), store)
    out = feed_events(p, evs[:23])
    committed = out.commit_offset
    p.close()
    q = _proc(tmp_path, WindowPolicy(count=5), store, start=committed)
    feed_events(q, evs[committed - 3 :])  # replays from before the commit point are skipped
    ref = _proc(tmp_path / "ref", WindowPolicy(count=5))
    feed_events(ref, evs)
    got = {k: v for k, v in blob_of(store).items() if "/checkpoints/" not in k}
    want = {k: v for k, v in blob_of(ref.store).items() if "/checkpoints/" not in k}
    assert got == want
    assert keys.partition_marker_key("t", 0, "db") in got


def test_retention_gap_when_records_were_deleted(tmp_path: Path) -> None:
    evs = list(enumerate(_workload()))
    store = MemoryStore()
    p = _proc(tmp_path, WindowPolicy(count=5), store)
    out = feed_events(p, evs[:23])
    p.close()
    q = _proc(tmp_path, WindowPolicy(count=5), store, start=out.commit_offset)
    later = feed_events(q, evs[out.commit_offset + 2 :])
    assert [(g.kind, g.at_offset) for g in later.gaps] == [("retention", out.commit_offset + 2)]


def test_checkpoints_after_resume_match_the_model(tmp_path: Path) -> None:
    from schemas.checkpoint import list_checkpoints, load_checkpoint, materialize_checkpoint
    from schemas.image import Image
    from tests.streams_support import states_after

    size = 8 * 4096
    v = Volume("cp", size)
    evs = [*v.start(), v.write(10, b"chunk0"), v.write(5 * 4096 + 1, b"chunk5")]
    evs += [v.write(k * 4096 + 3, b"chunk%d" % k) for k in (1, 2, 3)]
    numbered = list(enumerate(evs))
    store = MemoryStore()

    def proc(start: int) -> PartitionProcessor:
        o = BuildOptions(
            topic="t",
            partition=0,
            workdir=tmp_path,
            policy=WindowPolicy(count=1),
            checkpoint_windows=4,
            chunk_size=4096,
        )
        p = PartitionProcessor(store, o)
        p.open(start)
        return p

    p = proc(0)
    feed_events(p, numbered[:5])  # windows 0..4, a checkpoint after window 3
    p.close()  # crash after window 4 (chunk 5 written after the checkpoint)
    q = proc(5)
    feed_events(q, numbered[5:])  # windows 5..7, the next checkpoint after window 7
    q.close()
    states = states_after(evs, list(range(len(evs))), size)
    assert list_checkpoints(store, "cp") == [3, 7]
    for off in (3, 7):
        with Image(tmp_path / f"cp{off}", size) as img:
            materialize_checkpoint(store, load_checkpoint(store, "cp", off), img)
            assert img.pread(0, size) == states[off], f"checkpoint at {off} is wrong"
