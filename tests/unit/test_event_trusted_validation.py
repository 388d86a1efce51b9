"""WriteEvent.validate_trusting_crc: every rule of validate except the CRC re-hash."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.errors import InvalidEventError
from schemas.events import EventKind, WriteEvent, crc32c

DATA = b"captured bytes"


def _write(**over: Any) -> WriteEvent:
    # hand-built, not tests.event_factory: validation of raw fields, format 1 included
    fields: dict[str, Any] = {
        "group": "g",
        "volume": "v",
        "sequence": 4,
        "kind": EventKind.WRITE,
        "timestamp_us": 1,
        "offset": 512,
        "length": len(DATA),
        "data": DATA,
        "volume_size": 4096,
        "crc32c": crc32c(DATA),
        "session": "ab" * 16,
    }
    fields.update(over)
    return WriteEvent(**fields)


def test_a_valid_event_passes_both() -> None:
    event = _write()
    event.validate()
    event.validate_trusting_crc()


def test_only_validate_rehashes_the_data() -> None:
    event = _write(crc32c=crc32c(DATA) ^ 1)
    event.validate_trusting_crc()
    with pytest.raises(InvalidEventError, match="CRC-32C"):
        event.validate()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"offset": 4090}, "ends past the volume end"),
        ({"length": 3}, "data bytes"),
        ({"offset": -1}, "negative offset"),
        ({"volume_size": 0}, "volume_size must be positive"),
        ({"volume": ""}, "without a volume name"),
        ({"kind": EventKind.ZERO}, "must not carry data"),
        ({"kind": EventKind.ZERO, "data": b""}, "must not carry data or a CRC"),
        (
            {"kind": EventKind.BOOKMARK, "data": b"", "length": 0, "crc32c": 0},
            "bookmark without a name",
        ),
        ({"kind": EventKind.TRIM, "data": b"", "length": 0, "crc32c": 0}, "empty TRIM"),
    ],
)
def test_both_enforce_the_other_rules(over: dict[str, Any], message: str) -> None:
    event = _write(**over)
    for check in (event.validate, event.validate_trusting_crc):
        with pytest.raises(InvalidEventError, match=message):
            check()
