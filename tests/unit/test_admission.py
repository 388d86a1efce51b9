"""The line rules (docs/FORMAT.md "Quarantine") through the partition processor: one bad
record never changes what the worker believes about a volume; real losses are gaps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from schemas.events import EventKind, WriteEvent
from tests.line_support import Log
from tests.streams_support import Volume, tick


def _writes(v: Volume, n: int, salt: int = 0) -> list[WriteEvent]:
    return [
        v.write((salt * 101 + 37 * i) % (v.size - 80), bytes([(salt + i) % 251 + 1]) * (17 + i))
        for i in range(n)
    ]


def _started(tmp: Path, name: str, **kw: int) -> tuple[Volume, Log]:
    v = Volume(name, 4096)
    log = Log(tmp, v, **kw)
    log.good(*v.start(), *_writes(v, 3))
    return v, log


def _no_real_write_dead(log: Log) -> None:
    dead = {d.offset for d in log.out.dead_letters}
    assert not dead & log.real_offsets(), "an acknowledged write was dead-lettered"


def test_bad_crc_with_the_next_sequence_consumes_nothing(tmp_path: Path) -> None:
    v, log = _started(tmp_path, "crc")
    (real,) = _writes(v, 1, salt=5)
    log.bad(dataclasses.replace(real, crc32c=real.crc32c ^ 1))
    log.good(real, *_writes(v, 5, salt=9))
    out = log.finish()
    assert [d.error for d in out.dead_letters] == ["InvalidEventError"]
    assert log.gaps() == []
    _no_real_write_dead(log)
    log.check()


def test_a_sequence_far_ahead_is_rejected_once_the_line_goes_on(tmp_path: Path) -> None:
    v, log = _started(tmp_path, "ahead")
    (probe,) = _writes(v, 1, salt=3)
    v.seq -= 1  # the probe is not sent: its sequence stays the line's next
    log.bad(dataclasses.replace(probe, sequence=probe.sequence + 1000).seal())
    assert log.proc.held == 1 and log.proc.commit_offset <= 6
    log.good(*_writes(v, 30, salt=4))
    out = log.finish()
    assert [d.error for d in out.dead_letters] == ["OutOfLineEventError"]
    assert "ahead" in out.dead_letters[0].reason
    assert log.gaps() == [] and log.proc.held == 0
    _no_real_write_dead(log)
    log.check()


def test_a_sequence_behind_is_stale_at_once(tmp_path: Path) -> None:
    v, log = _started(tmp_path, "behind")
    (probe,) = _writes(v, 1)
    v.seq -= 1
    log.bad(dataclasses.replace(probe, sequence=1).seal())
    log.good(*_writes(v, 4, salt=2))
    out = log.finish()
    assert [d.error for d in out.dead_letters] == ["StaleEventError"]
    assert log.gaps() == []
    log.check()


def test_a_foreign_session_is_fenced_and_protection_goes_on(tmp_path: Path) -> None:
    v, log = _started(tmp_path, "foreign")
    (probe,) = _writes(v, 1, salt=1)
    v.seq -= 1
    foreign = "a" * 31 + "b"  # one character differs
    log.bad(dataclasses.replace(probe, session=foreign).seal())
    log.good(*_writes(v, 6, salt=2))
    log.bad(dataclasses.replace(probe, session=foreign, sequence=probe.sequence + 1).seal())
    log.good(*_writes(v, 3, salt=3))
    out = log.finish()
    assert [d.error for d in out.dead_letters] == ["OutOfLineEventError", "FencedSessionError"]
    assert log.proc.volumes["foreign"].line.fenced == [foreign]
    assert log.gaps() == []
    log.check()


def test_a_record_the_broker_skipped_is_found_by_a_reread(tmp_path: Path) -> None:
    v, log = _started(tmp_path, "late")
    first, *rest = _writes(v, 8, salt=6)
    log.good(first, delivered=False)  # in the log, but the consumer never saw it
    log.good(*rest)
    out = log.finish()
    assert log.rereads and log.rereads[0][0] <= 6 <= log.rereads[0][1]
    assert out.dead_letters == [] and log.gaps() == []
    log.check()


def test_a_lone_skipped_record_before_a_quiet_spell_is_found_too(tmp_path: Path) -> None:
    v, log = _started(tmp_path, "quiet")
    a, b = _writes(v, 2, salt=7)
    log.good(a, delivered=False)
    log.good(b)  # held; nothing follows until the TICK passes its time
    out = log.finish()
    assert out.dead_letters == [] and log.gaps() == []
    log.check()


def test_real_loss_is_a_gap_at_the_first_event_after_it(tmp_path: Path) -> None:
    v, log = _started(tmp_path, "loss")
    lost = _writes(v, 2, salt=8)
    del lost  # never in the log
    after = len(log.records)
    log.good(*_writes(v, 6, salt=9))
    out = log.finish()
    (gap,) = log.gaps()
    assert (gap.kind, gap.at_offset, gap.expected_sequence) == ("sequence", after, 6)
    assert out.dead_letters == []
    manifests = [m for m in out.windows if m.first_offset >= after]
    assert manifests and not any(m.consistent for m in manifests)


def test_real_loss_then_a_quiet_spell_places_the_gap_at_the_first_event(
    tmp_path: Path,
) -> None:
    v, log = _started(tmp_path, "lossq")
    _writes(v, 2, salt=8)  # lost
    after = len(log.records)
    log.good(_writes(v, 1, salt=9)[0])
    log.add(tick(10**17), real=False)  # its time runs out: rejected, remembered
    log.good(*_writes(v, 5, salt=10))  # its line goes on: the loss was real
    log.finish()
    (gap,) = log.gaps()
    assert (gap.kind, gap.at_offset) == ("sequence", after)


def test_a_second_live_session_is_fenced(tmp_path: Path) -> None:
    v, log = _started(tmp_path, "twice")
    other = Volume("twice", 4096, session="c" * 32)
    log.bad(other.event(EventKind.SESSION_START))
    for w_real, w_other in zip(_writes(v, 5, salt=1), _writes(other, 5, salt=2), strict=True):
        log.good(w_real)
        log.bad(w_other)
    out = log.finish()
    assert log.gaps() == []
    assert log.proc.volumes["twice"].line.fenced == ["c" * 32]
    assert {d.error for d in out.dead_letters} == {"OutOfLineEventError", "FencedSessionError"}
    log.check()


def test_a_takeover_by_a_new_session_is_a_gap_and_fences_the_old_one(tmp_path: Path) -> None:
    v, log = _started(tmp_path, "takeover")
    new = Volume("takeover", 4096, session="d" * 32)
    new.model = bytearray(v.model)
    at = len(log.records)
    log.good(*new.start(), *_writes(new, 3, salt=4))  # the old session died uncleanly
    log.bad(_writes(v, 1, salt=5)[0])  # the old one resurfaces
    out = log.finish()
    assert [(g.kind, g.at_offset) for g in log.gaps()] == [("session", at)]
    assert [d.error for d in out.dead_letters] == ["FencedSessionError"]


def test_a_malformed_tick_is_dead_lettered_and_closes_nothing(tmp_path: Path) -> None:
    v, log = _started(tmp_path, "tick", count=1000)
    bad_tick = dataclasses.replace(tick(10**18), volume="tick")
    log.bad(bad_tick, dataclasses.replace(tick(10**18), data=b"x"))
    assert [d.error for d in log.out.dead_letters] == ["InvalidEventError"] * 2
    assert log.out.windows == []  # the open window is still open
    log.good(*_writes(v, 2))
    log.finish()
    log.check()
