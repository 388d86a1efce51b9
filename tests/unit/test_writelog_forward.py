"""Write logs whose records are ``in_forward`` (docs/FORMAT.md "Write log")."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import fastavro
import pytest

from connectors.errors import IntegrityError
from schemas import schema_json
from schemas.events import EventKind, crc32c
from schemas.extents import Extent
from schemas.image import Image
from schemas.writelog import (
    ForwardBytes,
    LogRecord,
    apply_records,
    needs_forward,
    read_log,
    write_log,
)
from tests.avro_reference import write_container
from tests.streams_support import small_event


def _log(records: list[LogRecord]) -> bytes:
    buf = io.BytesIO()
    write_log(buf, records, volume="v", first_offset=100, last_offset=100 + len(records))
    return buf.getvalue()


#: window: "hello world" at 0, zero [2, 5), "tail" at 60; the forward holds the end state.
EVENTS = [
    small_event(1, EventKind.WRITE, 0, b"hello world"),
    small_event(2, EventKind.ZERO, 2, length=3),
    small_event(3, EventKind.WRITE, 60, b"tail"),
]
FORWARD = [Extent(0, 11, b"he\0\0\0 world"), Extent(60, 4, b"tail")]


def _records() -> list[LogRecord]:
    return [
        LogRecord.from_event(EVENTS[0], 100),
        LogRecord.from_event(EVENTS[1], 101),
        LogRecord.from_event(EVENTS[2], 102, in_forward=True),
    ]


def test_in_forward_round_trip_and_replay(tmp_path: Path) -> None:
    recs = _records()
    assert recs[2].data == b"" and recs[2].crc32c == crc32c(b"tail")
    back = list(read_log(_log(recs)))
    assert back == recs and [r.in_forward for r in back] == [False, False, True]
    assert not needs_forward(back, upto_offset=101) and needs_forward(back)
    with Image(tmp_path / "img", 64) as img:
        apply_records(img, back, upto_offset=101)  # no in_forward record up to 101
        assert img.pread(0, 12) == b"he\0\0\0 world\0"
        apply_records(img, back, forward=FORWARD)
        assert img.pread(60, 4) == b"tail"


def test_in_forward_needs_the_forward(tmp_path: Path) -> None:
    back = list(read_log(_log(_records())))
    with (
        Image(tmp_path / "img", 64) as img,
        pytest.raises(IntegrityError, match=r"x\.log: .*Kafka offset 102.*forward increment"),
    ):
        apply_records(img, back, name="x.log")


def test_in_forward_crc_mismatch_names_log_and_forward(tmp_path: Path) -> None:
    back = list(read_log(_log(_records())))
    bad = ForwardBytes([FORWARD[0], Extent(60, 4, b"TAIL")], name="w.fwd")
    with (
        Image(tmp_path / "img", 64) as img,
        pytest.raises(IntegrityError, match=r"x\.log: .*102 in w\.fwd .*CRC-32C"),
    ):
        apply_records(img, back, forward=bad, name="x.log")
    short = ForwardBytes([FORWARD[0], Extent(60, 2, b"ta")], name="w.fwd")
    with (
        Image(tmp_path / "img2", 64) as img,
        pytest.raises(IntegrityError, match=r"x\.log: w\.fwd does not cover bytes \[62, 64\)"),
    ):
        apply_records(img, back, forward=short, name="x.log")


def test_forward_bytes_spans_extents_and_zero_runs() -> None:
    fwd = ForwardBytes([Extent(10, 4, b"abcd"), Extent(0, 10, None), Extent(14, 2, b"ef")])
    assert fwd.read(8, 8) == b"\0\0abcdef"
    assert fwd.read(3, 0) == b""
    with pytest.raises(IntegrityError, match=r"\[16, 17\)"):
        fwd.read(15, 2)


def test_in_forward_with_data_is_rejected() -> None:
    rec = LogRecord(5, 1, EventKind.WRITE, 0, 3, 1, crc32c(b"abc"), b"abc", in_forward=True)
    with pytest.raises(IntegrityError, match=r"x\.log: .*in_forward"):
        list(read_log(_log([rec]), name="x.log"))
    marker = LogRecord(5, 1, EventKind.ZERO, 0, 3, 1, 0, in_forward=True)
    with pytest.raises(IntegrityError, match="in_forward"):
        list(read_log(_log([marker]), name="x.log"))


def test_from_event_ignores_in_forward_for_non_data_kinds() -> None:
    rec = LogRecord.from_event(EVENTS[1], 7, in_forward=True)
    assert not rec.in_forward


def test_old_format_log_still_reads(tmp_path: Path) -> None:
    """A log written with the schema before ``in_forward`` existed reads as all-false."""
    schema = copy.deepcopy(schema_json("WriteLogRecord"))
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "in_forward"]
    recs = [LogRecord.from_event(e, 100 + i) for i, e in enumerate(EVENTS)]
    rows = []
    for r in recs:
        row = r.to_record()
        del row["in_forward"]
        rows.append(row)
    buf = io.BytesIO()
    meta = {
        "kcdp.format": "writelog",
        "kcdp.version": "1",
        "kcdp.volume": "v",
        "kcdp.first_offset": "100",
        "kcdp.last_offset": "102",
    }
    write_container(buf, fastavro.parse_schema(schema), rows, meta)
    assert b"in_forward" not in buf.getvalue()
    back = list(read_log(buf.getvalue()))
    assert back == recs and not any(r.in_forward for r in back)
    with Image(tmp_path / "img", 64) as img:
        apply_records(img, back)
        assert img.pread(0, 12) == b"he\0\0\0 world\0" and img.pread(60, 4) == b"tail"
