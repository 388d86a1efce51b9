"""schemas.decode.EventDecoder: exactly ``WriteEvent.from_record(codec.decode(value))``.

Equal events for every well-formed value, and the same outcome (event, or exception type
and message) for damaged values: truncated, extended, or with a byte changed.
"""

from __future__ import annotations

import io

import fastavro
from confluent_kafka.schema_registry import SchemaRegistryClient
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import AvroCodec
from schemas.decode import EventDecoder
from schemas.events import EventKind, WriteEvent
from tests.strategies import EVENTS

CODEC = AvroCodec("WriteEvent")
DECODER = EventDecoder(CODEC)


def reference(value: bytes) -> tuple[str, object]:
    try:
        return "event", WriteEvent.from_record(CODEC.decode(value))
    except Exception as exc:
        return type(exc).__name__, str(exc)


def fast(decoder: EventDecoder, value: bytes) -> tuple[str, object]:
    try:
        return "event", decoder.decode(value)
    except Exception as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=300, deadline=None)
@given(EVENTS)
def test_well_formed_values_decode_to_the_same_event(event: WriteEvent) -> None:
    value = CODEC.encode_event(event)
    assert DECODER.decode(value) == WriteEvent.from_record(CODEC.decode(value)) == event
    fresh = EventDecoder(CODEC)
    assert fresh._parse(value) == event  # the fast path itself, not the fallback
    assert fresh._parse(value) == event  # with its head cached


@settings(max_examples=500, deadline=None)
@given(EVENTS, st.data())
def test_damaged_values_fail_or_decode_as_the_codec_does(
    event: WriteEvent, data: st.DataObject
) -> None:
    value = bytearray(CODEC.encode_event(event))
    how = data.draw(st.sampled_from(["truncate", "extend", "change"]))
    if how == "truncate":
        del value[data.draw(st.integers(0, len(value) - 1)) :]
    elif how == "extend":
        value += data.draw(st.binary(min_size=1, max_size=12))
    else:
        i = data.draw(st.integers(0, len(value) - 1))
        value[i] = data.draw(st.integers(0, 255))
    damaged = bytes(value)
    assert fast(DECODER, damaged) == reference(damaged)


def test_overlong_varints_and_negative_lengths_match_the_codec() -> None:
    # hand-built, not tests.event_factory: the bytes of a minimal record's raw fields
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, CODEC.schema, WriteEvent("g", "v", 1, EventKind.WRITE, 5).to_record()
    )
    head = CODEC.encode_event(WriteEvent("g", "v", 1, EventKind.WRITE, 5))[:10]
    raw = body.getvalue()
    for bad in (
        head + b"\xff" * 11 + raw[1:],  # format_version: an 11-byte varint
        head + b"\x02\x01" + raw[2:],  # group length -1
        head + b"\x02" + b"\x80" * 9 + b"\x7f" + raw[2:],  # beyond 64 bits
        head + raw[:-1] + b"\x02\xff",  # name: invalid UTF-8
    ):
        assert fast(DECODER, bad) == reference(bad)
        assert reference(bad)[0] != "event"


@settings(max_examples=50, deadline=None)
@given(EVENTS)
def test_other_framings_take_the_general_path(event: WriteEvent) -> None:
    registry = SchemaRegistryClient.new_client({"url": "mock://decoder"})
    codec = AvroCodec(registry_client=registry, subject="kcdp.writes-value")
    value = codec.encode_event(event)
    assert EventDecoder(codec).decode(value) == WriteEvent.from_record(codec.decode(value))
