"""Window write logs (docs/FORMAT.md "Write log").

A write log is an Avro container file of ``io.kcdp.v1.WriteLogRecord``, zstd-compressed:
every event of one window in Kafka offset order, markers included. Replaying its change
records onto the image at the window's start lands on any point inside the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from connectors.errors import IntegrityError
from schemas import load_schema
from schemas.events import CHANGE_KINDS, DATA_KINDS, EventKind, WriteEvent, crc32c
from streams.avrofile import read_container, write_container
from streams.image import Image


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One event of a window with its Kafka offset."""

    kafka_offset: int
    sequence: int
    kind: EventKind
    offset: int
    length: int
    timestamp_us: int
    crc32c: int
    data: bytes = b""
    name: str = ""

    @classmethod
    def from_event(cls, event: WriteEvent, kafka_offset: int) -> LogRecord:
        return cls(
            kafka_offset=kafka_offset,
            sequence=event.sequence,
            kind=event.kind,
            offset=event.offset,
            length=event.length,
            timestamp_us=event.timestamp_us,
            crc32c=event.crc32c,
            data=event.data,
            name=event.name,
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
        }


def write_log(
    fh: BinaryIO,
    records: Iterable[LogRecord],
    *,
    volume: str,
    first_offset: int,
    last_offset: int,
) -> int:
    """Write ``records`` (in Kafka offset order) as a write log; return how many."""
    recs = [r.to_record() for r in records]
    meta = {
        "kcdp.format": "writelog",
        "kcdp.version": "1",
        "kcdp.volume": volume,
        "kcdp.first_offset": str(first_offset),
        "kcdp.last_offset": str(last_offset),
    }
    write_container(fh, load_schema("WriteLogRecord"), recs, meta)
    return len(recs)


def read_log(source: bytes | BinaryIO, *, name: str = "write log") -> Iterator[LogRecord]:
    """Yield the records of a write log, verifying order and every data CRC-32C.

    Raises :class:`IntegrityError` naming ``name`` on corruption, truncation, an unknown
    kind, offsets out of order or a CRC mismatch. The header is checked before this returns.
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
        if kind in DATA_KINDS and (len(data) != rec["length"] or crc32c(data) != rec["crc32c"]):
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
        )


def apply_records(
    image: Image, records: Iterable[LogRecord], *, upto_offset: int | None = None
) -> None:
    """Replay the change records (WRITE, BASELINE, ZERO, TRIM) with offset ≤ ``upto_offset``.

    Records are taken in the given (offset) order; replay stops at the first record past
    ``upto_offset``. ``None`` replays all.
    """
    for rec in records:
        if upto_offset is not None and rec.kafka_offset > upto_offset:
            break
        if rec.kind not in CHANGE_KINDS:
            continue
        if rec.kind in DATA_KINDS:
            image.pwrite(rec.offset, rec.data)
        else:
            image.zero(rec.offset, rec.length)
