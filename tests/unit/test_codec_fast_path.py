"""The WriteEvent fast path of AvroCodec: byte-identical to fastavro's general encoder."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from hypothesis import given, settings

from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent
from tests.strategies import EVENTS


def reference(codec: AvroCodec, record: dict[str, Any], header: bytes) -> bytes:
    """What fastavro's general writer produces for ``record`` after ``header``."""
    buf = io.BytesIO()
    buf.write(header)
    fastavro.schemaless_writer(buf, codec.schema, record)
    return buf.getvalue()


SINGLE = AvroCodec("WriteEvent")
SINGLE_HEADER = b"\xc3\x01" + SINGLE._fingerprint


@settings(max_examples=300, deadline=None)
@given(EVENTS)
def test_fast_path_matches_fastavro_single_object(event: WriteEvent) -> None:
    record = event.to_record()
    expected = reference(SINGLE, record, SINGLE_HEADER)
    assert SINGLE.encode(record) == expected
    assert SINGLE.encode_event(event) == expected
    assert WriteEvent.from_record(SINGLE.decode(expected)) == event


CONFLUENT = AvroCodec(
    registry_client=SchemaRegistryClient.new_client({"url": "mock://fastpath"}),
    subject="kcdp.writes-value",
)


@settings(max_examples=100, deadline=None)
@given(EVENTS)
def test_fast_path_matches_fastavro_confluent(event: WriteEvent) -> None:
    codec = CONFLUENT
    first = codec.encode_event(event)
    header = first[:5]
    assert header[:1] == b"\x00"
    assert first == reference(codec, event.to_record(), header)
    assert codec.encode(event.to_record()) == first


def test_head_cache_follows_changing_session_fields() -> None:
    # hand-built, not tests.event_factory: the encoder's head cache over raw fields
    base = WriteEvent(group="g", volume="v", sequence=0, kind=EventKind.TICK, timestamp_us=1)
    seen = set()
    for i in range(300):  # more heads than the cache keeps
        event = WriteEvent(
            group="g", volume="v", sequence=i, kind=EventKind.TICK, timestamp_us=1, session=str(i)
        )
        encoded = SINGLE.encode_event(event)
        assert encoded == reference(SINGLE, event.to_record(), SINGLE_HEADER)
        seen.add(encoded)
    assert len(seen) == 300
    assert SINGLE.encode_event(base) == reference(SINGLE, base.to_record(), SINGLE_HEADER)


def assert_same_outcome(record: dict[str, Any]) -> None:
    """The codec encodes ``record`` exactly as fastavro does, or refuses it as fastavro does."""
    try:
        expected: bytes | type[BaseException] = reference(SINGLE, record, SINGLE_HEADER)
    except Exception as exc:  # the general encoder refuses it: the codec must refuse too
        expected = type(exc)
    if isinstance(expected, bytes):
        assert SINGLE.encode(record) == expected
    else:
        with pytest.raises(expected):
            SINGLE.encode(record)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sequence", 1 << 63),
        ("offset", -(1 << 63) - 1),
        ("data", bytearray(b"abc")),
        ("data", "text"),
        ("kind", "NOT_A_KIND"),
        ("format_version", 1 << 31),
        ("length", True),
        ("name", None),
        ("group", "\ud800"),
    ],
)
def test_unusual_values_take_the_general_path(field: str, value: Any) -> None:
    # hand-built, not tests.event_factory: a raw record with one field made unusual
    record = WriteEvent(
        group="g", volume="v", sequence=1, kind=EventKind.WRITE, timestamp_us=5
    ).to_record()
    record[field] = value
    assert_same_outcome(record)


@pytest.mark.parametrize("missing", ["format_version", "session", "offset", "name", "data"])
def test_missing_fields_take_the_general_path(missing: str) -> None:
    # hand-built, not tests.event_factory: a raw record with one field removed
    record = WriteEvent(
        group="g", volume="v", sequence=3, kind=EventKind.TICK, timestamp_us=9
    ).to_record()
    del record[missing]
    assert_same_outcome(record)
