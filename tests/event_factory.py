"""One way for tests to make a :class:`WriteEvent`: :func:`make_event` and :func:`make_tick`.

An event is sealed (event format 2, as the intercept writes it) unless the test asks for
format 1 (``sealed=False``: ``crc32c`` is the CRC-32C of the data). Defaults make a valid
event of volume ``v`` of 1 MiB in session ``"s" * 32``; every field can be given.
Tests about the raw encoding of fields (the codec, the seal, validation) build their
events by hand instead, and say so where they do.
"""

from __future__ import annotations

from schemas.events import EventKind, WriteEvent, crc32c

#: Default event time (µs since the epoch) and volume size.
T0_US = 1_700_000_000_000_000
SIZE = 1 << 20
SESSION = "s" * 32


def make_event(
    kind: EventKind = EventKind.WRITE,
    offset: int = 0,
    data: bytes = b"",
    *,
    length: int | None = None,
    volume: str = "v",
    group: str | None = None,
    sequence: int = 0,
    timestamp_us: int = T0_US,
    volume_size: int = SIZE,
    session: str = SESSION,
    host: str = "",
    name: str | None = None,
    sealed: bool = True,
) -> WriteEvent:
    """An event of ``kind`` at ``offset`` carrying ``data``, sealed once every field is set.

    ``length`` None: ``len(data)``; ``group`` None: the volume; ``name`` None: ``"bm"`` for
    a BOOKMARK (which needs one), else empty. For a TICK use :func:`make_tick`.
    """
    assert kind is not EventKind.TICK, "make_tick makes TICKs"
    event = WriteEvent(
        group=volume if group is None else group,
        volume=volume,
        sequence=sequence,
        kind=kind,
        timestamp_us=timestamp_us,
        offset=offset,
        length=len(data) if length is None else length,
        data=data,
        volume_size=volume_size,
        session=session,
        host=host,
        name=("bm" if kind is EventKind.BOOKMARK else "") if name is None else name,
    )
    if sealed:
        return event.seal()
    event.crc32c = crc32c(data)  # format 1: the CRC of the data (0 when there is none)
    return event


def make_tick(timestamp_us: int = T0_US) -> WriteEvent:
    """A TICK at ``timestamp_us`` (format 1, no volume, sequence -1, as agents write them)."""
    return WriteEvent(
        group="", volume="", sequence=-1, kind=EventKind.TICK, timestamp_us=timestamp_us
    )
