"""Decode ``kcdp.writes`` record values straight into :class:`WriteEvent` (worker hot path).

:class:`EventDecoder` gives exactly ``WriteEvent.from_record(codec.decode(value))`` of its
:class:`~schemas.codec.AvroCodec`, with the same errors
on bad input. Values in single-object framing written with the project's own WriteEvent
schema — every value the capture side produces — are parsed by a small Avro reader for
that one schema; anything else (other writer schemas, Confluent framing, any irregularity
such as truncation, over-long varints, out-of-range numbers, invalid UTF-8, unknown enum
indexes or trailing bytes) takes the codec's general path, which decides the result or
the error.
"""

from __future__ import annotations

from schemas import load_schema, schema_json
from schemas.codec import SINGLE_OBJECT_MAGIC, AvroCodec, schema_fingerprint
from schemas.events import EventKind, WriteEvent

_WRITE_EVENT_FINGERPRINT = schema_fingerprint(load_schema("WriteEvent"))
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
#: The WriteEvent ``kind`` enum's symbols, by index.
_KINDS: tuple[EventKind, ...] = tuple(
    EventKind(symbol)
    for symbol in next(f for f in schema_json("WriteEvent")["fields"] if f["name"] == "kind")[
        "type"
    ]["symbols"]
)


class EventDecoder:
    """``decode(value) -> WriteEvent`` for one codec (single-object fast path, see module)."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        own = schema_fingerprint(codec.schema)
        fast = codec.framing == "single-object" and own == _WRITE_EVENT_FINGERPRINT
        self._prefix = SINGLE_OBJECT_MAGIC + own if fast else None

    def decode(self, value: bytes) -> WriteEvent:
        """The event in ``value``; raises what the general path raises (DecodeError, or
        ValueError/KeyError/TypeError from :meth:`WriteEvent.from_record`)."""
        if self._prefix is not None and type(value) is bytes and value[:10] == self._prefix:
            event = _parse(value)
            if event is not None:
                return event
        return WriteEvent.from_record(self.codec.decode(value))


def _long(v: bytes, pos: int) -> tuple[int, int]:
    """Avro zig-zag varint at ``pos``: ``(value, next pos)``; ValueError beyond 64 bits."""
    b = v[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    n = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = v[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
    if n >> 64:
        raise ValueError("varint beyond 64 bits")
    return (n >> 1) ^ -(n & 1), pos


def _parse(v: bytes) -> WriteEvent | None:
    """The WriteEvent body after the 10-byte header, or None on any irregularity."""
    try:  # fields in schema order; strings and bytes are length-prefixed
        fmt, p = _long(v, 10)
        n, p = _long(v, p)
        lengths = n
        group = v[p : p + n].decode()
        p += n
        n, p = _long(v, p)
        lengths |= n
        volume = v[p : p + n].decode()
        p += n
        n, p = _long(v, p)
        lengths |= n
        session = v[p : p + n].decode()
        p += n
        n, p = _long(v, p)
        lengths |= n
        host = v[p : p + n].decode()
        p += n
        seq, p = _long(v, p)
        kind, p = _long(v, p)
        offset, p = _long(v, p)
        length, p = _long(v, p)
        n, p = _long(v, p)
        lengths |= n
        data = v[p : p + n]
        p += n
        volume_size, p = _long(v, p)
        ts, p = _long(v, p)
        crc, p = _long(v, p)
        n, p = _long(v, p)
        lengths |= n
        name = v[p : p + n].decode()
        p += n
    except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if (
        p != len(v)
        or lengths < 0  # a negative length
        or not _INT_MIN <= fmt <= _INT_MAX
        or not 0 <= kind < len(_KINDS)
    ):
        return None
    return WriteEvent(
        group=group,
        volume=volume,
        sequence=seq,
        kind=_KINDS[kind],
        timestamp_us=ts,
        offset=offset,
        length=length,
        data=data,
        volume_size=volume_size,
        crc32c=crc,
        session=session,
        host=host,
        name=name,
        format_version=fmt,
    )
