"""10^5 malformed records in the write topic while a real intercept writes the same volume.

Real parts: the Tansu broker, a sync intercept (:class:`InterceptedVolume`), a raw
confluent-kafka producer on the same partition (the volume's group is the key), the worker
as a subprocess with large windows, a file store and ``kcdp restore``. Before each real
write a burst of bad records is produced and acknowledged, so they sit in the partition
between the real events: random bytes, truncated events, events with a flipped bit (in
their data: the CRC no longer matches; in their header: an unknown schema), events with a
bad CRC carrying the volume's next sequence, events of a foreign session (one character
different) with the next sequence, sequences far ahead and behind, and malformed TICKs (a
TICK naming the volume, a TICK carrying data). The promise: one bad record never stops
protection and never changes what the agent believes about the volume. So afterwards:

* the volume has no gap record, and every one of its real events is in exactly one window;
* the chain is exact and restores at sampled acknowledged points equal the model of the
  acknowledged writes;
* the dead-letter topic holds every bad record exactly once, with its bytes, and no real
  one; by ``volume`` the counts are those of the bad records that name the volume.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from connectors.intercept import InterceptedVolume
from connectors.kafka import ensure_topics, producer_config
from connectors.store import open_store
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent, crc32c, now_us
from tests.event_factory import make_event, make_tick
from tests.fault.support import (
    SyncWriter,
    assert_history_exact,
    read_partition,
    volume_events,
    wait_consumed,
    wait_durable,
    worker,
)

SIZE = 256 << 10
VOLUME = "flood"
REAL_WRITES = 200
BURST = 500  # bad records before each real write: 10^5 in all
CATEGORIES = (
    "random",
    "truncated",
    "flipped-data",
    "flipped-header",
    "bad-crc-next",
    "foreign-session",
    "far-ahead",
    "behind",
    "tick-volume",
    "tick-data",
)
#: categories whose dead letter names the volume (the others do not decode, or are TICKs)
NAMED = {"flipped-data", "bad-crc-next", "foreign-session", "far-ahead", "behind", "tick-volume"}


class Forger:
    """Builds the bad records of one burst from the intercept's current state."""

    def __init__(self, volume: InterceptedVolume, rng: random.Random) -> None:
        self.volume = volume
        self.rng = rng
        self.codec = AvroCodec("WriteEvent")
        s = volume.session
        self.foreign = s[:-1] + ("0" if s[-1] != "0" else "1")
        self.last_real: tuple[int, bytes] = (0, b"\x01" * 64)

    def _write(self, sequence: int, where: int, data: bytes, session: str = "") -> WriteEvent:
        """A sealed WRITE of the volume (format 2, as the intercept writes them)."""
        return make_event(
            EventKind.WRITE,
            where,
            data,
            volume=VOLUME,
            sequence=sequence,
            timestamp_us=now_us(),
            volume_size=SIZE,
            session=session or self.volume.session,
        )

    def event(self, sequence: int, *, session: str | None = None, bad_crc: bool = False) -> bytes:
        data = self.rng.randbytes(self.rng.randint(16, 256))
        ev = self._write(sequence, self.rng.randrange(SIZE - len(data)), data, session or "")
        if bad_crc:
            ev.crc32c ^= 1
        return self.codec.encode(ev.to_record())

    def tick(self, **kw: Any) -> bytes:
        ev = make_tick(now_us())
        for k, v in kw.items():
            setattr(ev, k, v)
        return self.codec.encode(ev.to_record())

    def make(self, category: str) -> bytes:
        rng, nxt = self.rng, self.volume.sequence + 1
        if category == "random":
            return bytes([rng.randrange(1, 0xC3)]) + rng.randbytes(rng.randint(0, 300))
        if category == "truncated":
            value = self.event(rng.randrange(nxt + 5))
            return value[: rng.randrange(1, len(value))]
        if category == "flipped-data":  # a copy of the last real write, one data bit flipped
            where, data = self.last_real
            ev = self._write(nxt - 1, where, data)
            flipped = bytearray(self.codec.encode(ev.to_record()))
            at = bytes(flipped).index(data) + rng.randrange(len(data))
            flipped[at] ^= 1 << rng.randrange(8)
            return bytes(flipped)
        if category == "flipped-header":  # magic or schema fingerprint
            header = bytearray(self.event(nxt))
            header[rng.randrange(10)] ^= 1 << rng.randrange(8)
            return bytes(header)
        if category == "bad-crc-next":
            return self.event(nxt, bad_crc=True)
        if category == "foreign-session":
            return self.event(
                rng.choice([nxt, nxt + 1, rng.randrange(1, nxt)]), session=self.foreign
            )
        if category == "far-ahead":
            return self.event(nxt + rng.randint(1000, 1_000_000))
        if category == "behind":
            return self.event(rng.randrange(1, nxt))
        if category == "tick-volume":
            return self.tick(volume=VOLUME)
        assert category == "tick-data"
        data = rng.randbytes(32)
        return self.tick(data=data, length=len(data), crc32c=crc32c(data))


@pytest.mark.timeout(300)
def test_malformed_flood_leaves_the_volume_protected_and_every_bad_record_dead_lettered(
    bootstrap: str, tmp_path: Path
) -> None:
    topic = f"flood-{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}.dlq"
    conf = {"bootstrap.servers": bootstrap}
    ensure_topics(conf, {topic: 1, dlq: 1})
    config = tmp_path / "kcdp.toml"
    config.write_text(f'dlq_topic = "{dlq}"\n')
    store_url = f"file://{tmp_path / 'store'}"
    store = open_store(store_url)
    rng = random.Random("flood")
    writer = SyncWriter(
        InterceptedVolume(
            tmp_path / "vol.img", VOLUME, SIZE, bootstrap_servers=bootstrap, topic=topic
        ),
        rng,
    )
    forger = Forger(writer.volume, random.Random("forger"))
    raw = Producer(
        producer_config({**conf, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000})
    )
    bad: dict[int, tuple[str, bytes]] = {}
    failed: list[str] = []
    extra = ["--config", str(config), "--batch-size", "5000"]
    with worker(bootstrap, store_url, topic, tmp_path / "w", window_seconds=3.0, extra=extra) as w:
        w.wait_ready()
        try:
            for _ in range(REAL_WRITES):
                kinds = [CATEGORIES[i % len(CATEGORIES)] for i in range(BURST)]
                rng.shuffle(kinds)
                for category in kinds:
                    value = forger.make(category)

                    def done(err: Any, msg: Any, category: str = category) -> None:
                        if err is not None:
                            failed.append(str(err))
                        else:
                            bad[msg.offset()] = (category, msg.value())

                    raw.produce(topic, key=VOLUME.encode(), value=value, on_delivery=done)
                assert raw.flush(30) == 0
                writer.burst(1, max_len=4096)
                where, data = writer.model.changes[-1][1], writer.model.changes[-1][2]
                assert data is not None
                forger.last_real = (where, data)
        finally:
            writer.volume.close()
        assert not failed, failed[:3]
        assert len(bad) == REAL_WRITES * BURST
        records = read_partition(bootstrap, topic)
        real = [
            (o, e)
            for o, e in volume_events(records, VOLUME)
            if o not in bad and e.session == writer.volume.session
        ]
        assert real[-1][1].kind is EventKind.SESSION_END
        wait_consumed(w, len(records), 180)
        # everything is consumed: the last window closes by its deadline (3 s) and a TICK
        wait_durable(store, VOLUME, real[-1][0], w, 30)
        dead = [
            AvroCodec("DeadLetter").decode(v or b"") for _, _, v in read_partition(bootstrap, dlq)
        ]
        assert w.proc is not None and w.proc.poll() is None, "the worker stopped"

    # every bad record dead-lettered once, with its bytes; no real event among them
    mine = [d for d in dead if d["source_topic"] == topic]
    offsets = Counter(d["source_offset"] for d in mine)
    assert not {o for o, _ in real} & set(offsets), "a real event was dead-lettered"
    assert set(offsets) == set(bad), (
        f"{len(set(bad) - set(offsets))} bad records not dead-lettered, "
        f"e.g. {Counter(bad[o][0] for o in set(bad) - set(offsets)).most_common(4)}"
    )
    assert max(offsets.values()) == 1, "a record was dead-lettered twice"
    assert all(d["value"] == bad[d["source_offset"]][1] and d["reason"] for d in mine)
    by_volume = Counter(d["volume"] for d in mine)
    named = sum(1 for category, _ in bad.values() if category in NAMED)
    assert by_volume == {VOLUME: named, "": len(bad) - named}, by_volume
    # the volume's history is exact: no gap, every real event stored, restores equal
    assert_history_exact(
        store,
        store_url,
        VOLUME,
        writer.model,
        real,
        tmp_path / "restores",
        acked=writer.offsets,
        samples=15,
    )
    store.close()
