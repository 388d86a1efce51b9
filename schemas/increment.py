"""Forward and backward increments (docs/FORMAT.md "Increments").

An increment is an Avro container file of ``io.kcdp.v1.Extent`` records, zstd-compressed,
sorted by offset, non-overlapping, each at most 1 MiB, each with a CRC-32C of its data.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from crc32c import crc32c as _crc  # the C function itself: one call per extent

from connectors.errors import IntegrityError
from schemas import load_schema
from schemas.avrofile import meta_int, read_container
from schemas.avropieces import encode_pieces, write_pieces
from schemas.events import crc32c
from schemas.extents import MAX_EXTENT, Extent

DIRECTIONS = ("forward", "backward")


@dataclass(frozen=True, slots=True)
class IncrementInfo:
    """What :func:`write_increment` wrote: extent count, bytes covered, content digest
    (``""`` when not asked for)."""

    extents: int
    logical_bytes: int
    ranges_sha256: str


def ranges_digest(extents: Iterable[Extent]) -> str:
    """SHA-256 over the extents' bytes in order, zero runs expanded (``ranges_sha256``)."""
    h = hashlib.sha256()
    zeros = bytes(MAX_EXTENT)
    for ext in extents:
        if ext.data is None:
            left = ext.length
            while left:
                n = min(left, len(zeros))
                h.update(memoryview(zeros)[:n])
                left -= n
        else:
            h.update(ext.data)
    return h.hexdigest()


def write_increment(
    fh: BinaryIO,
    extents: Iterable[Extent],
    *,
    direction: str,
    volume: str,
    first_offset: int,
    last_offset: int,
    digest: bool = True,
) -> IncrementInfo:
    """Write an increment of ``extents`` (sorted, non-overlapping, ≤ 1 MiB each) to ``fh``.

    ``digest`` (default True): compute ``ranges_sha256`` (the manifest needs only the
    forward's), block by block while the blocks compress. The bytes equal
    the reference writer (``tests/avro_reference.py``) of the Extent records. Raises
    :class:`ValueError` if the extents break those rules (a bug in the caller).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be forward or backward, not {direction!r}")
    exts = list(extents)
    n = len(exts)
    offs = list(map(_OFFSET, exts))
    lens = list(map(_LENGTH, exts))
    raw = list(map(_DATA, exts))
    has_zeros = None in raw
    if not _valid(offs, lens, raw, has_zeros):
        _raise_invalid(exts)
    if has_zeros:
        datas = [b"" if d is None else d for d in raw]
        zero = [-1 if d is None else 0 for d in raw]  # Avro true is the long -1's byte
        data_lens = list(map(len, datas))
    else:
        datas = cast(list[bytes], raw)
        zero = [0] * n
        data_lens = lens

    def chunks() -> Iterator[list[bytes]]:
        """The records' parts, ``_CHUNK`` records at a time (made while blocks compress)."""
        for i in range(0, n, _CHUNK):
            j = min(n, i + _CHUNK)
            if has_zeros:
                crcs = [0 if d is None else _crc(d) for d in raw[i:j]]
            else:
                crcs = list(map(_crc, datas[i:j]))
            pieces = encode_pieces(
                [
                    offs[i:j],
                    lens[i:j],
                    zero[i:j],
                    data_lens[i:j],
                    None,
                    crcs,
                    None,
                ],
                j - i,
            )
            parts = [b""] * (3 * (j - i))
            parts[0::3] = pieces[0:-1:2]
            parts[1::3] = datas[i:j]
            parts[2::3] = pieces[1::2]
            yield parts

    meta = {
        "kcdp.format": "increment",
        "kcdp.version": "1",
        "kcdp.direction": direction,
        "kcdp.volume": volume,
        "kcdp.first_offset": str(first_offset),
        "kcdp.last_offset": str(last_offset),
    }
    sha = hashlib.sha256()
    ranged = _zeros_expanded(raw, lens) if has_zeros and digest else []

    def digest_block(start: int, end: int) -> None:
        if has_zeros:  # a block of zero runs may cover far more than it holds: no join
            for piece in ranged[start:end]:
                sha.update(piece)
        else:
            sha.update(b"".join(datas[start:end]))

    write_pieces(
        fh,
        load_schema("Extent"),
        chunks(),
        count=n,
        stride=3,
        meta=meta,
        on_block=digest_block if digest else None,
    )
    return IncrementInfo(
        extents=n, logical_bytes=sum(lens), ranges_sha256=sha.hexdigest() if digest else ""
    )


#: Extents encoded at a time (about 4 MiB of 4 KiB writes: four blocks).
_CHUNK = 1024
_OFFSET = operator.attrgetter("offset")
_LENGTH = operator.attrgetter("length")
_DATA = operator.attrgetter("data")


def _zeros_expanded(raw: list[bytes | None], lens: list[int]) -> list[bytes | memoryview]:
    """The extents' bytes with zero runs as zeros (views of one shared zero buffer)."""
    zeros = memoryview(bytes(max(lens)))
    return [zeros[:n] if d is None else d for d, n in zip(raw, lens, strict=True)]


def _valid(offs: list[int], lens: list[int], raw: list[bytes | None], has_zeros: bool) -> bool:
    """Whether the extents are sorted, non-overlapping, 1..MAX_EXTENT long and their data
    (where not zero) as long as the extent: checks over whole columns."""
    if not offs:
        return True
    if offs[0] < -1 or min(lens) <= 0 or max(lens) > MAX_EXTENT:
        return False
    if any(map(operator.gt, map(operator.add, offs, lens), offs[1:])):
        return False
    if has_zeros:
        return all(d is None or len(d) == n for d, n in zip(raw, lens, strict=True))
    return list(map(len, cast(list[bytes], raw))) == lens


def _raise_invalid(exts: list[Extent]) -> None:
    """Raise ValueError naming the first extent that breaks the increment rules."""
    end = -1
    for ext in exts:
        if ext.offset < end or ext.length <= 0 or ext.length > MAX_EXTENT:
            raise ValueError(
                f"extent ({ext.offset}, {ext.length}) unsorted, overlapping or too long"
            )
        if ext.data is not None and len(ext.data) != ext.length:
            raise ValueError(f"extent at {ext.offset}: {len(ext.data)} data bytes for {ext.length}")
        end = ext.end
    raise AssertionError("extents reported invalid but none breaks a rule")


def increment_meta(source: bytes | BinaryIO, *, name: str = "increment") -> dict[str, str]:
    """The header metadata of an increment (checked format and version)."""
    meta, _ = read_container(source, fmt="increment", what=name)
    return meta


def read_increment(
    source: bytes | BinaryIO,
    *,
    expect_direction: str | None = None,
    name: str = "increment",
) -> Iterator[Extent]:
    """Yield the extents of an increment, verifying each as it is read.

    Raises :class:`IntegrityError` naming ``name`` (use the object key) on a corrupt or
    truncated container, a CRC-32C mismatch, unsorted/overlapping/oversized extents or a
    direction other than ``expect_direction``. The header is checked before this returns.
    """
    meta, records = read_container(source, fmt="increment", what=name)
    direction = meta.get("kcdp.direction")
    if direction not in DIRECTIONS:
        raise IntegrityError(f"{name}: bad kcdp.direction {direction!r}")
    if expect_direction is not None and direction != expect_direction:
        raise IntegrityError(f"{name}: is a {direction} increment, expected {expect_direction}")
    meta_int(meta, "kcdp.first_offset", name)
    meta_int(meta, "kcdp.last_offset", name)
    return _extents(records, name)


def _extents(records: Iterator[dict[str, Any]], name: str) -> Iterator[Extent]:
    end = -1
    for rec in records:
        off, length, data = rec["offset"], rec["length"], rec["data"]
        if off < end or length <= 0 or length > MAX_EXTENT:
            raise IntegrityError(
                f"{name}: extent ({off}, {length}) unsorted, overlapping or too long"
            )
        end = off + length
        if rec["zero"]:
            if data or rec["crc32c"] != 0:
                raise IntegrityError(f"{name}: zero extent at {off} carries data")
            yield Extent(off, length, None)
            continue
        if len(data) != length:
            raise IntegrityError(f"{name}: extent at {off} has {len(data)} bytes for {length}")
        if crc32c(data) != rec["crc32c"]:
            raise IntegrityError(f"{name}: CRC-32C mismatch in extent at {off}")
        yield Extent(off, length, data)
