"""The reference Avro container writer, for tests only: what every direct encoder of
:mod:`schemas.avropieces` must equal byte for byte (fastavro with the project's header,
sync marker and codec choice)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import fastavro

from schemas.avrofile import (
    CODEC,
    NULL_CODEC,
    SYNC_INTERVAL,
    choose_codec,
    sorted_keys,
    sync_marker,
)


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
