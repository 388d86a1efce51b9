"""Hypothesis: random unaligned, overlapping writes, zeros and trims through the API,
replayed from the real topic, give the backing file byte for byte; returned offsets are
the real offsets of the events; sequences have no gaps; split writes stay exact; any
async in-flight bound works."""

from __future__ import annotations

import filecmp
import random
import tempfile
import uuid
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.intercept import InterceptedVolume
from connectors.intercept.replay import apply_events, read_events
from schemas.events import EventKind

SIZE = 256 * 1024
PIECE = 16 * 1024
TOPIC = f"test.capture.prop.{uuid.uuid4().hex[:8]}"


@st.composite
def operation(draw: st.DrawFn) -> tuple[str, int, int, int]:
    kind = draw(st.sampled_from(["write", "write", "write", "zero", "trim"]))
    offset = draw(st.integers(0, SIZE - 1))
    length = draw(st.integers(1, min(SIZE - offset, 3 * PIECE + 100)))
    return kind, offset, length, draw(st.integers(0, 2**32))


@settings(max_examples=15)
@given(
    ops=st.lists(operation(), min_size=1, max_size=25),
    mode=st.sampled_from(["sync", "async"]),
    in_flight=st.sampled_from([1, 20_000, 64 * 1024 * 1024]),
)
def test_replay_equals_backing_file(
    bootstrap: str, ops: list[tuple[str, int, int, int]], mode: str, in_flight: int
) -> None:
    name = f"p-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory() as tmp:
        backing = Path(tmp) / "vol.img"
        returned: list[tuple[int, str, int, int]] = []
        with InterceptedVolume(
            backing,
            name,
            SIZE,
            bootstrap_servers=bootstrap,
            topic=TOPIC,
            mode=mode,  # type: ignore[arg-type]
            max_event_data=PIECE,
            max_in_flight_bytes=in_flight,
        ) as vol:
            start = vol.session_offset
            for kind, offset, length, seed in ops:
                if kind == "write":
                    data = random.Random(seed).randbytes(length)
                    got = vol.write(offset, data)
                else:
                    got = getattr(vol, kind)(offset, length)
                returned.append((got, kind, offset, length))
            flushed = vol.flush()
        records = read_events(bootstrap, TOPIC, volume=name, start=start)
        assert [r.event.sequence for r in records] == list(range(len(records)))
        assert {r.event.session for r in records} == {vol.session}
        changes = [
            r for r in records if r.event.kind in (EventKind.WRITE, EventKind.ZERO, EventKind.TRIM)
        ]
        expected_events = sum(-(-n // PIECE) if k == "write" else 1 for _, k, _, n in returned)
        assert len(changes) == expected_events
        assert flushed == changes[-1].offset
        by_offset = {r.offset: r.event for r in records}
        for got, kind, offset, length in returned:
            if mode == "async":
                assert got == -1
                continue
            event = by_offset[got]
            assert event.kind == EventKind(kind.upper())
            assert event.offset + event.length == offset + length  # the last piece
            assert event.length <= PIECE or kind != "write"
        apply_events(records, Path(tmp) / "replayed.img", SIZE)
        assert filecmp.cmp(backing, Path(tmp) / "replayed.img", shallow=False)
