"""The worker's TICKs: one per partition in flight, and a window that opens after the TICK
for its own deadline was consumed gets another (it must not wait for the next write).

The window's events are stamped before the deadline but reach the partition after the
TICK, as an async intercept's writes can; the worker's producer is replaced by a recorder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.config import Settings
from connectors.store.memory import MemoryStore
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent
from streams.options import WorkerOptions
from streams.outcome import Record
from streams.window import WindowPolicy
from streams.worker import IncrementsWorker
from tests.streams_support import Volume

CODEC = AvroCodec("WriteEvent")


class Recorder:
    """Stands in for the worker's Kafka producer: keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes]] = []

    def produce(self, topic: str, *, value: bytes, partition: int = -1, **_: Any) -> None:
        self.sent.append((topic, partition, value))

    def ticks(self) -> list[bytes]:
        return [v for topic, _, v in self.sent if topic == "kcdp.writes"]

    def flush(self, timeout: float = 0) -> int:
        return 0


def test_a_window_opened_after_its_tick_gets_another(tmp_path: Path) -> None:
    opts = WorkerOptions(workdir=tmp_path, policy=WindowPolicy(seconds=1.0), close_threads=0)
    worker = IncrementsWorker(Settings(), MemoryStore(), opts)
    recorder = Recorder()
    worker.producer = recorder  # type: ignore[assignment]
    worker._committed_offset = lambda partition: None  # type: ignore[method-assign]  # no group
    try:
        vol = Volume("late", 1 << 16)  # event times in 2023: every deadline is long past
        offset = 0

        def feed(*events: WriteEvent) -> None:
            nonlocal offset
            records: list[Record] = []
            for ev in events:
                records.append((offset, None, CODEC.encode(ev.to_record())))
                offset += 1
            worker.process(0, records)

        feed(*vol.start(), vol.write(0, b"a" * 512, dt_us=10))
        proc = worker.processors[0]
        deadline = proc.next_deadline()
        assert deadline is not None
        assert worker.send_ticks() == 1
        assert worker.send_ticks() == 0  # in flight: not sent again
        (tick,) = recorder.ticks()
        assert WriteEvent.from_record(CODEC.decode(tick)).timestamp_us >= deadline
        # written before the deadline, delivered after the TICK
        late = [vol.write(512, b"b" * 512, dt_us=10), vol.write(1024, b"c" * 512, dt_us=10)]
        assert all(ev.timestamp_us < deadline for ev in late)
        worker.process(0, [(offset, None, tick)])
        offset += 1
        assert proc.next_deadline() is None  # the first window closed
        feed(*late)
        assert proc.next_deadline() == deadline  # a new window with the same deadline
        assert worker.send_ticks() == 1  # it gets its own TICK
        assert len(recorder.ticks()) == 2
        worker.process(0, [(offset, None, recorder.ticks()[-1])])
        assert proc.next_deadline() is None
        assert [m.events for m in (w for w in _windows(worker))] == [4, 2]
        assert all(
            WriteEvent.from_record(CODEC.decode(v)).kind is EventKind.TICK for v in recorder.ticks()
        )
    finally:
        worker.close()


def _windows(worker: IncrementsWorker) -> list[Any]:
    from schemas.manifest import list_window_keys, load_manifest

    return [load_manifest(worker.store, k) for _, _, k in list_window_keys(worker.store, "late")]
