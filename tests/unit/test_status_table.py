"""``kcdp status``'s table: dead letters by reason and fenced sessions per volume."""

from __future__ import annotations

import re

import pytest

from connectors.cli.status import render_table
from connectors.errors import UsageError
from connectors.status_figures import VolumeStatus, WorkerHealth
from connectors.worker_metrics import WorkerFigures, parse_worker_metrics


def _status(
    dlq: dict[str, int], fenced: list[str], held: tuple[int, int] | None = None
) -> VolumeStatus:
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
        quarantined=None if held is None else held[0],
        reread_found=None if held is None else held[1],
        history_problem=None,
        worker=WorkerHealth("g", 10, 10, 0, 1, "running"),
        checked_us=2,
    )


def test_dead_letters_by_reason_most_first_and_fenced_sessions() -> None:
    table = render_table(
        [_status({"DecodeError": 1, "StaleEventError": 2}, ["a" * 32])]
    ).splitlines()
    head = table[0].split()
    assert head[head.index("DLQ") + 1 :][:2] == ["FENCED", "HELD"]
    assert "3 (StaleEventError 2, DecodeError 1)" in table[1]
    cells = table[1].split()
    assert cells[-5:] == ["1", "-", "running,", "0", "uncommitted"]


def test_no_dead_letters_is_zero() -> None:
    row = render_table([_status({}, [], (2, 1))]).splitlines()[1]
    cells = re.split(r"\s{2,}", row)
    assert cells[-5:-1] == ["0", "0", "0", "2 (1 found)"]  # gaps, DLQ, fenced, held


def test_worker_metrics_give_held_and_found_per_volume() -> None:
    text = (
        "# HELP kcdp_quarantined_events Events held in quarantine\n"
        "# TYPE kcdp_quarantined_events gauge\n"
        'kcdp_quarantined_events{volume="db"} 3.0\n'
        'kcdp_quarantined_events{volume="web"} 0.0\n'
        "# HELP kcdp_reread_found Events a re-read found\n"
        "# TYPE kcdp_reread_found counter\n"
        'kcdp_reread_found_total{volume="db"} 2.0\n'
        "# HELP kcdp_events Records consumed\n"
        "# TYPE kcdp_events counter\n"
        "kcdp_events_total 99.0\n"
    )
    got = parse_worker_metrics(text)
    assert got == {"db": WorkerFigures(3, 2), "web": WorkerFigures(0, 0)}


def test_worker_metrics_that_are_not_prometheus_are_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not Prometheus"):
        parse_worker_metrics("kcdp_quarantined_events{volume=db 3\n")
