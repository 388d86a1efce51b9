"""Forward and backward increments (docs/FORMAT.md "Increments").

An increment is an Avro container file of ``io.kcdp.v1.Extent`` records, zstd-compressed,
sorted by offset, non-overlapping, each at most 1 MiB, each with a CRC-32C of its data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from connectors.errors import IntegrityError
from schemas import load_schema
from schemas.events import crc32c
from streams.avrofile import meta_int, read_container, write_container
from streams.extents import MAX_EXTENT, Extent

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
    forward's). Raises :class:`ValueError` if the extents break those rules (a bug in the caller).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be forward or backward, not {direction!r}")
    exts = list(extents)
    records: list[dict[str, Any]] = []
    end = -1
    logical = 0
    for ext in exts:
        if ext.offset < end or ext.length <= 0 or ext.length > MAX_EXTENT:
            raise ValueError(
                f"extent ({ext.offset}, {ext.length}) unsorted, overlapping or too long"
            )
        if ext.data is not None and len(ext.data) != ext.length:
            raise ValueError(f"extent at {ext.offset}: {len(ext.data)} data bytes for {ext.length}")
        end = ext.end
        logical += ext.length
        if ext.data is None:
            records.append(
                {"offset": ext.offset, "length": ext.length, "zero": True, "data": b"", "crc32c": 0}
            )
        else:
            records.append(
                {
                    "offset": ext.offset,
                    "length": ext.length,
                    "zero": False,
                    "data": ext.data,
                    "crc32c": crc32c(ext.data),
                }
            )
    meta = {
        "kcdp.format": "increment",
        "kcdp.version": "1",
        "kcdp.direction": direction,
        "kcdp.volume": volume,
        "kcdp.first_offset": str(first_offset),
        "kcdp.last_offset": str(last_offset),
    }
    write_container(fh, load_schema("Extent"), records, meta)
    return IncrementInfo(
        extents=len(exts),
        logical_bytes=logical,
        ranges_sha256=ranges_digest(exts) if digest else "",
    )


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
