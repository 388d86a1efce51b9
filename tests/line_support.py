"""A partition log for the line-rule tests: records, which are real, a processor fed from
it with a re-read of the whole log, and the model of the real events."""

from __future__ import annotations

from pathlib import Path

from schemas.events import CHANGE_KINDS, DATA_KINDS, WriteEvent
from schemas.gaps import Gap, list_gaps
from streams.options import BuildOptions
from streams.outcome import Outcome, Record
from streams.partition import PartitionProcessor
from streams.window import WindowPolicy
from tests.streams_support import Volume, check_chain, tick

TICK_END = tick(10**18)


class Log:
    """One partition: its records, which of them are real writes of the volume, and a
    processor fed from it with a re-read that serves every record of the log."""

    def __init__(self, tmp: Path, volume: Volume, *, count: int = 4) -> None:
        from connectors.store.memory import MemoryStore

        self.volume = volume
        self.records: list[Record] = []
        self.real: list[WriteEvent | None] = []
        opts = BuildOptions(
            topic="t",
            partition=0,
            workdir=tmp,
            policy=WindowPolicy(seconds=60.0, count=count),
            checkpoint_windows=3,
            chunk_size=4096,
            clock=lambda: 42,
        )
        self.proc = PartitionProcessor(MemoryStore(), opts, reread=self.reread)
        self.proc.open(0)
        self.rereads: list[tuple[int, int]] = []
        self.out = Outcome()

    def reread(self, lo: int, hi: int) -> list[Record]:
        self.rereads.append((lo, hi))
        return [r for r in self.records if lo <= r[0] <= hi]

    def add(self, item: WriteEvent | bytes, *, real: bool, delivered: bool = True) -> int:
        """Append a record (an event, or raw bytes) and feed it unless not ``delivered``."""
        value = item if isinstance(item, bytes) else self.proc.codec.encode(item.to_record())
        offset = len(self.records)
        self.records.append((offset, None, value))
        self.real.append(item if real and isinstance(item, WriteEvent) else None)
        if delivered:
            self._gather(self.proc.feed([self.records[-1]]))
        return offset

    def good(self, *events: WriteEvent, delivered: bool = True) -> None:
        for ev in events:
            self.add(ev, real=True, delivered=delivered)

    def bad(self, *items: WriteEvent | bytes) -> None:
        for item in items:
            self.add(item, real=False)

    def finish(self) -> Outcome:
        self.add(TICK_END, real=False)
        self._gather(self.proc.drain())
        return self.out

    def _gather(self, out: Outcome) -> None:
        self.out.dead_letters += out.dead_letters
        self.out.gaps += out.gaps
        self.out.windows += out.windows

    def states(self, volume: Volume | None = None) -> dict[int, bytes]:
        """A volume (default: the log's) after every offset, from its real events alone."""
        v = volume or self.volume
        size = v.size
        image = bytearray(size)
        out = {-1: bytes(size)}
        for offset, real in enumerate(self.real):
            ev = real if real is not None and real.volume == v.name else None
            if ev is not None and ev.kind in DATA_KINDS:
                image[ev.offset : ev.offset + ev.length] = ev.data
            elif ev is not None and ev.kind in CHANGE_KINDS:
                image[ev.offset : ev.offset + ev.length] = bytes(ev.length)
            out[offset] = bytes(image)
        return out

    def gaps(self, volume: Volume | None = None) -> list[Gap]:
        return list_gaps(self.proc.store, (volume or self.volume).name)

    def check(self, *volumes: Volume) -> None:
        """The stored chain of each volume (default: the log's) equals the model of its
        real events, window by window."""
        self.proc.close()
        for v in volumes or (self.volume,):
            check_chain(self.proc.store, v.name, v.size, self.states(v))

    def real_offsets(self) -> set[int]:
        return {o for o, ev in enumerate(self.real) if ev is not None}
