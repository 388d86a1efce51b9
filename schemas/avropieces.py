"""Direct encoding of Avro container files (docs/FORMAT.md "Codecs"): the bytes of the
reference writer (``tests/avro_reference.py``) without a dict per record — records handed
over already cut into byte pieces, most of them made for all records at once by
:func:`encode_pieces` — and :func:`write_pieces`, which writes them with blocks compressed
on threads.
"""

from __future__ import annotations

import io
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, BinaryIO

import fastavro
from backports import zstd

from schemas.avrofile import (
    CODEC,
    NULL_CODEC,
    SYNC_INTERVAL,
    choose_codec,
    sorted_keys,
    sync_marker,
)

# --- Direct encoding -------------------------------------------------------------------------
#
# The writers below produce exactly the bytes of the reference writer
# (``tests/avro_reference.py``) without building a dict per record: the caller hands over
# each record already cut into byte pieces, most of them made for all records at once by
# :func:`encode_pieces`.

#: Smallest and largest Avro long.
LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
# encode_pieces lays every field in an 8-byte slot: a long's varint (those in
# [-2**55, 2**55) take at most 8 bytes) padded with 0x00, raw bytes (0x01..0x7f) padded
# with 0x00, or one of the two placeholders below; deleting every 0x00 byte then leaves the
# fields back to back. A varint holds 0x00 only as the whole encoding of 0, so a zero
# long is laid as _ZERO_SLOT and turned back into 0x00 afterwards. The placeholders are
# 8 bytes >= 0x80: a minimal varint has at most 7 such bytes and ends in one < 0x80, so
# after compaction a run of bytes >= 0x80 is whole placeholders then at most 7 bytes of
# one varint, and a leftmost search finds exactly the placeholders.
_ZERO_SLOT = b"\x80" * 8
_CUT_SLOT = b"\xff" * 8


def long_bytes(n: int) -> bytes:
    """The Avro encoding of the long ``n`` (zig-zag varint); ValueError outside int64."""
    if not LONG_MIN <= n <= LONG_MAX:
        raise ValueError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Raw:
    """A column of raw record bytes: per record an int whose little-endian bytes (at most
    8, every one in 0x01..0x7f, e.g. a short ASCII string with its length) are copied."""

    values: Sequence[int]


#: One column of a record layout: longs, raw bytes, or ``None`` for a cut between pieces.
Column = Sequence[int] | Raw | None


def encode_pieces(layout: Sequence[Column], count: int) -> list[bytes]:
    """Encode ``count`` records whose fields are the columns of ``layout``, in order.

    Every column holds ``count`` values. The encoded bytes are returned cut at every
    ``None`` column: ``cuts * count + 1`` pieces (the last one holds what follows the last
    cut). Longs use a whole-column path (big-integer bit arithmetic) when all fit in
    ``[-2**55, 2**55)`` and a per-value path otherwise; both give the Avro bytes.
    Raises ValueError for a column of the wrong length or a long outside int64.
    """
    longs = [c for c in layout if c is not None and not isinstance(c, Raw)]
    for col in layout:
        if col is not None and len(col.values if isinstance(col, Raw) else col) != count:
            raise ValueError(f"a column does not hold one value for each of {count} records")
    if not count:
        return [b""]
    width = len(layout)
    slots = array("Q", bytes(8 * width * count))
    if longs:
        packed = array("q", bytes(8 * len(longs) * count))
        try:
            for j, col in enumerate(longs):
                packed[j :: len(longs)] = array("q", col)
        except OverflowError:
            return _pieces_per_value(layout, count)
        varints = _varint_slots(packed)
        if varints is None:
            return _pieces_per_value(layout, count)
        encoded = array("Q", varints)
    k = 0
    for j, col in enumerate(layout):
        if col is None:
            slots[j::width] = array("Q", _CUT_SLOT) * count
        elif isinstance(col, Raw):
            slots[j::width] = array("Q", col.values)
        else:
            slots[j::width] = encoded[k :: len(longs)]
            k += 1
    flat = slots.tobytes().translate(None, b"\x00").replace(_ZERO_SLOT, b"\x00")
    return flat.split(_CUT_SLOT)


def _pieces_per_value(layout: Sequence[Column], count: int) -> list[bytes]:
    pieces: list[bytes] = []
    cur: list[bytes] = []
    for i in range(count):
        for col in layout:
            if col is None:
                pieces.append(b"".join(cur))
                cur = []
            elif isinstance(col, Raw):
                cur.append(col.values[i].to_bytes(8, "little").rstrip(b"\x00"))
            else:
                cur.append(long_bytes(col[i]))
    pieces.append(b"".join(cur))
    return pieces


#: Longs encoded per big-integer pass (cache-sized: 32 KiB of slots).
_CHUNK = 4096


@dataclass(frozen=True, slots=True)
class _Masks:
    """Per-slot bit patterns over ``n`` 64-bit slots, as big integers."""

    one: int  # 0x01
    range9: int  # bits 55..63 (after a shift by 55)
    low55: int
    low56: int
    m28: int  # 0x000000000fffffff
    m14: int  # 0x00003fff00003fff
    m7: int  # 0x007f007f007f007f
    m7f: int  # 0x7f in every byte
    m80: int  # 0x80 in every byte
    keep7: int  # bytes 0..6
    keep6: int  # bytes 0..5
    keep4: int  # bytes 0..3
    low: int  # 0x80 in byte 0

    @classmethod
    def over(cls, n: int) -> _Masks:
        one = int.from_bytes(b"\x01\x00\x00\x00\x00\x00\x00\x00" * n, "little")

        def ones(bits: int) -> int:
            return (one << bits) - one

        m14 = ones(14)
        m7 = ones(7)
        m7 |= m7 << 16
        m7 |= m7 << 32
        m7f = m7 | m7 << 8
        return cls(
            one=one,
            range9=ones(9),
            low55=ones(55),
            low56=ones(56),
            m28=ones(28),
            m14=m14 | m14 << 32,
            m7=m7,
            m7f=m7f,
            m80=ones(64) ^ m7f,
            keep7=ones(56),
            keep6=ones(48),
            keep4=ones(32),
            low=one << 7,
        )


def _varint_slots(values: array[int]) -> bytes | None:
    """Each long of ``values`` as its varint in an 8-byte slot, zero-padded, a zero value
    as ``_ZERO_SLOT`` (its varint byte is 0x00 too); None if a value is outside
    ``[-2**55, 2**55)`` (more than 8 varint bytes)."""
    masks: dict[int, _Masks] = {}
    out = []
    for i in range(0, len(values), _CHUNK):
        chunk = values[i : i + _CHUNK]
        m = masks.get(len(chunk)) or masks.setdefault(len(chunk), _Masks.over(len(chunk)))
        enc = _varint_chunk(int.from_bytes(chunk, "little"), m)
        if enc is None:
            return None
        out.append(enc.to_bytes(8 * len(chunk), "little"))
    return b"".join(out)


def _varint_chunk(big: int, m: _Masks) -> int | None:
    """:func:`_varint_slots` of the slots of ``big`` (slot ``i`` at bit ``64*i``, a value
    in two's complement), all at once with per-slot masks ``m``."""
    signs = (big >> 63) & m.one
    if signs:
        flip = (signs << 64) - signs  # all ones in the slots of negative values
        if (big ^ flip) >> 55 & m.range9:
            return None
        z = ((big & m.low55) << 1) ^ (flip & m.low56)  # zig-zag
    else:
        if big >> 55 & m.range9:
            return None
        z = big << 1
    # Spread the 56 bits into eight bytes of 7 bits: 28 | 28, then 14 | 14, then 7 | 7.
    z = (z & m.m28) | ((z & (m.m28 << 28)) << 4)
    z = (z & m.m14) | ((z & (m.m14 << 14)) << 2)
    z = (z & m.m7) | ((z & (m.m7 << 7)) << 1)
    # 0x80 on each nonzero byte; a byte continues iff some byte above it in its slot is set.
    nonzero = (z + m.m7f) & m.m80
    cont = (nonzero >> 8) & m.keep7
    cont |= (cont >> 8) & m.keep7
    cont |= (cont >> 16) & m.keep6
    cont |= (cont >> 32) & m.keep4
    zero = ((nonzero | cont) & m.low) ^ m.low  # 0x80 in byte 0 of the zero slots
    zero |= zero << 8
    zero |= zero << 16
    zero |= zero << 32
    return z | cont | zero


def write_pieces(
    fh: BinaryIO,
    schema: Any,
    chunks: Iterable[Sequence[bytes]],
    *,
    count: int,
    stride: int,
    meta: Mapping[str, str],
    workers: int = 2,
    on_block: Callable[[int, int], None] | None = None,
) -> None:
    """Write a container of ``count`` records given as consecutive ``chunks`` of parts:
    record ``i`` is ``b"".join(parts[i*stride:(i+1)*stride])`` of the chunks' parts.

    The bytes equal the reference writer's (``tests/avro_reference.py``) for the same
    records: fastavro's header, blocks cut after the record that brings a block to
    ``SYNC_INTERVAL`` bytes, each block zstd compressed (default level) unless the first one
    did not compress (:func:`choose_codec`). ``chunks`` is consumed lazily: while
    ``workers`` (default 2) threads compress the blocks cut so far (zstd releases the GIL),
    the next chunk can be made. ``on_block(start, end)`` (optional) is called in this thread
    with each block's record range, in order, once the block is handed to compression.
    Raises ValueError if the chunks do not hold ``count`` records of ``stride`` parts.
    """
    writer = _PieceWriter(fh, schema, {**meta, "kcdp.count": str(count)}, stride, workers)
    try:
        parts: list[bytes] = []
        first = 0
        for chunk in chunks:
            parts += chunk
            done = writer.cut(parts, first, final=False, on_block=on_block)
            del parts[: done * stride]
            first += done
        if len(parts) % stride or first + len(parts) // stride != count:
            raise ValueError(f"the chunks do not hold {count} records of {stride} parts")
        writer.cut(parts, first, final=True, on_block=on_block)
        writer.finish()
    finally:
        writer.close()


class _PieceWriter:
    """The state of one :func:`write_pieces` call: header, codec, blocks in compression."""

    def __init__(
        self, fh: BinaryIO, schema: Any, metadata: dict[str, str], stride: int, workers: int
    ) -> None:
        self.fh = fh
        self.schema = schema
        self.metadata = metadata
        self.marker = sync_marker(metadata)
        self.stride = stride
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        self.pending: deque[tuple[int, Future[bytes] | bytes]] = deque()
        self.codec: str | None = None  # decided by the first block

    def header(self, name: str) -> None:
        self.codec = name
        out = io.BytesIO()
        fastavro.writer(
            out,
            sorted_keys(self.schema),
            [],
            codec=name,
            metadata=self.metadata,
            sync_interval=SYNC_INTERVAL,
            sync_marker=self.marker,
        )
        self.fh.write(out.getvalue())

    def put(self, n: int, packed: Future[bytes] | bytes) -> None:
        data = packed.result() if isinstance(packed, Future) else packed
        self.fh.write(long_bytes(n) + long_bytes(len(data)))
        self.fh.write(data)
        self.fh.write(self.marker)

    def pack(self, block: bytes) -> Future[bytes] | bytes:
        """The block compressed with the file's codec (the first block decides it)."""
        if self.codec is None:
            name, packed = choose_codec(block)
            self.header(name)
            return packed
        if self.codec == NULL_CODEC:
            return block
        if self.pool is None:
            return zstd.compress(block)
        return self.pool.submit(zstd.compress, block)

    def cut(
        self,
        parts: list[bytes],
        first: int,
        *,
        final: bool,
        on_block: Callable[[int, int], None] | None,
    ) -> int:
        """Hand the complete blocks of ``parts`` (records from ``first``) to compression;
        return how many records they hold."""
        stride = self.stride
        ends = list(accumulate(map(len, parts)))[stride - 1 :: stride]  # bytes through record
        start, base = 0, 0
        while start < len(ends):
            end = bisect_left(ends, base + SYNC_INTERVAL, start) + 1
            if end > len(ends):
                if not final:
                    break
                end = len(ends)
            self.pending.append(
                (end - start, self.pack(b"".join(parts[start * stride : end * stride])))
            )
            if on_block is not None:
                on_block(first + start, first + end)
            while len(self.pending) > self.workers:
                self.put(*self.pending.popleft())
            start, base = end, ends[end - 1]
        return start

    def finish(self) -> None:
        if self.codec is None:  # no records: no block
            self.header(CODEC)
        while self.pending:
            self.put(*self.pending.popleft())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
