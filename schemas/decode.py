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
    """``decode(value) -> WriteEvent`` for one codec (single-object fast path, see module).

    The head of a value (format version, group, volume, session, host) repeats on every
    event of a session; the last ``_MAX_HEADS`` distinct heads are kept as raw bytes, and a
    value that starts with one of them reuses its parsed fields (same bytes, same fields).
    """

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        own = schema_fingerprint(codec.schema)
        fast = codec.framing == "single-object" and own == _WRITE_EVENT_FINGERPRINT
        self._prefix = SINGLE_OBJECT_MAGIC + own if fast else None
        self._heads: list[_Head] = []

    def decode(self, value: bytes) -> WriteEvent:
        """The event in ``value``; raises what the general path raises (DecodeError, or
        ValueError/KeyError/TypeError from :meth:`WriteEvent.from_record`)."""
        if self._prefix is not None and type(value) is bytes and value[:10] == self._prefix:
            event = self._parse(value)
            if event is not None:
                return event
        return WriteEvent.from_record(self.codec.decode(value))

    def _parse(self, v: bytes) -> WriteEvent | None:
        """The WriteEvent after the 10-byte header, or None on any irregularity."""
        for head in self._heads:
            if v.startswith(head[0], 10):
                break
        else:
            found = _parse_head(v)
            if found is None:
                return None
            head = found
            if len(self._heads) >= _MAX_HEADS:
                self._heads.pop()
            self._heads.insert(0, head)
        raw, fmt, group, volume, session, host = head
        try:  # the remaining fields in schema order; bytes and strings length-prefixed
            f: list[int] = []
            p = _longs(v, 10 + len(raw), 5, f)  # sequence, kind, offset, length, len(data)
            n = f[4]
            data = v[p : p + n]
            p = _longs(v, p + n, 4, f)  # volume_size, timestamp, crc32c, len(name)
            name_len = f[8]
            name = v[p : p + name_len].decode() if name_len else ""
            p += name_len
        except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
            return None
        seq, kind, offset, length, _, volume_size, ts, crc, _ = f
        if p != len(v) or n < 0 or name_len < 0 or not 0 <= kind < len(_KINDS):
            return None
        return WriteEvent(
            group,
            volume,
            seq,
            _KINDS[kind],
            ts,
            offset,
            length,
            data,
            volume_size,
            crc,
            session,
            host,
            name,
            fmt,
        )


#: A parsed head: its raw bytes after the 10-byte header, then format_version, group,
#: volume, session and host.
_Head = tuple[bytes, int, str, str, str, str]
#: Distinct heads kept by one decoder.
_MAX_HEADS = 8


def _parse_head(v: bytes) -> _Head | None:
    """The head fields of ``v`` (after the 10-byte header), or None if irregular."""
    try:
        fmt, p = _long(v, 10)
        texts = []
        for _ in range(4):  # group, volume, session, host
            n, p = _long(v, p)
            if n < 0 or p + n > len(v):
                return None
            texts.append(v[p : p + n].decode())
            p += n
    except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if not _INT_MIN <= fmt <= _INT_MAX:
        return None
    group, volume, session, host = texts
    return v[10:p], fmt, group, volume, session, host


def _longs(v: bytes, pos: int, count: int, out: list[int]) -> int:
    """Append the ``count`` Avro zig-zag varints at ``pos`` to ``out``; return the next
    pos. ValueError for a varint longer than 10 bytes or beyond 64 bits."""
    for _ in range(count):
        b = v[pos]
        pos += 1
        if b < 0x80:
            out.append((b >> 1) ^ -(b & 1))
            continue
        n = b & 0x7F
        shift = 7
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
        out.append((n >> 1) ^ -(n & 1))
    return pos


def _long(v: bytes, pos: int) -> tuple[int, int]:
    """Avro zig-zag varint at ``pos``: ``(value, next pos)``; ValueError beyond 64 bits."""
    out: list[int] = []
    pos = _longs(v, pos, 1, out)
    return out[0], pos
