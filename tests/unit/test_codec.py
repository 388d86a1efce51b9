"""The Avro codec: round trips, framing bytes, schema evolution, and DecodeError on bad input."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import struct
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given
from hypothesis import strategies as st

from connectors.errors import DecodeError
from schemas import SCHEMA_FILES, load_schema, schema_json
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent, crc32c

SIZE = 1 << 20


def _event(kind: EventKind, **over: Any) -> WriteEvent:
    base: dict[str, Any] = {
        "group": "db",
        "volume": "db",
        "sequence": 7,
        "kind": kind,
        "timestamp_us": 1_795_571_270_880_000,
        "volume_size": SIZE,
        "session": "9f2c" * 8,
        "host": "host-a",
    }
    if kind in (EventKind.WRITE, EventKind.BASELINE):
        data = bytes(range(256)) * 3 + b"\x00tail"
        base.update(offset=4095, length=len(data), data=data, crc32c=crc32c(data))
    elif kind in (EventKind.ZERO, EventKind.TRIM):
        base.update(offset=8192, length=65536)
    elif kind is EventKind.BOOKMARK:
        base.update(name="before-upgrade")
    elif kind is EventKind.SESSION_START:
        base.update(sequence=0, name="1a2b" * 8)
    elif kind is EventKind.TICK:
        base.update(volume="", session="", host="", sequence=-1, volume_size=0)
    base.update(over)
    # hand-built, not tests.event_factory: the codec's encoding of every raw field
    return WriteEvent(**base)


ALL_EVENTS = [_event(k) for k in EventKind]

WINDOW_COMMITTED: dict[str, Any] = {
    "format_version": 1,
    "volume": "db",
    "group": "db",
    "topic": "kcdp.writes",
    "partition": 3,
    "first_offset": 120,
    "last_offset": 245,
    "first_time_us": 1_795_571_270_880_000,
    "last_time_us": 1_795_571_271_870_000,
    "events": 126,
    "bytes_written": 516096,
    "forward_bytes": 4211,
    "backward_bytes": 3890,
    "writelog_bytes": 9012,
    "close_reason": "time",
    "manifest_key": "v1/volumes/db/manifests/00000000000000000120-00000000000000000245.json",
    "consistent": False,
    "committed_time_us": 1_795_571_272_001_000,
}

DEAD_LETTER: dict[str, Any] = {
    "format_version": 1,
    "source_topic": "kcdp.writes",
    "source_partition": 1,
    "source_offset": 99,
    "key": b"db",
    "value": b"\xc3\x01garbage",
    "volume": "",
    "error": "DecodeError",
    "reason": "unknown writer schema fingerprint",
    "time_us": 1_795_571_272_001_000,
}


def _valid_payload() -> bytes:
    return AvroCodec().encode(_event(EventKind.WRITE).to_record())


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("event", ALL_EVENTS, ids=[str(e.kind) for e in ALL_EVENTS])
def test_write_event_round_trip_every_kind(event: WriteEvent) -> None:
    codec = AvroCodec()
    decoded = WriteEvent.from_record(codec.decode(codec.encode(event.to_record())))
    assert decoded == event
    assert decoded.kind is event.kind


@pytest.mark.parametrize(
    ("name", "record"), [("WindowCommitted", WINDOW_COMMITTED), ("DeadLetter", DEAD_LETTER)]
)
def test_other_records_round_trip(name: str, record: dict[str, Any]) -> None:
    codec = AvroCodec(name)
    assert codec.decode(codec.encode(record)) == record


def test_dead_letter_null_key_and_value_round_trip() -> None:
    codec = AvroCodec("DeadLetter")
    record = {**DEAD_LETTER, "key": None, "value": None}
    assert codec.decode(codec.encode(record)) == record


def test_every_schema_file_parses_and_is_namespaced_and_versioned() -> None:
    for name in SCHEMA_FILES:
        raw = schema_json(name)
        assert raw["namespace"] == "io.kcdp.v1", name
        assert raw["name"] == name
        load_schema(name)
    for name in ("WriteEvent", "WindowCommitted", "DeadLetter"):
        fields = {f["name"]: f for f in schema_json(name)["fields"]}
        assert fields["format_version"]["default"] == 1, name


def test_codec_for_one_record_type_refuses_another() -> None:
    payload = AvroCodec("WindowCommitted").encode(WINDOW_COMMITTED)
    with pytest.raises(DecodeError, match="fingerprint"):
        AvroCodec("WriteEvent").decode(payload)


# -- framing -----------------------------------------------------------------------------

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_avro(data: bytes) -> int:
    """The Avro spec's 64-bit Rabin fingerprint, written out independently of the codec."""
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY if fp & 1 else 0)
        table.append(fp)
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_crc64_reference_matches_the_avro_spec_vector() -> None:
    # From the Avro specification's test suite: the fingerprint of the schema "null".
    assert struct.unpack("<q", _crc64_avro(b'"null"').to_bytes(8, "little"))[0] == (
        7195948357588979594
    )


@pytest.mark.parametrize("name", ["WriteEvent", "WindowCommitted", "DeadLetter"])
def test_single_object_framing_bytes(name: str) -> None:
    record = {
        "WriteEvent": _event(EventKind.WRITE).to_record(),
        "WindowCommitted": WINDOW_COMMITTED,
        "DeadLetter": DEAD_LETTER,
    }[name]
    payload = AvroCodec(name).encode(record)
    canonical = to_parsing_canonical_form(load_schema(name)).encode()
    body = io.BytesIO()
    fastavro.schemaless_writer(body, load_schema(name), record)
    assert payload[:2] == b"\xc3\x01"
    assert payload[2:10] == _crc64_avro(canonical).to_bytes(8, "little")
    assert payload[10:] == body.getvalue()


def test_confluent_framing_bytes() -> None:
    client = SchemaRegistryClient.new_client({"url": "mock://framing"})
    codec = AvroCodec(registry_client=client, subject="kcdp.writes-value")
    assert codec.framing == "confluent"
    payload = codec.encode(_event(EventKind.ZERO).to_record())
    schema_id = client.get_latest_version("kcdp.writes-value").schema_id
    assert payload[0:1] == b"\x00"
    assert struct.unpack(">I", payload[1:5])[0] == schema_id
    body = io.BytesIO()
    fastavro.schemaless_writer(body, load_schema("WriteEvent"), _event(EventKind.ZERO).to_record())
    assert payload[5:] == body.getvalue()


# -- evolution ---------------------------------------------------------------------------


def _v2_schema() -> dict[str, Any]:
    schema = copy.deepcopy(schema_json("WriteEvent"))
    schema["fields"].append(
        {"name": "tenant", "type": "string", "default": "none", "doc": "added in a test"}
    )
    return schema


def test_v1_reader_reads_newer_single_object_record() -> None:
    v2 = fastavro.parse_schema(_v2_schema())
    writer = AvroCodec(reader_schema=v2)
    event = _event(EventKind.WRITE)
    payload = writer.encode({**event.to_record(), "tenant": "acme"})
    reader = AvroCodec()
    with pytest.raises(DecodeError, match="unknown writer schema fingerprint"):
        reader.decode(payload)
    reader.add_writer_schema(_v2_schema())
    record = reader.decode(payload)
    assert "tenant" not in record
    assert WriteEvent.from_record(record) == event


def test_newer_reader_reads_v1_single_object_record_with_default() -> None:
    event = _event(EventKind.BOOKMARK)
    payload = AvroCodec().encode(event.to_record())
    reader = AvroCodec(reader_schema=fastavro.parse_schema(_v2_schema()))
    reader.add_writer_schema(schema_json("WriteEvent"))
    record = reader.decode(payload)
    assert record["tenant"] == "none"
    assert WriteEvent.from_record(record) == event


def test_confluent_v1_reader_reads_newer_record_and_newer_reader_reads_v1() -> None:
    client = SchemaRegistryClient.new_client({"url": "mock://evolution"})
    subject = "kcdp.writes-value"
    v1 = AvroCodec(registry_client=client, subject=subject)
    v2 = AvroCodec(
        reader_schema=fastavro.parse_schema(_v2_schema()),
        registry_client=client,
        subject=subject,
    )
    old, new = _event(EventKind.WRITE, sequence=1), _event(EventKind.WRITE, sequence=2)
    old_payload = v1.encode(old.to_record())
    new_payload = v2.encode({**new.to_record(), "tenant": "acme"})
    assert old_payload[1:5] != new_payload[1:5], "the two schemas must have distinct ids"
    # fresh codecs on the shared registry: writer schemas come from the registry by id
    reader_v1 = AvroCodec(registry_client=client, subject=subject)
    reader_v2 = AvroCodec(
        reader_schema=fastavro.parse_schema(_v2_schema()),
        registry_client=client,
        subject=subject,
    )
    decoded_new = reader_v1.decode(new_payload)
    assert "tenant" not in decoded_new
    assert WriteEvent.from_record(decoded_new) == new
    decoded_old = reader_v2.decode(old_payload)
    assert decoded_old["tenant"] == "none"
    assert WriteEvent.from_record(decoded_old) == old
    assert reader_v2.decode(new_payload)["tenant"] == "acme"


# -- bad input ---------------------------------------------------------------------------


def test_every_prefix_of_a_valid_record_is_a_decode_error() -> None:
    payload = _valid_payload()
    codec = AvroCodec()
    for cut in range(len(payload)):
        with pytest.raises(DecodeError):
            codec.decode(payload[:cut])


def test_every_prefix_of_a_confluent_record_is_a_decode_error() -> None:
    codec = AvroCodec(registry_client=SchemaRegistryClient.new_client({"url": "mock://prefix"}))
    payload = codec.encode(_event(EventKind.BASELINE).to_record())
    for cut in range(len(payload)):
        with pytest.raises(DecodeError):
            codec.decode(payload[:cut])


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "bad magic"),
        (b"\xc3", "bad magic"),
        (b"hello, not avro", "bad magic"),
        (b"\xc3\x01\x00\x01", "truncated"),
        (b"\xc3\x01" + b"\xee" * 8 + b"\x02", "unknown writer schema fingerprint"),
        (b"\x00\x00\x00\x00\x07\x02", "no --schema-registry"),
    ],
)
def test_bad_payloads_raise_decode_error(payload: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        AvroCodec().decode(payload)


def test_trailing_bytes_are_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        AvroCodec().decode(_valid_payload() + b"\x00")


def test_unknown_schema_id_is_a_decode_error() -> None:
    codec = AvroCodec(registry_client=SchemaRegistryClient.new_client({"url": "mock://ids"}))
    payload = codec.encode(_event(EventKind.WRITE).to_record())
    forged = b"\x00" + struct.pack(">I", 424242) + payload[5:]
    with pytest.raises(DecodeError, match="unknown schema id 424242"):
        codec.decode(forged)


def test_enum_symbol_out_of_range_is_a_decode_error() -> None:
    codec = AvroCodec("WindowCommitted")
    payload = bytearray(codec.encode(WINDOW_COMMITTED))
    with pytest.raises(DecodeError):
        codec.decode(bytes(payload[:10]) + b"\x7f" * 40)


def test_non_bytes_input_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="expected bytes"):
        AvroCodec().decode("text")  # type: ignore[arg-type]


@given(st.binary(max_size=256))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    codec = AvroCodec()
    with contextlib.suppress(DecodeError):
        codec.decode(data)


@given(st.binary(max_size=200))
def test_valid_header_with_random_body_raises_only_decode_error(body: bytes) -> None:
    codec = AvroCodec()
    header = _valid_payload()[:10]
    try:
        record = codec.decode(header + body)
    except DecodeError:
        return
    # the rare body that decodes must be a complete WriteEvent record
    assert set(record) == {f["name"] for f in schema_json("WriteEvent")["fields"]}


_FUZZ_CODEC = AvroCodec(registry_client=SchemaRegistryClient.new_client({"url": "mock://fuzz"}))
_FUZZ_CODEC.encode(_event(EventKind.WRITE).to_record())  # registers schema id 1


@given(st.integers(min_value=0, max_value=2**32 - 1), st.binary(max_size=64))
def test_random_confluent_frames_raise_only_decode_error(schema_id: int, body: bytes) -> None:
    codec = _FUZZ_CODEC
    frame = b"\x00" + struct.pack(">I", schema_id) + body
    with contextlib.suppress(DecodeError):
        codec.decode(frame)


def test_schema_files_are_valid_json_with_docs() -> None:
    for name in SCHEMA_FILES:
        raw = schema_json(name)
        assert raw.get("doc"), f"{name} has no doc"
        json.dumps(raw)
