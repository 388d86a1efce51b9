"""``kcdp status``'s table: dead letters by reason and fenced sessions per volume."""

from __future__ import annotations

from connectors.cli.status import render_table
from connectors.status import VolumeStatus, WorkerHealth


def _status(dlq: dict[str, int], fenced: list[str]) -> VolumeStatus:
    return VolumeStatus(
        volume="db",
        group="db",
        topic="t",
        partition=0,
        last_captured_offset=9,
        last_captured_time_us=1,
        last_durable_first_offset=0,
        last_durable_offset=9,
        last_durable_time_us=1,
        windows=1,
        lag_events=0,
        lag_bytes=0,
        lag_complete=True,
        rpo_seconds=0.0,
        oldest_point=2,
        newest_point=9,
        bytes_stored=100,
        gaps=[],
        dlq_events=sum(dlq.values()),
        dlq_by_reason=dlq,
        fenced_sessions=fenced,
        worker=WorkerHealth("g", 10, 10, 0, 1, "running"),
        checked_us=2,
    )


def test_dead_letters_by_reason_most_first_and_fenced_sessions() -> None:
    table = render_table(
        [_status({"DecodeError": 1, "StaleEventError": 2}, ["a" * 32])]
    ).splitlines()
    head = table[0].split()
    assert head[head.index("DLQ") + 1] == "FENCED"
    assert "3 (StaleEventError 2, DecodeError 1)" in table[1]
    cells = table[1].split()
    assert cells[-4:] == ["1", "running,", "0", "uncommitted"]


def test_no_dead_letters_is_zero() -> None:
    cells = render_table([_status({}, [])]).splitlines()[1].split()
    assert cells[-6:-3] == ["0", "0", "0"]  # gaps, dead letters, fenced
