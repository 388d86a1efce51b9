"""hypothesis: single anomalies injected into random histories of two volumes of one group
never change the stored history (no gap, no real write dead-lettered, every window equal
to the model of the real writes); real losses are gaps at the right offset.

Anomalies (docs/FORMAT.md "Quarantine"): garbage, a truncated or bit-flipped copy of a real
event, a bad CRC carrying the next sequence, a foreign session, a sequence far ahead or
behind, a malformed TICK, and a real event the broker did not deliver (found by a re-read).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas.events import EventKind, WriteEvent
from streams.admission import DEFAULT_SUPPORT
from tests.line_support import Log
from tests.streams_support import Volume, tick

ANOMALIES = (
    "garbage",
    "truncated",
    "flipped",
    "bad_crc_next",
    "foreign_session",
    "ahead",
    "behind",
    "bad_tick",
    "undelivered",
)

write_ops = st.tuples(
    st.integers(0, 1),  # which volume
    st.integers(0, 4095),  # offset
    st.integers(1, 300),  # length
    st.integers(1, 255),  # fill byte
)


#: writes of the two volumes whose first write of ``va`` the examples below lose in delivery
LATE_OPS = [
    (0, 1, 236, 2),
    (0, 1, 143, 254),
    (1, 261, 44, 255),
    (0, 232, 207, 1),
    (1, 730, 71, 118),
    (0, 1185, 16, 161),
    (1, 3214, 160, 36),
    (1, 182, 136, 202),
]


def _write(v: Volume, op: tuple[int, int, int, int]) -> WriteEvent:
    _, offset, length, fill = op
    length = min(length, v.size - offset)
    if fill % 7 == 0:
        return v.event(EventKind.ZERO, offset, length=length)
    return v.write(offset, bytes([fill]) * length)


def _inject(log: Log, kind: str, v: Volume, next_real: WriteEvent, draw_bit: int) -> bool:
    """Add anomaly ``kind`` before ``next_real``; True when ``next_real`` is then added
    undelivered (the caller adds it otherwise)."""
    value = log.proc.codec.encode(next_real.to_record())
    if kind == "garbage":
        log.bad(bytes([draw_bit % 256]) * (1 + draw_bit % 40))
    elif kind == "truncated":
        log.bad(value[: max(1, draw_bit % len(value))])
    elif kind == "flipped":
        i = draw_bit % len(value)
        flipped = value[:i] + bytes([value[i] ^ (1 << (draw_bit % 8))]) + value[i + 1 :]
        if flipped != value:
            log.bad(flipped)
    elif kind == "bad_crc_next":
        log.bad(dataclasses.replace(next_real, crc32c=next_real.crc32c ^ 0x5A5A))
    elif kind == "foreign_session":
        log.bad(dataclasses.replace(next_real, session=v.session[:-1] + "z").seal())
    elif kind == "ahead":
        log.bad(
            dataclasses.replace(next_real, sequence=next_real.sequence + 1 + draw_bit % 5000).seal()
        )
    elif kind == "behind":
        log.bad(
            dataclasses.replace(next_real, sequence=draw_bit % max(1, next_real.sequence)).seal()
        )
    elif kind == "bad_tick":
        log.bad(dataclasses.replace(tick(next_real.timestamp_us + 10**9), volume=v.name))
    elif kind == "undelivered":
        log.good(next_real, delivered=False)
        return True
    return False


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@example(  # a real event lost in delivery, then a copy of it before its successor
    ops=LATE_OPS,
    anomalies=[(0, "undelivered", 1), (1, "behind", 3)],
    count=1,
)
@example(  # a real event lost in delivery, then a copy of it after its successor
    ops=LATE_OPS,
    anomalies=[(0, "undelivered", 258600), (3, "behind", 3)],
    count=1,
)
@given(
    ops=st.lists(write_ops, min_size=8, max_size=40),
    anomalies=st.lists(
        st.tuples(st.integers(0, 39), st.sampled_from(ANOMALIES), st.integers(0, 10**6)),
        min_size=1,
        max_size=6,
    ),
    count=st.integers(1, 9),
)
def test_anomalies_change_nothing(
    ops: list[tuple[int, int, int, int]],
    anomalies: list[tuple[int, str, int]],
    count: int,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        vols = [Volume("va", 4096, group="g"), Volume("vb", 4096, session="b" * 32, group="g")]
        log = Log(Path(tmp), vols[0], count=count)
        for v in vols:
            log.good(*v.start())
        at: dict[int, tuple[str, int]] = {}
        for i, kind, bit in anomalies:
            at.setdefault(min(i, len(ops) - 2), (kind, bit))  # a real event always follows
        for i, op in enumerate(ops):
            v = vols[op[0]]
            ev = _write(v, op)
            added = False
            if i in at:
                kind, bit = at[i]
                added = _inject(log, kind, v, ev, bit)
            if not added:
                log.good(ev)
        for v in vols:  # an event of each volume after the last anomaly shows its line
            log.good(v.write(1, b"end"))
        out = log.finish()
        for v in vols:
            assert log.gaps(v) == [], f"a gap was declared for {v.name}"
        dead = {d.offset for d in out.dead_letters}
        assert not dead & log.real_offsets(), "a real write was dead-lettered"
        assert log.proc.held == 0
        log.check(*vols)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(write_ops, min_size=2, max_size=25),
    lost=st.integers(1, 4),
    where=st.integers(0, 24),
    count=st.integers(1, 9),
)
def test_real_losses_are_gaps_at_the_right_offset(
    ops: list[tuple[int, int, int, int]], lost: int, where: int, count: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        v = Volume("loss", 4096)
        log = Log(Path(tmp), v, count=count)
        log.good(*v.start())
        where = min(where, len(ops))
        for op in ops[:where]:
            log.good(_write(v, op))
        for _ in range(lost):
            v.write(0, b"lost")  # taken by the intercept, never in the log
        at = len(log.records)
        for op in ops[where:]:
            log.good(_write(v, op))
        for k in range(DEFAULT_SUPPORT + 1):  # enough to show the line is real
            log.good(v.write(k, b"after"))
        out = log.finish()
        gaps = log.gaps()
        assert [(g.kind, g.at_offset) for g in gaps] == [("sequence", at)]
        assert not {d.offset for d in out.dead_letters} & log.real_offsets()
        assert all(not m.consistent for m in out.windows if m.last_offset >= at)
