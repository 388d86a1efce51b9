"""Avro object container files shared by increments and write logs (docs/FORMAT.md).

Files use codec ``zstandard``, or ``null`` when their first block does not compress
(:func:`choose_codec`), and carry ``kcdp.*`` header metadata; the sync marker is
derived from that metadata so a file is a pure function of its content (idempotent
uploads). ``kcdp.count`` holds the number of records so a file cut at a block boundary
(which the container format alone cannot notice) is detected as truncated.
"""

from __future__ import annotations

import hashlib
import io
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, BinaryIO

import fastavro
from backports import zstd

from connectors.errors import IntegrityError

CODEC = "zstandard"
NULL_CODEC = "null"
SYNC_INTERVAL = 1 << 20
#: A file is written uncompressed when zstd saves less than 1/32 of its first block.
INCOMPRESSIBLE = 1 / 32


def choose_codec(block: bytes) -> tuple[str, bytes]:
    """The codec of a file whose first block is ``block`` (docs/FORMAT.md "Codecs"), and
    that block as the codec stores it: ``zstandard`` unless zstd (default level) saves less
    than :data:`INCOMPRESSIBLE` of it (encrypted or already compressed data), then
    ``null``, so later blocks are not compressed in vain."""
    packed = zstd.compress(block)
    if len(block) - len(packed) < len(block) * INCOMPRESSIBLE:
        return NULL_CODEC, block
    return CODEC, packed


def write_container(
    fh: BinaryIO, schema: Any, records: Sequence[Mapping[str, Any]], meta: Mapping[str, str]
) -> None:
    """Write ``records`` as one container file with ``meta`` plus ``kcdp.count``, the
    codec chosen by :func:`choose_codec` from the first block (the reference writer)."""
    metadata = {**meta, "kcdp.count": str(len(records))}
    marker = sync_marker(metadata)

    def write(out: BinaryIO, codec: str) -> None:
        fastavro.writer(
            out,
            sorted_keys(schema),
            records,
            codec=codec,
            metadata=metadata,
            sync_interval=SYNC_INTERVAL,
            sync_marker=marker,
        )

    codec = CODEC
    if records:
        raw = io.BytesIO()
        write(raw, NULL_CODEC)
        raw.seek(0)
        first: Any = next(iter(fastavro.block_reader(raw)))
        codec = choose_codec(first.bytes_.getvalue())[0]
    write(fh, codec)


def sorted_keys(value: Any) -> Any:
    """``value`` with every dict's keys sorted: fastavro embeds the parsed schema as JSON in
    the header, and the parsed key order varies with the process's hash seed."""
    if isinstance(value, dict):
        return {k: sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(v) for v in value]
    return value


def sync_marker(meta: Mapping[str, str]) -> bytes:
    """A sync marker derived from the header metadata, so equal inputs give equal bytes."""
    text = "\n".join(f"{k}={meta[k]}" for k in sorted(meta))
    return hashlib.sha256(text.encode()).digest()[:16]


def read_container(
    source: bytes | BinaryIO, *, fmt: str, what: str
) -> tuple[dict[str, str], Iterator[dict[str, Any]]]:
    """Open a container of format ``fmt``; return its metadata and a checked record iterator.

    The iterator raises :class:`IntegrityError` (message starts with ``what``) on a corrupt
    or truncated file, including a record count that differs from ``kcdp.count``.
    """
    fh: BinaryIO = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        reader = fastavro.reader(fh)
        meta = {
            k: v.decode() if isinstance(v, bytes) else str(v) for k, v in reader.metadata.items()
        }
    except Exception as exc:
        raise IntegrityError(f"{what}: not a readable Avro container ({exc})") from None
    if meta.get("kcdp.format") != fmt:
        raise IntegrityError(
            f"{what}: kcdp.format is {meta.get('kcdp.format')!r}, expected {fmt!r}"
        )
    if meta.get("kcdp.version") != "1":
        raise IntegrityError(f"{what}: unsupported kcdp.version {meta.get('kcdp.version')!r}")
    try:
        count = int(meta["kcdp.count"])
    except (KeyError, ValueError):
        raise IntegrityError(f"{what}: missing or bad kcdp.count") from None

    def records() -> Iterator[dict[str, Any]]:
        seen = 0
        it = iter(reader)
        while True:
            try:
                rec = next(it)
            except StopIteration:
                break
            except Exception as exc:
                raise IntegrityError(
                    f"{what}: corrupt or truncated after {seen} records "
                    f"({type(exc).__name__}: {exc})"
                ) from None
            if not isinstance(rec, dict):
                raise IntegrityError(f"{what}: record {seen} is not a record")
            seen += 1
            if seen > count:
                raise IntegrityError(f"{what}: more records than the {count} announced")
            yield rec
        if seen != count:
            raise IntegrityError(f"{what}: truncated, {seen} of {count} records")

    return meta, records()


def meta_int(meta: Mapping[str, str], key: str, what: str) -> int:
    try:
        return int(meta[key])
    except (KeyError, ValueError):
        raise IntegrityError(f"{what}: missing or bad {key}") from None


# --- Direct encoding -------------------------------------------------------------------------
#
# The writers below produce exactly the bytes of :func:`write_container` without building a
# dict per record: the caller hands over each record already cut into byte pieces, most of
# them made for all records at once by :func:`encode_pieces`.

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

    The bytes equal :func:`write_container` of the same records: fastavro's header, blocks
    cut after the record that brings a block to ``SYNC_INTERVAL`` bytes, each block zstd
    compressed (default level) unless the first one did not compress
    (:func:`choose_codec`). ``chunks`` is consumed lazily: while ``workers`` (default 2)
    threads compress the blocks cut so far (zstd releases the GIL), the next chunk can be
    made. ``on_block(start, end)`` (optional) is called in this thread with each
    block's record range, in order, once the block is handed to compression.
    Raises ValueError if the chunks do not hold ``count`` records of ``stride`` parts.
    """
    metadata = {**meta, "kcdp.count": str(count)}
    marker = sync_marker(metadata)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    pending: deque[tuple[int, Future[bytes] | bytes]] = deque()
    codec: list[str] = []  # decided by the first block

    def header(name: str) -> None:
        codec.append(name)
        out = io.BytesIO()
        fastavro.writer(
            out,
            sorted_keys(schema),
            [],
            codec=name,
            metadata=metadata,
            sync_interval=SYNC_INTERVAL,
            sync_marker=marker,
        )
        fh.write(out.getvalue())

    def put(n: int, packed: Future[bytes] | bytes) -> None:
        data = packed.result() if isinstance(packed, Future) else packed
        fh.write(long_bytes(n) + long_bytes(len(data)))
        fh.write(data)
        fh.write(marker)

    def cut(parts: list[bytes], first: int, *, final: bool) -> int:
        """Hand the complete blocks of ``parts`` (records from ``first``) to compression;
        return how many records they hold."""
        ends = list(accumulate(map(len, parts)))[stride - 1 :: stride]  # bytes through record
        start, base = 0, 0
        while start < len(ends):
            end = bisect_left(ends, base + SYNC_INTERVAL, start) + 1
            if end > len(ends):
                if not final:
                    break
                end = len(ends)
            block = b"".join(parts[start * stride : end * stride])
            if not codec:  # the first block decides the file's codec
                name, packed = choose_codec(block)
                header(name)
                pending.append((end - start, packed))
            elif codec[0] == NULL_CODEC:
                pending.append((end - start, block))
            elif pool is None:
                pending.append((end - start, zstd.compress(block)))
            else:
                pending.append((end - start, pool.submit(zstd.compress, block)))
            del block
            if on_block is not None:
                on_block(first + start, first + end)
            while len(pending) > workers:
                put(*pending.popleft())
            start, base = end, ends[end - 1]
        return start

    try:
        parts: list[bytes] = []
        first = 0
        for chunk in chunks:
            parts += chunk
            done = cut(parts, first, final=False)
            del parts[: done * stride]
            first += done
        if len(parts) % stride or first + len(parts) // stride != count:
            raise ValueError(f"the chunks do not hold {count} records of {stride} parts")
        cut(parts, first, final=True)
        if not codec:  # no records: no block
            header(CODEC)
        while pending:
            put(*pending.popleft())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
