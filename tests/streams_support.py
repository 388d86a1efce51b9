"""Helpers for the increment tests: event factories, a reference model, chain checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.store.base import ObjectStore
from schemas.events import CHANGE_KINDS, DATA_KINDS, EventKind, WriteEvent, crc32c
from streams.increment import read_increment
from streams.manifest import Manifest, get_verified, list_window_keys, load_manifest


@dataclass
class Volume:
    """Makes a consistent event stream for one volume and keeps its reference bytes."""

    name: str
    size: int
    session: str = "a" * 32
    seq: int = 0
    t_us: int = 1_700_000_000_000_000
    model: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.model = bytearray(self.size)

    def event(
        self,
        kind: EventKind,
        offset: int = 0,
        data: bytes = b"",
        length: int = 0,
        dt_us: int = 1000,
        name: str = "",
    ) -> WriteEvent:
        self.t_us += dt_us
        ev = WriteEvent(
            group=self.name,
            volume=self.name,
            sequence=self.seq,
            kind=kind,
            timestamp_us=self.t_us,
            offset=offset,
            length=length or len(data),
            data=data,
            volume_size=self.size,
            crc32c=crc32c(data),
            session=self.session,
            name=name,
        )
        self.seq += 1
        if kind in DATA_KINDS:
            self.model[offset : offset + len(data)] = data
        elif kind in CHANGE_KINDS:
            self.model[offset : offset + ev.length] = bytes(ev.length)
        return ev

    def start(self) -> list[WriteEvent]:
        """SESSION_START, BASELINE_START, BASELINE_END: a new, consistent all-zero volume."""
        return [
            self.event(EventKind.SESSION_START),
            self.event(EventKind.BASELINE_START),
            self.event(EventKind.BASELINE_END),
        ]

    def write(self, offset: int, data: bytes, dt_us: int = 1000) -> WriteEvent:
        return self.event(EventKind.WRITE, offset, data, dt_us=dt_us)


def tick(t_us: int) -> WriteEvent:
    return WriteEvent(group="", volume="", sequence=-1, kind=EventKind.TICK, timestamp_us=t_us)


def apply_extents(buf: bytearray, blob: bytes, direction: str) -> None:
    for ext in read_increment(blob, expect_direction=direction):
        buf[ext.offset : ext.end] = ext.payload()


def check_chain(
    store: ObjectStore, volume: str, size: int, states: dict[int, bytes]
) -> list[Manifest]:
    """Walk every window: unbroken chain, forward/backward exact against ``states``.

    ``states[offset]`` is the model after point ``offset`` (``-1``: all zeros). Returns the
    manifests; the final replayed image must equal the state at the last window's end.
    """
    manifests = [load_manifest(store, k) for _, _, k in list_window_keys(store, volume)]
    image = bytearray(size)
    prev: tuple[int, int] | None = None
    for m in manifests:
        assert m.previous == prev, f"chain broken at {m.key}: {m.previous} != {prev}"
        if prev is not None:
            assert m.first_offset > prev[1]
        start = bytes(image)
        assert start == states[prev[1] if prev else -1]
        apply_extents(image, get_verified(store, m.forward), "forward")
        assert bytes(image) == states[m.last_offset], f"forward of {m.key} wrong"
        back = bytearray(image)
        apply_extents(back, get_verified(store, m.backward), "backward")
        assert bytes(back) == start, f"backward of {m.key} wrong"
        prev = (m.first_offset, m.last_offset)
    return manifests


def blob_of(store: ObjectStore) -> dict[str, bytes]:
    """Every object of a store (for determinism comparisons)."""
    return {info.key: store.get(info.key) for info in store.list("")}
