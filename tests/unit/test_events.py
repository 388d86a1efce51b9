"""WriteEvent.validate enforces the event rules of docs/FORMAT.md, with good and bad examples."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from connectors.errors import InvalidEventError
from schemas.events import CHANGE_KINDS, DATA_KINDS, EventKind, WriteEvent, crc32c

SIZE = 65536


def event(kind: EventKind, **over: Any) -> WriteEvent:
    """A valid event of ``kind`` with ``over`` applied."""
    base: dict[str, Any] = {
        "group": "g",
        "volume": "vol",
        "sequence": 3,
        "kind": kind,
        "timestamp_us": 1_000_000,
        "volume_size": SIZE,
        "session": "ab" * 16,
    }
    if kind in DATA_KINDS:
        data = b"hello"
        base.update(offset=1, length=len(data), data=data, crc32c=crc32c(data))
    elif kind in CHANGE_KINDS:
        base.update(offset=3, length=4093)
    elif kind is EventKind.BOOKMARK:
        base.update(name="mark")
    elif kind is EventKind.TICK:
        base.update(volume="", session="", sequence=-1, volume_size=0)
    elif kind is EventKind.SESSION_START:
        base.update(sequence=0)
    base.update(over)
    # hand-built, not tests.event_factory: the rules are checked on raw fields
    return WriteEvent(**base)


@pytest.mark.parametrize("kind", list(EventKind))
def test_valid_event_of_every_kind_passes(kind: EventKind) -> None:
    event(kind).validate()


def test_crc32c_is_castagnoli() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"") == 0


@pytest.mark.parametrize("kind", sorted(CHANGE_KINDS))
def test_change_may_end_exactly_at_the_volume_end_and_be_unaligned(kind: EventKind) -> None:
    data = b"x" * 7
    fields: dict[str, Any] = {"offset": SIZE - 7, "length": 7}
    if kind in DATA_KINDS:
        fields.update(data=data, crc32c=crc32c(data))
    event(kind, **fields).validate()


@pytest.mark.parametrize("kind", sorted(CHANGE_KINDS))
def test_change_past_the_volume_end_is_invalid(kind: EventKind) -> None:
    data = b"x" * 8
    fields: dict[str, Any] = {"offset": SIZE - 7, "length": 8}
    if kind in DATA_KINDS:
        fields.update(data=data, crc32c=crc32c(data))
    with pytest.raises(InvalidEventError, match="ends past the volume end"):
        event(kind, **fields).validate()


@pytest.mark.parametrize("kind", sorted(CHANGE_KINDS))
def test_empty_change_is_invalid(kind: EventKind) -> None:
    with pytest.raises(InvalidEventError, match="empty"):
        event(kind, length=0, data=b"", crc32c=0).validate()


@pytest.mark.parametrize("field", ["offset", "length"])
def test_negative_offset_or_length_is_invalid(field: str) -> None:
    with pytest.raises(InvalidEventError, match="negative"):
        event(EventKind.ZERO, **{field: -1}).validate()


@pytest.mark.parametrize("kind", [k for k in EventKind if k is not EventKind.TICK])
def test_every_event_but_tick_names_its_volume(kind: EventKind) -> None:
    with pytest.raises(InvalidEventError, match="without a volume name"):
        event(kind, volume="").validate()


@pytest.mark.parametrize("size", [0, -4096])
@pytest.mark.parametrize("kind", [EventKind.WRITE, EventKind.SESSION_START, EventKind.BOOKMARK])
def test_volume_size_must_be_positive(kind: EventKind, size: int) -> None:
    with pytest.raises(InvalidEventError, match="volume_size must be positive"):
        event(kind, volume_size=size).validate()


@pytest.mark.parametrize("kind", sorted(DATA_KINDS))
def test_data_length_must_match(kind: EventKind) -> None:
    with pytest.raises(InvalidEventError, match="length 6 but 5 data bytes"):
        event(kind, length=6).validate()


@pytest.mark.parametrize("kind", sorted(DATA_KINDS))
def test_data_must_match_its_crc(kind: EventKind) -> None:
    good = event(kind)
    with pytest.raises(InvalidEventError, match="CRC-32C"):
        replace(good, crc32c=good.crc32c ^ 1).validate()
    with pytest.raises(InvalidEventError, match="CRC-32C"):
        replace(good, data=b"hellO").validate()


@pytest.mark.parametrize(
    "kind", [k for k in EventKind if k not in DATA_KINDS and k is not EventKind.TICK]
)
def test_kinds_without_data_must_not_carry_data(kind: EventKind) -> None:
    with pytest.raises(InvalidEventError, match="must not carry data"):
        event(kind, data=b"x", crc32c=crc32c(b"x")).validate()


def test_bookmark_needs_a_name() -> None:
    with pytest.raises(InvalidEventError, match="bookmark without a name"):
        event(EventKind.BOOKMARK, name="").validate()


def test_error_names_volume_and_sequence() -> None:
    with pytest.raises(InvalidEventError, match=r"volume 'vol' sequence 3"):
        event(EventKind.WRITE, length=99).validate()


def test_invalid_event_error_is_not_retriable_and_exits_3() -> None:
    with pytest.raises(InvalidEventError) as info:
        event(EventKind.TRIM, length=0).validate()
    assert info.value.retriable is False
    assert info.value.exit_code == 3


@pytest.mark.parametrize("kind", list(EventKind))
def test_record_round_trip(kind: EventKind) -> None:
    ev = event(kind, host="h1")
    rec = ev.to_record()
    assert rec["kind"] == kind.value
    assert isinstance(rec["kind"], str)
    assert WriteEvent.from_record(rec) == ev


def test_from_record_ignores_unknown_fields_and_fills_defaults() -> None:
    rec = {
        "group": "g",
        "volume": "v",
        "sequence": 0,
        "kind": "SESSION_START",
        "timestamp_us": 5,
        "extra": "ignored",
    }
    ev = WriteEvent.from_record(rec)
    assert ev.kind is EventKind.SESSION_START
    assert (ev.offset, ev.length, ev.data, ev.name, ev.format_version) == (0, 0, b"", "", 1)


@pytest.mark.parametrize(
    "over",
    [{"session": ""}, {"sequence": -1}],
    ids=["no-session", "negative-sequence"],
)
def test_non_tick_events_need_a_session_and_a_sequence(over: dict[str, Any]) -> None:
    with pytest.raises(InvalidEventError):
        event(EventKind.WRITE, **over).validate()


def test_session_start_has_sequence_zero() -> None:
    event(EventKind.SESSION_START, sequence=0).validate()
    with pytest.raises(InvalidEventError, match="SESSION_START"):
        event(EventKind.SESSION_START, sequence=5).validate()


@pytest.mark.parametrize(
    "over", [{"volume": "v"}, {"sequence": 0}, {"data": b"x"}], ids=["volume", "sequence", "data"]
)
def test_tick_is_only_a_marker(over: dict[str, Any]) -> None:
    with pytest.raises(InvalidEventError, match="TICK"):
        event(EventKind.TICK, **over).validate()
