"""The window-close fast paths write exactly the bytes of the plain encoders."""

from __future__ import annotations

import io
import random

import pytest

from schemas.events import EventKind
from schemas.extents import Extent
from schemas.increment import write_increment
from schemas.writelog import LogRecord, read_log, write_event_log, write_log
from tests.streams_support import Volume


def test_event_log_equals_the_log_of_records() -> None:
    rng = random.Random(3)
    v = Volume("enc", 1 << 20)
    evs = [*v.start(), v.event(EventKind.BOOKMARK, name="b1")]
    evs += [
        v.write(rng.randrange(1 << 19), rng.randbytes(rng.randrange(1, 900))) for _ in range(40)
    ]
    evs += [v.event(EventKind.TRIM, 4096, length=512), v.write(7, b"x")]
    members = [(10 + 2 * i, e) for i, e in enumerate(evs)]
    flags = [rng.random() < 0.5 for _ in members]  # set on markers too: must be ignored
    span = {"volume": "enc", "first_offset": 10, "last_offset": members[-1][0]}
    fast, plain = io.BytesIO(), io.BytesIO()
    n = write_event_log(fast, members, flags, **span)  # type: ignore[arg-type]
    recs = [
        LogRecord.from_event(e, o, in_forward=f) for (o, e), f in zip(members, flags, strict=True)
    ]
    assert n == write_log(plain, recs, **span) == len(evs)  # type: ignore[arg-type]
    assert fast.getvalue() == plain.getvalue()
    assert list(read_log(fast.getvalue())) == recs


def test_increment_without_digest_has_the_same_bytes() -> None:
    exts = [Extent(0, 4, b"abcd"), Extent(4096, 512, None), Extent(8192, 3, b"xyz")]
    a, b = io.BytesIO(), io.BytesIO()
    span = {"volume": "enc", "first_offset": 0, "last_offset": 9}
    with_digest = write_increment(a, exts, direction="backward", **span)  # type: ignore[arg-type]
    without = write_increment(b, exts, direction="backward", digest=False, **span)  # type: ignore[arg-type]
    assert a.getvalue() == b.getvalue()
    assert len(with_digest.ranges_sha256) == 64 and without.ranges_sha256 == ""
    assert (without.extents, without.logical_bytes) == (3, 519)


def test_assemble_matches_a_byte_model() -> None:
    from schemas.extents import MAX_EXTENT
    from tests.assemble_reference import assemble

    rng = random.Random(5)
    size = 8 << 20
    v = Volume("asm", size)
    start = bytearray(size)
    start[1 << 20 : 3 << 20] = rng.randbytes(2 << 20)  # the image before the window
    v.model[:] = start
    evs = [v.write(100, rng.randbytes(5 << 19))]  # 2.5 MiB: three pieces
    evs += [
        v.write(rng.randrange(size - 9000), rng.randbytes(rng.randrange(1, 9000)))
        for _ in range(60)
    ]
    evs += [v.event(EventKind.ZERO, 1 << 20, length=MAX_EXTENT + 7), v.write(4 << 20, b"")]
    evs += [v.event(EventKind.TRIM, 6 << 20, length=4096), v.write(7 << 20, bytes(4096))]
    forward, backward, ranges = assemble(evs, lambda o, n: bytes(start[o : o + n]))
    for exts, want in ((forward, v.model), (backward, start)):
        assert [(e.offset, e.end) for e in exts] == [
            (p, min(e, p + MAX_EXTENT)) for s, e in ranges for p in range(s, e, MAX_EXTENT)
        ]
        for e in exts:
            assert e.payload() == bytes(want[e.offset : e.end])
            assert (e.data is None) == (not any(want[e.offset : e.end]))


def test_bad_extents_are_refused_before_anything_is_written() -> None:
    span = {"direction": "forward", "volume": "v", "first_offset": 0, "last_offset": 1}
    cases = [
        ([Extent(0, 10, bytes(10)), Extent(5, 10, bytes(10))], "unsorted, overlapping"),
        ([Extent(0, (1 << 20) + 1, None)], "too long"),
        ([Extent(0, 0, b"")], "too long"),
        ([Extent(0, 4, b"abc")], "3 data bytes for 4"),
        ([Extent(4096, 4, None), Extent(0, 4, b"abcd")], "unsorted, overlapping"),
    ]
    for exts, message in cases:
        buf = io.BytesIO()
        with pytest.raises(ValueError, match=message):
            write_increment(buf, exts, **span)  # type: ignore[arg-type]
        assert buf.getvalue() == b""


def test_log_refuses_unknown_kinds_and_unmatched_flags() -> None:
    span = {"volume": "v", "first_offset": 0, "last_offset": 1}
    bad = LogRecord(1, 1, "NOPE", 0, 0, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown kind 'NOPE'"):
        write_log(io.BytesIO(), [bad], **span)  # type: ignore[arg-type]
    v = Volume("flags", 1 << 20)
    pairs = [(0, v.write(0, b"a")), (1, v.write(1, b"b"))]
    with pytest.raises(ValueError, match="1 in_forward flags for 2 events"):
        write_event_log(io.BytesIO(), pairs, [True], volume="v", first_offset=0, last_offset=1)
