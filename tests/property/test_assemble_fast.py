"""Property: the fast paths of window assembly give exactly what simple references give.

``assemble_window`` (one sorted pass: single-event ranges without copies, tiled runs
joined, overlapping ranges overlaid) is checked against a bytearray model of the volume
before and after the window; its ``in_forward`` flags and :func:`in_forward_flags` against
a quadratic overlap check; ``Image.apply`` of the extents against the same models. Events
are unaligned and placed to overlap, touch, nest, repeat or miss earlier ones; their data
is random, all zeros, or zero only at its head or tail; some are larger than 1 MiB.
"""

from __future__ import annotations

import random
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.errors import VolumeError
from schemas.events import DATA_KINDS, EventKind, WriteEvent
from schemas.extents import MAX_EXTENT, Extent, union_ranges
from schemas.image import Image
from streams.assemble import assemble_window
from tests.assemble_reference import assemble, in_forward_flags
from tests.event_factory import make_event

SIZE = 3 * MAX_EXTENT + 123  # room for events over 1 MiB; not a multiple of anything
KINDS = [EventKind.WRITE, EventKind.BASELINE, EventKind.ZERO, EventKind.TRIM]
PLACES = ["anywhere", "touch_after", "touch_before", "overlap", "same", "inside", "near"]
FILLS = ["random", "zeros", "zero_head", "zero_tail"]
#: lengths of large events: at and around the 1 MiB piece size
BIG = [MAX_EXTENT - 1, MAX_EXTENT, MAX_EXTENT + 1, 2 * MAX_EXTENT + 1, 5 * MAX_EXTENT // 2]


def _fill(rng: random.Random, fill: str, length: int) -> bytes:
    if fill == "zeros" or not length:
        return bytes(length)
    data = bytearray(rng.randbytes(length).replace(b"\0", b"\1"))
    if fill == "zero_head":
        data[: max(1, length // 2)] = bytes(max(1, length // 2))
    elif fill == "zero_tail":
        data[1:] = bytes(length - 1)
    return bytes(data)


def _event(seq: int, kind: EventKind, offset: int, length: int, data: bytes) -> WriteEvent:
    return make_event(
        kind, offset, data, length=length, sequence=seq, timestamp_us=seq, volume_size=SIZE
    )


@st.composite
def windows(draw: st.DrawFn) -> tuple[list[WriteEvent], bytes]:
    """Change events of one window (zero-length WRITEs included) and the image before it."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    before = bytearray(SIZE)  # alternating runs of zeros and random bytes, a few long
    pos, data_run = 0, draw(st.booleans())
    while pos < SIZE:
        long_run = rng.randrange(20) == 0
        end = min(SIZE, pos + rng.randrange(1, 2 * MAX_EXTENT if long_run else 6000))
        if data_run:
            before[pos:end] = rng.randbytes(end - pos)
        pos, data_run = end, not data_run
    events: list[WriteEvent] = []
    for seq in range(draw(st.integers(0, 24))):
        kind = draw(st.sampled_from(KINDS))
        big = draw(st.integers(0, 19)) == 0
        length = rng.choice(BIG) if big else rng.randrange(1, 9000)
        place = draw(st.sampled_from(PLACES)) if events else "anywhere"
        prev = events[-1] if events else None
        if prev is None or place == "anywhere" or not prev.length:
            offset = rng.randrange(SIZE - length + 1)
        elif place == "touch_after":
            offset = prev.offset + prev.length
        elif place == "touch_before":
            offset = prev.offset - length
        elif place == "overlap":
            offset = prev.offset + prev.length - rng.randrange(1, length + 1)
        elif place == "same":
            offset, length = prev.offset, prev.length
        elif place == "inside":
            length = rng.randrange(1, prev.length + 1)
            offset = prev.offset + rng.randrange(prev.length - length + 1)
        else:  # near: a small gap after the previous event
            offset = prev.offset + prev.length + rng.randrange(1, 64)
        offset = max(0, min(offset, SIZE - length))
        if kind in DATA_KINDS and draw(st.integers(0, 29)) == 0:
            length = 0  # an empty write changes nothing
        data = _fill(rng, draw(st.sampled_from(FILLS)), length) if kind in DATA_KINDS else b""
        events.append(_event(seq, kind, offset, length, data))
    return events, bytes(before)


def _model(events: list[WriteEvent], before: bytes) -> bytes:
    after = bytearray(before)
    for ev in events:
        after[ev.offset : ev.offset + ev.length] = (
            ev.data if ev.kind in DATA_KINDS else bytes(ev.length)
        )
    return bytes(after)


def _union(events: list[WriteEvent]) -> list[tuple[int, int]]:
    """Touched bytes as maximal runs (touching events form one run): a byte mask."""
    mask = bytearray(SIZE + 1)
    for ev in events:
        mask[ev.offset : ev.offset + ev.length] = b"\1" * ev.length
    return [m.span() for m in re.finditer(rb"\x01+", mask)]


def _flags(events: list[WriteEvent]) -> list[bool]:
    """The rule, quadratically: a nonempty WRITE/BASELINE that no later (nonempty) event
    shares a byte with."""
    return [
        e.length > 0
        and e.kind in DATA_KINDS
        and not any(
            f.length and f.offset < e.offset + e.length and e.offset < f.offset + f.length
            for f in events[k + 1 :]
        )
        for k, e in enumerate(events)
    ]


def _check_extents(exts: list[Extent], ranges: list[tuple[int, int]], want: bytes) -> None:
    assert [(e.offset, e.end) for e in exts] == [
        (p, min(end, p + MAX_EXTENT)) for s, end in ranges for p in range(s, end, MAX_EXTENT)
    ]
    for e in exts:
        assert type(e) is Extent
        assert e.payload() == want[e.offset : e.end]
        assert (e.data is None) == (want[e.offset : e.end] == bytes(e.length))


def _check_window(events: list[WriteEvent], before: bytes) -> None:
    reads: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        reads.append((offset, offset + length))
        return before[offset : offset + length]

    got = assemble_window(events, read)
    ranges = _union(events)
    assert got.ranges == ranges and reads == ranges  # one read per merged range
    _check_extents(got.forward, ranges, _model(events, before))
    _check_extents(got.backward, ranges, before)
    assert got.in_forward == _flags(events) == in_forward_flags(events)
    assert assemble(events, lambda o, n: before[o : o + n]) == got[:3]


@settings(max_examples=150)
@given(window=windows())
def test_assembly_equals_the_byte_model(window: tuple[list[WriteEvent], bytes]) -> None:
    _check_window(*window)


@settings(max_examples=50)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 12), kinds=st.lists(st.sampled_from(KINDS)))
def test_tiled_runs_across_piece_edges(seed: int, n: int, kinds: list[EventKind]) -> None:
    """Touching events (a sequential run, in shuffled event order) whose range crosses
    1 MiB piece edges inside events: each piece joins the right slices."""
    rng = random.Random(seed)
    pos = rng.randrange(5000)
    events = []
    for seq in range(n):
        length = rng.randrange(1, 5000) if rng.random() < 0.5 else rng.randrange(1, SIZE // 2)
        if pos + length > SIZE:
            break
        kind = kinds[seq % len(kinds)] if kinds else EventKind.WRITE
        data = _fill(rng, rng.choice(FILLS), length) if kind in DATA_KINDS else b""
        events.append(_event(seq, kind, pos, length, data))
        pos += length
    rng.shuffle(events)
    _check_window(events, rng.randbytes(SIZE))


@settings(max_examples=40)
@given(window=windows())
def test_image_apply_rolls_forward_and_back(window: tuple[list[WriteEvent], bytes]) -> None:
    events, before = window
    forward, backward, _, _ = assemble_window(events, lambda o, n: before[o : o + n])
    with tempfile.TemporaryDirectory() as tmp, Image(Path(tmp) / "v.img", SIZE) as img:
        img.apply([Extent(0, SIZE, before)])
        img.apply(forward)
        assert img.pread(0, SIZE) == _model(events, before)
        img.apply(backward)
        assert img.pread(0, SIZE) == before


@settings(max_examples=300)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 60), kinds=st.lists(st.sampled_from(KINDS)))
def test_flags_equal_the_quadratic_check(seed: int, n: int, kinds: list[EventKind]) -> None:
    """Many small events on a small volume: dense overlap clusters next to lone events."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        kind = kinds[i % len(kinds)] if kinds else EventKind.WRITE
        length = rng.randrange(30)
        data = bytes(length) if kind in DATA_KINDS else b""
        events.append(
            make_event(kind, rng.randrange(200), data, length=length, sequence=i, timestamp_us=i)
        )
    assert in_forward_flags(events) == _flags(events)
    assert assemble_window(events, lambda o, k: bytes(k)).in_forward == _flags(events)


def test_apply_refuses_an_extent_outside_the_image() -> None:
    with tempfile.TemporaryDirectory() as tmp, Image(Path(tmp) / "v.img", 100) as img:
        with pytest.raises(VolumeError, match=r"range \[95, 105\) outside image .* of 100 bytes"):
            img.apply([Extent(0, 3, b"abc"), Extent(95, 10, bytes(10))])
        assert img.pread(0, 3) == b"abc"  # the extents before it are written
        with pytest.raises(VolumeError, match=r"range \[-1, 1\) outside image"):
            img.apply([Extent(-1, 2, None)])


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), max_size=40))
def test_union_ranges_equals_a_byte_mask(ranges: list[tuple[int, int]]) -> None:
    mask = bytearray(302)
    for start, end in ranges:
        mask[start:end] = b"\1" * max(0, end - start)
    assert union_ranges(ranges) == [m.span() for m in re.finditer(rb"\x01+", mask)]
