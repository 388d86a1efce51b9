"""Helpers for the increment tests: event factories, a reference model, chain checks."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.store.base import ObjectStore
from schemas.events import CHANGE_KINDS, DATA_KINDS, EventKind, WriteEvent
from schemas.increment import read_increment
from schemas.manifest import Manifest, get_verified, list_window_keys, load_manifest
from streams.outcome import Outcome
from streams.partition import PartitionProcessor
from streams.volume_builder import VolumeBuilder
from tests.event_factory import make_event, make_tick


@dataclass
class Volume:
    """Makes a consistent event stream for one volume and keeps its reference bytes."""

    name: str
    size: int
    session: str = "a" * 32
    seq: int = 0
    t_us: int = 1_700_000_000_000_000
    model: bytearray = field(default_factory=bytearray)
    group: str = ""  # empty: the volume's name
    #: events in format 2 (sealed, as the intercept writes them); False: format 1
    sealed: bool = True

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
        ev = make_event(
            kind,
            offset,
            data,
            length=length or len(data),
            volume=self.name,
            group=self.group or self.name,
            sequence=self.seq,
            timestamp_us=self.t_us,
            volume_size=self.size,
            session=self.session,
            name=name,
            sealed=self.sealed,
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
    return make_tick(t_us)


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


def produce(
    bootstrap: str, topic: str, items: list[tuple[bytes, bytes]], *, partition: int | None = None
) -> list[tuple[int, int]]:
    """Produce ``(key, value)`` records in order; return their ``(partition, offset)``."""
    from confluent_kafka import Producer

    from connectors.kafka import producer_config

    p = Producer(producer_config({"bootstrap.servers": bootstrap}))
    where: list[tuple[int, int] | None] = [None] * len(items)

    def done(i: int) -> Any:
        def cb(err: Any, msg: Any) -> None:
            assert err is None, err
            where[i] = (msg.partition(), msg.offset())

        return cb

    for i, (key, value) in enumerate(items):
        kw: dict[str, Any] = {} if partition is None else {"partition": partition}
        p.produce(topic, key=key, value=value, on_delivery=done(i), **kw)
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    return [w for w in where if w is not None]


def states_after(events: list[WriteEvent], offsets: list[int], size: int) -> dict[int, bytes]:
    """``{offset: volume bytes after that event}`` for one volume's events (and -1)."""
    model = bytearray(size)
    out = {-1: bytes(size)}
    for ev, off in zip(events, offsets, strict=True):
        if ev.kind in DATA_KINDS:
            model[ev.offset : ev.offset + ev.length] = ev.data
        elif ev.kind in CHANGE_KINDS:
            model[ev.offset : ev.offset + ev.length] = bytes(ev.length)
        out[off] = bytes(model)
    return out


def wait_for(
    predicate: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.3
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting until {what}")


def small_event(
    seq: int, kind: EventKind, off: int = 0, data: bytes = b"", length: int = 0
) -> WriteEvent:
    """An event of session ``s`` of volume ``v`` (64 bytes) for format tests."""
    return make_event(
        kind,
        off,
        data,
        length=length or len(data),
        sequence=seq,
        timestamp_us=1_000 + seq,
        volume_size=64,
        session="s",
    )


def feed_events(proc: PartitionProcessor, events: Sequence[tuple[int, WriteEvent]]) -> Outcome:
    """Feed decoded ``(offset, event)`` pairs, encoded as the processor's codec would read
    them (same rules as :meth:`PartitionProcessor.feed`)."""
    return proc.feed((o, None, proc.codec.encode(e.to_record())) for o, e in events)


def close_window(vb: VolumeBuilder, reason: str) -> Manifest | None:
    """Cut and store ``vb``'s open window inline; None if none is open."""
    cut = vb.cut_window(reason)
    return None if cut is None else vb.store_window(cut)


def random_writes(
    vols: Sequence[Volume], rng: random.Random, n: int, size: int, max_dt_us: int = 300
) -> list[WriteEvent]:
    """``n`` WRITE events of 1..8192 bytes at random offsets of volumes of ``size`` bytes,
    each of a volume chosen at random, ``0..max_dt_us`` apart in event time."""
    out = []
    for _ in range(n):
        v = rng.choice(vols)
        length = rng.randint(1, 8192)
        off = rng.randrange(0, size - length)
        out.append(v.write(off, rng.randbytes(length), dt_us=rng.randint(0, max_dt_us)))
    return out
