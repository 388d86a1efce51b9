"""Increments and write logs are zstd-compressed unless their first block does not
compress; then the whole file is written with the Avro ``null`` codec (FORMAT.md "Codecs").
Either way the bytes equal the reference writer's and read back exactly."""

from __future__ import annotations

import io
import random

import fastavro

from schemas import load_schema
from schemas.avrofile import CODEC, NULL_CODEC, choose_codec
from schemas.extents import Extent
from schemas.increment import read_increment, write_increment
from tests.avro_reference import write_container
from tests.property.test_container_encoder import extent_record

SPAN = {"volume": "v", "first_offset": 0, "last_offset": 9}
META = {
    "kcdp.format": "increment",
    "kcdp.version": "1",
    "kcdp.direction": "forward",
    "kcdp.volume": "v",
    "kcdp.first_offset": "0",
    "kcdp.last_offset": "9",
}


def _codec(blob: bytes) -> str:
    return str(fastavro.reader(io.BytesIO(blob)).codec)


def _write(exts: list[Extent]) -> bytes:
    buf = io.BytesIO()
    write_increment(buf, exts, direction="forward", **SPAN)  # type: ignore[arg-type]
    ref = io.BytesIO()
    write_container(ref, load_schema("Extent"), [extent_record(e) for e in exts], META)
    assert buf.getvalue() == ref.getvalue()
    assert list(read_increment(buf.getvalue(), expect_direction="forward")) == exts
    return buf.getvalue()


def test_choose_codec_by_what_zstd_saves() -> None:
    noise = random.Random(1).randbytes(1 << 20)
    assert choose_codec(noise) == (NULL_CODEC, noise)
    text = b"kafka-cdp " * 100_000
    name, packed = choose_codec(text)
    assert name == CODEC and len(packed) < len(text) // 100


def test_random_data_is_stored_uncompressed_in_every_block() -> None:
    rng = random.Random(2)
    exts = [Extent(i * 8192, 4096, rng.randbytes(4096)) for i in range(1000)]  # 4 blocks
    blob = _write(exts)
    assert _codec(blob) == NULL_CODEC
    assert len(blob) > 1000 * 4096  # nothing was compressed


def test_compressible_data_is_zstd_even_after_random_blocks() -> None:
    rng = random.Random(3)
    exts = [Extent(i * 8192, 4096, bytes([i % 251]) * 4096) for i in range(600)]
    exts += [Extent((1 << 30) + i * 8192, 4096, rng.randbytes(4096)) for i in range(300)]
    blob = _write(exts)
    assert _codec(blob) == CODEC  # decided by the first (compressible) block


def test_an_empty_increment_is_zstd() -> None:
    assert _codec(_write([])) == CODEC
