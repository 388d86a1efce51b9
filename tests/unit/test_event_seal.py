"""The format-2 seal (docs/FORMAT.md "The seal"): every field of an event is covered, so a
changed copy of a real event is invalid; format-1 events stay readable."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from connectors.errors import DecodeError, InvalidEventError
from schemas import schema_json
from schemas.codec import AvroCodec
from schemas.decode import EventDecoder
from schemas.events import EVENT_FORMAT, EventKind, WriteEvent, crc32c

DATA = b"hello, volume"


def _sealed(kind: EventKind = EventKind.WRITE, **over: object) -> WriteEvent:
    fields: dict[str, object] = {
        "group": "g",
        "volume": "v",
        "sequence": 7,
        "kind": kind,
        "timestamp_us": 1_700_000_000_000_123,
        "offset": 4096,
        "length": len(DATA) if kind is EventKind.WRITE else 512,
        "data": DATA if kind is EventKind.WRITE else b"",
        "volume_size": 1 << 20,
        "session": "s" * 32,
        "host": "h1",
        "name": "",
    }
    fields.update(over)
    # hand-built, not tests.event_factory: the seal over each raw field is under test
    return WriteEvent(**fields).seal()  # type: ignore[arg-type]


CHANGES: dict[str, Any] = {
    "group": "h",
    "volume": "w",
    "sequence": 8,
    "timestamp_us": 1_700_000_000_000_124,
    "offset": 4097,
    "volume_size": (1 << 20) + 1,
    "session": "t" * 32,
    "host": "h2",
    "name": "x",
}


def test_a_sealed_event_is_valid_and_format_2() -> None:
    ev = _sealed()
    ev.validate()
    assert ev.format_version == EVENT_FORMAT == 2
    assert ev.crc32c != crc32c(DATA)  # the seal covers more than the data
    assert ev.data_crc32c() == crc32c(DATA)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_any_changed_field_breaks_the_seal(name: str) -> None:
    forged = dataclasses.replace(_sealed(), **{name: CHANGES[name]})
    with pytest.raises(InvalidEventError, match="seal"):
        forged.validate()


def test_changed_data_or_kind_breaks_the_seal() -> None:
    with pytest.raises(InvalidEventError, match="seal"):
        dataclasses.replace(_sealed(), data=b"hello, volumE").validate()
    zero = _sealed(EventKind.ZERO)
    zero.validate()
    with pytest.raises(InvalidEventError, match="seal"):
        dataclasses.replace(zero, kind=EventKind.TRIM).validate()


def test_a_version_flipped_to_1_or_unknown_is_invalid() -> None:
    for kind in (EventKind.WRITE, EventKind.ZERO, EventKind.BASELINE_END):
        ev = _sealed(kind)
        with pytest.raises(InvalidEventError):
            dataclasses.replace(ev, format_version=1).validate()
    with pytest.raises(InvalidEventError, match="unknown event format 3"):
        dataclasses.replace(_sealed(), format_version=3).validate()


def test_format_1_events_stay_readable() -> None:
    old = dataclasses.replace(_sealed(), format_version=1, crc32c=crc32c(DATA))
    old.validate()
    assert old.data_crc32c() == crc32c(DATA)
    # hand-built, not tests.event_factory: a format-1 event as older producers wrote it
    marker = WriteEvent("g", "v", 0, EventKind.SESSION_START, 1, volume_size=1, session="s")
    marker.validate()


def test_the_seal_uses_the_schema_s_kind_order() -> None:
    kind = next(f for f in schema_json("WriteEvent")["fields"] if f["name"] == "kind")
    assert kind["type"]["symbols"] == [str(k) for k in EventKind]


def test_every_single_bit_flip_of_an_encoded_sealed_event_is_refused() -> None:
    codec = AvroCodec()
    decoder = EventDecoder(codec)
    ev = _sealed()
    value = codec.encode_event(ev)
    assert decoder.decode(value) == ev
    for i in range(10, len(value)):  # past the framing (a flipped fingerprint: DecodeError)
        for bit in range(8):
            flipped = value[:i] + bytes([value[i] ^ (1 << bit)]) + value[i + 1 :]
            try:
                got = decoder.decode(flipped)
            except (DecodeError, ValueError, KeyError, TypeError):
                continue
            with pytest.raises(InvalidEventError):
                got.validate()
