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
from collections.abc import Iterator, Mapping
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
