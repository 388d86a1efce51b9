"""Property: windows built from random unaligned, overlapping writes under random policies
are exact — forward(start) = end, backward(end) = start, and the chain equals a model —
also across crashes that restart the processor from the committed offset, with windows
stored inline or in the background."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from connectors.store.memory import MemoryStore
from schemas.codec import AvroCodec
from schemas.events import EventKind
from streams.options import BuildOptions
from streams.partition import PartitionProcessor
from streams.window import WindowPolicy
from tests.streams_support import Volume, check_chain, tick

policies = st.one_of(
    st.builds(WindowPolicy, seconds=st.sampled_from([0.002, 0.005, 0.05])),
    st.builds(WindowPolicy, count=st.integers(1, 7)),
    st.builds(WindowPolicy, bytes=st.integers(1, 3000)),
    st.builds(
        WindowPolicy,
        adaptive=st.just(True),
        adaptive_target=st.integers(100, 5000),
        adaptive_min=st.just(0.001),
        adaptive_max=st.just(0.02),
    ),
    st.builds(
        WindowPolicy,
        seconds=st.just(0.004),
        count=st.integers(2, 9),
        max_bytes=st.integers(50, 4000),
    ),
)

op = st.tuples(
    st.sampled_from(["w", "w", "w", "w", "z", "t", "b"]),
    st.integers(0, 10**6),
    st.integers(1, 1500),
    st.integers(-2000, 6000),  # time step (backwards steps are clamped)
    st.binary(min_size=1, max_size=3),
)


@given(
    size=st.integers(1, 4096),
    policy=policies,
    ops=st.lists(op, min_size=1, max_size=50),
    cuts=st.lists(st.floats(0, 1), max_size=4),
    crashes=st.lists(st.floats(0, 1), max_size=2),
    ticks=st.lists(st.integers(0, 60), max_size=3),
    close_threads=st.sampled_from([0, 2]),
)
def test_windows_match_reference_model(
    size: int,
    policy: WindowPolicy,
    ops: list[tuple[str, int, int, int, bytes]],
    cuts: list[float],
    crashes: list[float],
    ticks: list[int],
    close_threads: int,
) -> None:
    vol = Volume("v", size)
    events = vol.start()
    states: dict[int, bytes] = {-1: bytes(size)}
    for kind, off, length, dt, pattern in ops:
        off %= size
        length = min(length, size - off)
        if kind == "w":
            data = (pattern * (length // len(pattern) + 1))[:length]
            events.append(vol.event(EventKind.WRITE, off, data, dt_us=dt))
        elif kind in ("z", "t"):
            k = EventKind.ZERO if kind == "z" else EventKind.TRIM
            events.append(vol.event(k, off, length=length, dt_us=dt))
        else:
            events.append(vol.event(EventKind.BOOKMARK, name="b", dt_us=dt))
        states_key = len(events) - 1
        states[states_key] = bytes(vol.model)
    for i in range(3):  # the start markers leave the volume all zeros
        states[i] = bytes(size)
    # interleave TICKs, then number the records by offset
    stream = list(events)
    for pos in sorted(ticks, reverse=True):
        p = min(pos, len(stream))
        stream.insert(p, tick(stream[p - 1].timestamp_us if p else 0))
    stream.append(tick(vol.t_us + 10**9))
    codec = AvroCodec("WriteEvent")
    records = [(o, None, codec.encode(e.to_record())) for o, e in enumerate(stream)]
    states_by_offset: dict[int, bytes] = {-1: bytes(size)}
    ev_index = 0
    for o, e in enumerate(stream):
        if e.kind is not EventKind.TICK:
            states_by_offset[o] = states[ev_index]
            ev_index += 1

    with tempfile.TemporaryDirectory() as tmp:
        store = MemoryStore()
        opts = BuildOptions(
            topic="t",
            partition=0,
            workdir=Path(tmp),
            policy=policy,
            checkpoint_windows=3,
            chunk_size=512,
            close_threads=close_threads,
        )
        proc = PartitionProcessor(store, opts)
        proc.open(0)
        pos = 0
        n = len(records)
        crash_at = {int(c * n) for c in crashes}
        stops = sorted({int(c * n) for c in cuts} | crash_at | {n})
        for stop in stops:
            if stop <= pos:
                continue
            out = proc.feed(records[pos:stop])
            assert not out.dead_letters and not out.gaps
            pos = stop
            if stop in crash_at and stop < len(records):
                committed = out.commit_offset  # windows still being stored are not in it
                proc.close()
                if stop % 2:  # lose the local image too: rebuild from checkpoints
                    for f in Path(tmp).iterdir():
                        f.unlink()
                proc = PartitionProcessor(store, opts)
                proc.open(committed)
                pos = committed
                proc.feed(records[pos:stop])
                pos = stop
        proc.drain()
        manifests = check_chain(store, "v", size, states_by_offset)
        last_event = max(o for o, e in enumerate(stream) if e.kind is not EventKind.TICK)
        baseline_end = next(o for o, e in enumerate(stream) if e.kind is EventKind.BASELINE_END)
        if policy.timed:  # the final TICK closes the last window
            assert manifests and manifests[-1].last_offset == last_event
        if manifests:
            img = (Path(tmp) / "v.img").read_bytes()
            assert img == states_by_offset[manifests[-1].last_offset]
            for m in manifests:
                assert m.consistent == (m.last_offset >= baseline_end)
                expect_from = max(m.first_offset, baseline_end) if m.consistent else None
                assert m.restorable_from == expect_from
        proc.close()
