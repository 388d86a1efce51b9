"""A gap and what heals it (docs/FORMAT.md "Consistency", "Restore" rule 4), through the
worker's processor and the restore planner and executor.

Records are lost (a sequence gap, confirmed by the writes after it); the volume is then
inconsistent until a baseline *begun after the gap* ends. Every point after that
baseline restores exactly along every path — crossing the gap — and equals the host's
disk, lost writes included; points before the gap restore as they were; points between
the last event before the gap and the gap are refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.errors import GapError, IntegrityError, NotRestorableError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from schemas.events import EventKind
from streams.admission import DEFAULT_SUPPORT
from tests.line_support import Log
from tests.streams_support import Volume

SIZE = 4096
CHUNK = 1024
REFUSALS = (GapError, IntegrityError, NotRestorableError)


def _baseline(log: Log, v: Volume, host: bytearray) -> int:
    """A full baseline of the host disk ``host``; the offset of its BASELINE_END."""
    log.good(v.event(EventKind.BASELINE_START))
    for start in range(0, SIZE, CHUNK):
        chunk = bytes(host[start : start + CHUNK])
        if any(chunk):
            log.good(v.event(EventKind.BASELINE, start, chunk))
        else:
            log.good(v.event(EventKind.ZERO, start, length=CHUNK))
    log.good(v.event(EventKind.BASELINE_END))
    return len(log.records) - 1


def _restore(log: Log, point: int, tmp: Path, direction: str) -> bytes | None:
    out = tmp / f"r-{point}-{direction}.img"
    try:
        restore_point(
            log.proc.store,
            Catalog(log.proc.store, "heal"),
            point,
            out,
            direction=direction,
            progress=False,
        )
    except REFUSALS:
        assert not out.exists()
        return None
    return out.read_bytes()


@pytest.mark.parametrize("early_start", [False, True])
def test_a_baseline_after_the_gap_heals_it_and_paths_cross_it(
    tmp_path: Path, early_start: bool
) -> None:
    v = Volume("heal", SIZE)
    log = Log(tmp_path, v, count=3)
    log.good(*v.start())
    host = bytearray(SIZE)  # the host's disk, every write applied
    before: dict[int, bytes] = {}

    def write(offset: int, data: bytes, *, lost: bool = False) -> None:
        ev = v.write(offset, data)
        host[offset : offset + len(data)] = data
        if not lost:
            log.good(ev)
            before[len(log.records) - 1] = bytes(host)

    for k in range(7):
        write(100 * k + 3, bytes([k + 1]) * 150)
    if early_start:  # a baseline begun before the gap cannot heal it
        log.good(v.event(EventKind.BASELINE_START))
    last_before_gap = len(log.records) - 1
    for k in range(3):
        write(2000 + 10 * k, b"lost" * 20, lost=True)
    log.bad(b"\x00not an event")  # an offset between the last event and the gap
    gap_at = len(log.records)
    for k in range(DEFAULT_SUPPORT + 2):  # the line after the gap is confirmed
        write(3000 + 7 * k, bytes([0x40 + k]) * 33)
    if early_start:
        log.good(v.event(EventKind.BASELINE_END))
    end = _baseline(log, v, host)
    after: dict[int, bytes] = {end: bytes(host)}
    for k in range(5):
        write(50 * k, bytes([0x80 + k]) * 70)
        after[len(log.records) - 1] = bytes(host)
    log.finish()
    log.proc.close()

    [gap] = log.gaps()
    assert gap.at_offset == gap_at and gap.after_offset == last_before_gap
    catalog = Catalog(log.proc.store, "heal")
    assert catalog.checkpoints  # backward paths exist after the gap
    for point in (gap_at - 1, gap_at, gap_at + 2, end - 1):  # gap_at - 1: the bad record
        for direction in ("forward", "backward"):
            assert _restore(log, point, tmp_path, direction) is None, (point, direction)
    for point, image in after.items():
        assert _restore(log, point, tmp_path, "forward") == image, point
        assert _restore(log, point, tmp_path, "auto") == image, point
        got = _restore(log, point, tmp_path, "backward")
        if got is None:  # only when no checkpoint is at or after the point
            assert max(catalog.checkpoints) < point, point
        else:
            assert got == image, point
    assert max(catalog.checkpoints) > end
    earlier = [p for p in sorted(before) if p <= last_before_gap][-3:]
    assert earlier
    for point in earlier:  # back across the gap (and the baseline) from a later checkpoint
        assert _restore(log, point, tmp_path, "backward") == before[point], point
