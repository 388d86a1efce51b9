"""The direct container encoder writes exactly fastavro's bytes (``write_container``).

Increments and write logs encode their records column-wise (``schemas.avropieces.encode_pieces``)
and cut and compress blocks themselves (``write_pieces``); these properties pin the output
to the general fastavro path for the same records, over the whole Avro long range (both
the whole-column and the per-value varint paths), empty and multi-block files, and check
that the readers return what was written.
"""

from __future__ import annotations

import io
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import load_schema
from schemas.avrofile import SYNC_INTERVAL
from schemas.avropieces import Column, Raw, encode_pieces, long_bytes
from schemas.events import EventKind, WriteEvent, crc32c
from schemas.extents import MAX_EXTENT, Extent
from schemas.increment import ranges_digest, read_increment, write_increment
from schemas.writelog import LogRecord, read_log, write_event_log, write_log
from tests.avro_reference import write_container
from tests.strategies import LONGS

#: Bytes that extent and record data are cut from (random: zstd cannot shrink them).
POOL = random.Random(7).randbytes(2 * MAX_EXTENT)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Longs near the edge of the whole-column path (2**55) and of int64.
EDGES = st.sampled_from([(1 << 55) - 1, 1 << 55, -(1 << 55), -(1 << 55) - 1, 1 << 49, 128, 0])
ANY_LONG = st.one_of(LONGS, EDGES, st.integers(-300, 1 << 40))
NAMES = st.one_of(st.just(""), st.text(max_size=20), st.sampled_from(["bm-ü", "снимок", "📸"]))
#: Data sizes: mostly small, some large enough that a few cross the 1 MiB block size.
SIZES = st.one_of(st.integers(1, 5000), st.integers(200_000, MAX_EXTENT))


def data_of(size: int, seed: int) -> bytes:
    start = seed % (len(POOL) - size + 1)
    return POOL[start : start + size]


@st.composite
def extent_lists(draw: st.DrawFn) -> list[Extent]:
    """Sorted, non-overlapping extents (zero and data, 1 B to 1 MiB) at offsets up to 2**62."""
    shape = draw(st.lists(st.tuples(st.integers(0, 1 << 30), SIZES, st.booleans()), max_size=12))
    span = sum(gap + size for gap, size, _ in shape)
    base = draw(st.one_of(st.integers(0, 1 << 20), st.integers(0, (1 << 62) - span)))
    out, pos = [], base
    for gap, size, zero in shape:
        pos += gap
        out.append(Extent(pos, size, None if zero else data_of(size, pos)))
        pos += size
    return out


def extent_record(ext: Extent) -> dict[str, Any]:
    data = ext.data or b""
    return {
        "offset": ext.offset,
        "length": ext.length,
        "zero": ext.data is None,
        "data": data,
        "crc32c": crc32c(data) if ext.data is not None else 0,
    }


@SETTINGS
@given(exts=extent_lists(), direction=st.sampled_from(["forward", "backward"]))
def test_increment_bytes_equal_fastavro_and_read_back(exts: list[Extent], direction: str) -> None:
    span = {"volume": "vol-ü", "first_offset": 5, "last_offset": 1 << 40}
    fast = io.BytesIO()
    info = write_increment(fast, exts, direction=direction, **span)  # type: ignore[arg-type]
    plain = io.BytesIO()
    meta = {
        "kcdp.format": "increment",
        "kcdp.version": "1",
        "kcdp.direction": direction,
        "kcdp.volume": "vol-ü",
        "kcdp.first_offset": "5",
        "kcdp.last_offset": str(1 << 40),
    }
    write_container(plain, load_schema("Extent"), [extent_record(e) for e in exts], meta)
    assert fast.getvalue() == plain.getvalue()
    assert list(read_increment(fast.getvalue(), expect_direction=direction)) == exts
    assert (info.extents, info.logical_bytes) == (len(exts), sum(e.length for e in exts))
    assert info.ranges_sha256 == ranges_digest(exts)


@st.composite
def log_records(draw: st.DrawFn, *, valid: bool) -> list[LogRecord]:
    """Write log records; ``valid``: what read_log accepts (rising Kafka offsets, data
    matching length and CRC), else any field over its whole Avro range."""
    count = draw(st.integers(0, 14))
    ko = draw(st.integers(-1, 1 << 62)) if valid else 0
    out = []
    for _ in range(count):
        kind = draw(st.sampled_from(list(EventKind)))
        in_forward = draw(st.booleans())
        size = draw(st.one_of(st.just(0), SIZES))
        data = b"" if in_forward and valid else data_of(size, draw(st.integers(0, 1 << 30)))
        if valid:
            ko += draw(st.integers(1, 1 << 40))
            data_kind = kind in (EventKind.WRITE, EventKind.BASELINE)
            in_forward = in_forward and data_kind
            data = data if data_kind and not in_forward else b""
            length = len(data) if data_kind and not in_forward else draw(ANY_LONG)
            crc = crc32c(data) if data_kind and not in_forward else draw(ANY_LONG)
        else:
            ko, length, crc = draw(ANY_LONG), draw(ANY_LONG), draw(ANY_LONG)
        out.append(
            LogRecord(
                kafka_offset=ko,
                sequence=draw(st.one_of(st.just(-1), ANY_LONG)),
                kind=kind,
                offset=draw(ANY_LONG),
                length=length,
                timestamp_us=draw(ANY_LONG),
                crc32c=crc,
                data=data,
                name=draw(NAMES),
                in_forward=in_forward,
            )
        )
    return out


LOG_META = {"volume": "vol", "first_offset": 0, "last_offset": 99}


def fastavro_log(records: list[dict[str, Any]]) -> bytes:
    meta = {
        "kcdp.format": "writelog",
        "kcdp.version": "1",
        "kcdp.volume": "vol",
        "kcdp.first_offset": "0",
        "kcdp.last_offset": "99",
    }
    buf = io.BytesIO()
    write_container(buf, load_schema("WriteLogRecord"), records, meta)
    return buf.getvalue()


@SETTINGS
@given(recs=log_records(valid=False))
def test_write_log_bytes_equal_fastavro(recs: list[LogRecord]) -> None:
    fast = io.BytesIO()
    assert write_log(fast, recs, **LOG_META) == len(recs)  # type: ignore[arg-type]
    assert fast.getvalue() == fastavro_log([r.to_record() for r in recs])


@SETTINGS
@given(recs=log_records(valid=True))
def test_write_log_reads_back(recs: list[LogRecord]) -> None:
    fast = io.BytesIO()
    write_log(fast, recs, **LOG_META)  # type: ignore[arg-type]
    assert fast.getvalue() == fastavro_log([r.to_record() for r in recs])
    assert list(read_log(fast.getvalue())) == recs


@SETTINGS
@given(recs=log_records(valid=False), flags=st.lists(st.booleans(), min_size=14, max_size=14))
def test_event_log_bytes_equal_fastavro(recs: list[LogRecord], flags: list[bool]) -> None:
    # hand-built, not tests.event_factory: raw fields of (also invalid) records, as drawn
    members = [
        (
            r.kafka_offset,
            WriteEvent(
                group="g",
                volume="vol",
                sequence=r.sequence,
                kind=r.kind,
                timestamp_us=r.timestamp_us,
                offset=r.offset,
                length=r.length,
                data=r.data,
                crc32c=r.crc32c,
                name=r.name,
            ),
        )
        for r in recs
    ]
    flags = flags[: len(members)]
    fast = io.BytesIO()
    assert write_event_log(fast, members, flags, **LOG_META) == len(recs)  # type: ignore[arg-type]
    want = [
        LogRecord.from_event(ev, ko, in_forward=f).to_record()
        for (ko, ev), f in zip(members, flags, strict=True)
    ]
    assert fast.getvalue() == fastavro_log(want)


def test_multi_block_files_cut_where_fastavro_cuts() -> None:
    """Blocks end after the record that reaches SYNC_INTERVAL: many small records (more
    than one encoding chunk, zero runs among them) and records that alone exceed it."""
    exts = [Extent(i * 8192, 4096, None if i % 7 == 3 else data_of(4096, i)) for i in range(2600)]
    exts += [
        Extent((1 << 30) + i * MAX_EXTENT, MAX_EXTENT, data_of(MAX_EXTENT, i)) for i in range(3)
    ]
    fast, plain = io.BytesIO(), io.BytesIO()
    info = write_increment(
        fast, exts, direction="backward", volume="v", first_offset=0, last_offset=0
    )
    meta = {
        "kcdp.format": "increment",
        "kcdp.version": "1",
        "kcdp.direction": "backward",
        "kcdp.volume": "v",
        "kcdp.first_offset": "0",
        "kcdp.last_offset": "0",
    }
    write_container(plain, load_schema("Extent"), [extent_record(e) for e in exts], meta)
    assert sum(e.length for e in exts) > 4 * SYNC_INTERVAL
    assert fast.getvalue() == plain.getvalue()
    assert info.ranges_sha256 == ranges_digest(exts)
    assert list(read_increment(fast.getvalue())) == exts


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.tuples(ANY_LONG, ANY_LONG, st.binary(max_size=8)), max_size=40),
    cut_first=st.booleans(),
)
def test_encode_pieces_equals_per_value_encoding(
    rows: list[tuple[int, int, bytes]], cut_first: bool
) -> None:
    raws = [bytes(b % 127 + 1 for b in raw) for _, _, raw in rows]  # raw bytes are 0x01..0x7f
    layout: list[Column] = [
        [a for a, _, _ in rows],
        Raw([int.from_bytes(r, "little") for r in raws]),
        [b for _, b, _ in rows],
    ]
    layout.insert(1 if cut_first else 3, None)
    want: list[bytes] = []
    cur = b""
    for (a, b, _), raw in zip(rows, raws, strict=True):
        for col in layout:
            if col is None:
                want.append(cur)
                cur = b""
            elif isinstance(col, Raw):
                cur += raw
            else:
                cur += long_bytes(a if col is layout[0] else b)
    assert encode_pieces(layout, len(rows)) == [*want, cur]


def extent_record_size(ext: Extent) -> int:
    data = ext.data or b""
    crc = crc32c(data) if ext.data is not None else 0
    return (
        len(long_bytes(ext.offset))
        + 2 * len(long_bytes(ext.length))
        + 1
        + len(data)
        + len(long_bytes(crc))
    )


def test_block_ends_at_exactly_sync_interval_bytes() -> None:
    """A block of exactly SYNC_INTERVAL bytes ends there; one byte less takes the next
    record too (fastavro's rule), so both files differ from each other and match fastavro."""
    first = Extent(0, 600_000, data_of(600_000, 1))
    outs = []
    for want in (SYNC_INTERVAL, SYNC_INTERVAL - 1):
        size = want - extent_record_size(first) - 12
        while True:
            second = Extent(1 << 20, size, data_of(size, 2))
            total = extent_record_size(first) + extent_record_size(second)
            if total == want:
                break
            size += want - total
        exts = [first, second, Extent(3 << 20, 10, data_of(10, 3))]
        fast, plain = io.BytesIO(), io.BytesIO()
        write_increment(fast, exts, direction="forward", volume="v", first_offset=0, last_offset=0)
        meta = {
            "kcdp.format": "increment",
            "kcdp.version": "1",
            "kcdp.direction": "forward",
            "kcdp.volume": "v",
            "kcdp.first_offset": "0",
            "kcdp.last_offset": "0",
        }
        write_container(plain, load_schema("Extent"), [extent_record(e) for e in exts], meta)
        assert fast.getvalue() == plain.getvalue()
        outs.append(fast.getvalue())
    assert len(outs[0]) != len(outs[1])  # two blocks (two sync markers) against one
