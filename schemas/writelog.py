"""Window write logs (docs/FORMAT.md "Write log").

A write log is an Avro container file of ``io.kcdp.v1.WriteLogRecord``, zstd-compressed:
every event of one window in Kafka offset order, markers included. Replaying its change
records onto the image at the window's start lands on any point inside the window.

A WRITE/BASELINE record marked ``in_forward`` carries no data: the window's forward
increment holds exactly its bytes (no later change event of the window overlaps it), so
replaying such a record takes them from there, checked against the record's CRC-32C.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from connectors.errors import IntegrityError
from schemas import load_schema
from schemas.avrofile import read_container
from schemas.avropieces import Column, Raw, encode_pieces, long_bytes, write_pieces
from schemas.events import CHANGE_KINDS, DATA_KINDS, EventKind, WriteEvent, crc32c
from schemas.extents import Extent
from schemas.image import Image


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One event of a window with its Kafka offset.

    ``in_forward``: ``data`` is empty because the window's forward increment holds exactly
    this WRITE/BASELINE event's bytes (``crc32c`` still is their CRC-32C).
    """

    kafka_offset: int
    sequence: int
    kind: EventKind
    offset: int
    length: int
    timestamp_us: int
    crc32c: int
    data: bytes = b""
    name: str = ""
    in_forward: bool = False

    @classmethod
    def from_event(
        cls, event: WriteEvent, kafka_offset: int, *, in_forward: bool = False
    ) -> LogRecord:
        """The record of ``event``; ``in_forward`` drops a WRITE/BASELINE event's data
        (it is ignored for other kinds)."""
        in_forward = in_forward and event.kind in DATA_KINDS
        return cls(
            kafka_offset=kafka_offset,
            sequence=event.sequence,
            kind=event.kind,
            offset=event.offset,
            length=event.length,
            timestamp_us=event.timestamp_us,
            crc32c=event.data_crc32c(),
            data=b"" if in_forward else event.data,
            name=event.name,
            in_forward=in_forward,
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "kafka_offset": self.kafka_offset,
            "sequence": self.sequence,
            "kind": str(self.kind),
            "offset": self.offset,
            "length": self.length,
            "timestamp_us": self.timestamp_us,
            "crc32c": self.crc32c,
            "data": self.data,
            "name": self.name,
            "in_forward": self.in_forward,
        }


def write_log(
    fh: BinaryIO,
    records: Iterable[LogRecord],
    *,
    volume: str,
    first_offset: int,
    last_offset: int,
) -> int:
    """Write ``records`` (in Kafka offset order) as a write log; return how many.

    The bytes equal the reference writer's (``tests/avro_reference.py``) for
    ``r.to_record()`` of each record. Raises ValueError for a kind that is not an
    :class:`EventKind`.
    """
    recs = list(records)
    _write(
        fh,
        list(map(_KAFKA_OFFSET, recs)),
        _columns(recs),
        list(map(bool, map(_IN_FORWARD, recs))),
        volume=volume,
        first_offset=first_offset,
        last_offset=last_offset,
    )
    return len(recs)


def write_event_log(
    fh: BinaryIO,
    events: Sequence[tuple[int, WriteEvent]],
    in_forward: Sequence[bool],
    *,
    volume: str,
    first_offset: int,
    last_offset: int,
) -> int:
    """Write ``(kafka_offset, event)`` pairs as a write log; return how many.

    The bytes equal :func:`write_log` of ``LogRecord.from_event(event, offset,
    in_forward=flag)`` for each pair and flag, without building the records. Raises
    ValueError if ``in_forward`` is not as long as ``events``.
    """
    if len(in_forward) != len(events):
        raise ValueError(f"{len(in_forward)} in_forward flags for {len(events)} events")
    evs = list(map(_EVENT, events))
    cols = _columns(evs)
    cols[5] = [e.data_crc32c() for e in evs]  # records carry the data's CRC, not the seal
    flags = list(map(operator.and_, map(bool, in_forward), map(DATA_KINDS.__contains__, cols[1])))
    if any(flags):
        cols[6] = [b"" if f else d for d, f in zip(cols[6], flags, strict=True)]
    _write(
        fh,
        list(map(_KEY, events)),
        cols,
        flags,
        volume=volume,
        first_offset=first_offset,
        last_offset=last_offset,
    )
    return len(events)


_KAFKA_OFFSET = operator.attrgetter("kafka_offset")
_KEY: Callable[[Any], int] = operator.itemgetter(0)
_EVENT = operator.itemgetter(1)
_IN_FORWARD = operator.attrgetter("in_forward")
#: The fields LogRecord and WriteEvent share, in schema order (after kafka_offset).
_FIELDS = tuple(
    operator.attrgetter(name)
    for name in ("sequence", "kind", "offset", "length", "timestamp_us", "crc32c", "data", "name")
)


def _columns(items: list[Any]) -> list[Sequence[Any]]:
    """The ``_FIELDS`` of ``items`` (LogRecords or WriteEvents) as columns."""
    return [list(map(field, items)) for field in _FIELDS]


def _kind_slots(kind: EventKind) -> tuple[int, int]:
    """The Avro string ``kind`` (length byte, ASCII) as two raw 8-byte slots."""
    text = str(kind).encode()
    raw = int.from_bytes(long_bytes(len(text)) + text, "little")
    return raw & 0xFFFF_FFFF_FFFF_FFFF, raw >> 64


#: Each kind's Avro string: its first and its next 8 bytes, for :class:`Raw` columns.
_KIND_LOW = {kind: _kind_slots(kind)[0] for kind in EventKind}
_KIND_HIGH = {kind: _kind_slots(kind)[1] for kind in EventKind}
#: The record tail (empty name, in_forward) indexed by in_forward.
_EMPTY_NAME_TAIL = (b"\x00\x00", b"\x00\x01")


def _tail(name: str, in_forward: bool) -> bytes:
    text = name.encode()
    return b"".join((long_bytes(len(text)), text, b"\x01" if in_forward else b"\x00"))


def _write(
    fh: BinaryIO,
    kafka_offsets: list[int],
    cols: list[Sequence[Any]],
    in_forward: list[bool],
    *,
    volume: str,
    first_offset: int,
    last_offset: int,
) -> None:
    """Encode WriteLogRecords (``cols``: the ``_FIELDS`` columns) and write the log."""
    n = len(kafka_offsets)
    sequences, kinds, offsets, lengths, timestamps, crcs, datas, names = cols
    try:
        kind_low = list(map(_KIND_LOW.__getitem__, kinds))
        kind_high = list(map(_KIND_HIGH.__getitem__, kinds))
    except KeyError as exc:
        raise ValueError(f"write log record of unknown kind {exc.args[0]!r}") from None
    layout: list[Column] = [
        kafka_offsets,
        sequences,
        Raw(kind_low),
        *([Raw(kind_high)] if any(kind_high) else []),  # only kinds over 7 letters need it
        offsets,
        lengths,
        timestamps,
        crcs,
        list(map(len, datas)),
        None,
    ]
    tails = list(map(_EMPTY_NAME_TAIL.__getitem__, in_forward))
    if any(names):
        for i, name in enumerate(names):
            if name:
                tails[i] = _tail(name, in_forward[i])
    parts = [b""] * (3 * n)
    parts[0::3] = encode_pieces(layout, n)[:n]
    parts[1::3] = datas
    parts[2::3] = tails
    meta = {
        "kcdp.format": "writelog",
        "kcdp.version": "1",
        "kcdp.volume": volume,
        "kcdp.first_offset": str(first_offset),
        "kcdp.last_offset": str(last_offset),
    }
    write_pieces(fh, load_schema("WriteLogRecord"), [parts], count=n, stride=3, meta=meta)


def read_log(source: bytes | BinaryIO, *, name: str = "write log") -> Iterator[LogRecord]:
    """Yield the records of a write log, verifying order and every data CRC-32C.

    Raises :class:`IntegrityError` naming ``name`` on corruption, truncation, an unknown
    kind, offsets out of order or a CRC mismatch. The header is checked before this returns.
    Records of logs written before ``in_forward`` existed read with ``in_forward`` False;
    the bytes of ``in_forward`` records are checked by :func:`apply_records`.
    """
    _, records = read_container(source, fmt="writelog", what=name)
    return _records(records, name)


def _records(records: Iterator[dict[str, Any]], name: str) -> Iterator[LogRecord]:
    last = -1
    for rec in records:
        try:
            kind = EventKind(rec["kind"])
        except ValueError:
            raise IntegrityError(f"{name}: unknown event kind {rec['kind']!r}") from None
        ko = rec["kafka_offset"]
        if ko <= last:
            raise IntegrityError(f"{name}: Kafka offset {ko} not after {last}")
        last = ko
        data = rec["data"]
        in_forward = bool(rec.get("in_forward", False))
        if in_forward:
            if kind not in DATA_KINDS or data:
                raise IntegrityError(
                    f"{name}: the {kind} record at Kafka offset {ko} is marked in_forward "
                    "but is not a WRITE/BASELINE record without data"
                )
        elif kind in DATA_KINDS and (len(data) != rec["length"] or crc32c(data) != rec["crc32c"]):
            raise IntegrityError(f"{name}: data of the record at Kafka offset {ko} is corrupt")
        yield LogRecord(
            kafka_offset=ko,
            sequence=rec["sequence"],
            kind=kind,
            offset=rec["offset"],
            length=rec["length"],
            timestamp_us=rec["timestamp_us"],
            crc32c=rec["crc32c"],
            data=data,
            name=rec["name"],
            in_forward=in_forward,
        )


class ForwardBytes:
    """Byte ranges of a window's forward increment: ``extents`` sorted, non-overlapping.

    ``name`` (the increment's key) is used in error messages.
    """

    def __init__(self, extents: Iterable[Extent], *, name: str = "forward increment") -> None:
        self.extents = sorted(extents, key=lambda e: e.offset)
        self.starts = [e.offset for e in self.extents]
        self.name = name

    def read(self, offset: int, length: int) -> bytes:
        """The forward bytes at ``[offset, offset+length)``; IntegrityError if not covered."""
        out = bytearray()
        pos, end = offset, offset + length
        k = bisect.bisect_right(self.starts, pos) - 1
        while pos < end:
            if (
                k < 0
                or k >= len(self.extents)
                or not (self.extents[k].offset <= pos < self.extents[k].end)
            ):
                raise IntegrityError(
                    f"{self.name} does not cover bytes [{pos}, {end}) that the write log "
                    "expects it to hold"
                )
            ext = self.extents[k]
            stop = min(end, ext.end)
            if ext.data is None:
                out += bytes(stop - pos)
            else:
                out += memoryview(ext.data)[pos - ext.offset : stop - ext.offset]
            pos = stop
            k += 1
        return bytes(out)


def needs_forward(records: Iterable[LogRecord], *, upto_offset: int | None = None) -> bool:
    """Whether replaying ``records`` up to ``upto_offset`` takes bytes from the forward."""
    for rec in records:
        if upto_offset is not None and rec.kafka_offset > upto_offset:
            return False
        if rec.in_forward:
            return True
    return False


def apply_records(
    image: Image,
    records: Iterable[LogRecord],
    *,
    upto_offset: int | None = None,
    forward: ForwardBytes | Sequence[Extent] | None = None,
    name: str = "write log",
) -> None:
    """Replay the change records (WRITE, BASELINE, ZERO, TRIM) with offset ≤ ``upto_offset``.

    Records are taken in the given (offset) order; replay stops at the first record past
    ``upto_offset``. ``None`` replays all. ``in_forward`` records take their bytes from
    ``forward`` (the window's forward increment: its extents or a :class:`ForwardBytes`)
    and check them against the record's CRC-32C. Raises :class:`IntegrityError` naming the
    log ``name`` on a mismatch, or when such a record is reached and ``forward`` is None.
    """
    fwd = forward if forward is None or isinstance(forward, ForwardBytes) else ForwardBytes(forward)
    for rec in records:
        if upto_offset is not None and rec.kafka_offset > upto_offset:
            break
        if rec.kind not in CHANGE_KINDS:
            continue
        if rec.in_forward:
            if fwd is None:
                raise IntegrityError(
                    f"{name}: the record at Kafka offset {rec.kafka_offset} is in the window's "
                    "forward increment, which was not given: replaying this log needs it"
                )
            try:
                data = fwd.read(rec.offset, rec.length)
            except IntegrityError as exc:
                raise IntegrityError(f"{name}: {exc.message}") from None
            if crc32c(data) != rec.crc32c:
                raise IntegrityError(
                    f"{name}: the bytes of the record at Kafka offset {rec.kafka_offset} in "
                    f"{fwd.name} do not match the record's CRC-32C"
                )
            image.pwrite(rec.offset, data)
        elif rec.kind in DATA_KINDS:
            image.pwrite(rec.offset, rec.data)
        else:
            image.zero(rec.offset, rec.length)
