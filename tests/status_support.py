"""Test support for ``kcdp status``: a topic pair and a producer of one volume's events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from connectors.kafka import producer_config
from schemas.codec import AvroCodec
from schemas.events import EventKind, now_us
from tests.event_factory import make_event


@dataclass
class Topic:
    bootstrap: str
    name: str
    dlq: str

    def conf(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap}


class Writer:
    """Produces one volume's events (consistent new volume, then writes) to a topic, each
    acknowledged before the next; event times step 10 ms from ``t0_us`` (None: wall time)."""

    def __init__(self, topic: Topic, volume: str, *, size: int, t0_us: int | None = None) -> None:
        self.topic, self.volume, self.size = topic, volume, size
        self.codec = AvroCodec()
        self.seq = 0
        self.t0_us = t0_us
        self.t_us = t0_us or 0
        self.producer = Producer(producer_config(topic.conf()))
        self.offsets: list[int] = []

    def event(self, kind: EventKind, offset: int = 0, data: bytes = b"") -> int:
        self.t_us = self.t_us + 10_000 if self.t0_us is not None else now_us()
        ev = make_event(
            kind,
            offset,
            data,
            volume=self.volume,
            sequence=self.seq,
            timestamp_us=self.t_us,
            volume_size=self.size,
            sealed=False,  # format 1, as older topics hold: their readers stay covered
        )
        self.seq += 1
        got: list[int | None] = []
        self.producer.produce(
            self.topic.name,
            key=self.volume.encode(),
            value=self.codec.encode(ev.to_record()),
            on_delivery=lambda err, msg: got.append(-1 if err else msg.offset()),
        )
        self.producer.flush(10)
        at = got[0] if got else None
        assert at is not None and at >= 0
        self.offsets.append(at)
        return at

    def start(self) -> None:
        for kind in (EventKind.SESSION_START, EventKind.BASELINE_START, EventKind.BASELINE_END):
            self.event(kind)

    def write(self, offset: int, data: bytes) -> int:
        return self.event(EventKind.WRITE, offset, data)
