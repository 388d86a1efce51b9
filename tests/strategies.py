"""Hypothesis strategies shared by the codec tests: any WriteEvent the schema can carry."""

from __future__ import annotations

from hypothesis import strategies as st

from schemas.events import EventKind, WriteEvent

LONGS = st.one_of(
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.sampled_from([0, 1, -1, 63, 64, -64, -65, (1 << 63) - 1, -(1 << 63), 1 << 32]),
)
TEXT = st.text(max_size=40)

#: WriteEvents with every field over its full Avro range (not only valid events).
EVENTS = st.builds(
    WriteEvent,
    group=TEXT,
    volume=TEXT,
    sequence=LONGS,
    kind=st.sampled_from(list(EventKind)),
    timestamp_us=LONGS,
    offset=LONGS,
    length=LONGS,
    data=st.binary(max_size=300),
    volume_size=LONGS,
    crc32c=LONGS,
    session=TEXT,
    host=TEXT,
    name=TEXT,
    format_version=st.integers(-(1 << 31), (1 << 31) - 1),
)
