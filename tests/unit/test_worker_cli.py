"""``kcdp worker`` flags and the worker's metrics registry (no broker needed)."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from connectors.cli import build_parser
from connectors.cli import main as kcdp
from connectors.cli.worker import policy_from_args
from streams.metrics import VolumeState, WorkerMetrics
from streams.window import WindowPolicy


def _policy(*flags: str) -> WindowPolicy:
    return policy_from_args(build_parser().parse_args(["worker", *flags]))


def test_window_flags() -> None:
    assert _policy() == WindowPolicy.default()
    p = _policy("--window-count", "10", "--window-bytes", "1M", "--window-max-bytes", "64M")
    assert (p.seconds, p.count, p.bytes, p.max_bytes) == (None, 10, 1 << 20, 64 << 20)
    a = _policy("--window-adaptive", "--adaptive-min", "0.5", "--adaptive-target", "8M")
    assert a.adaptive and a.adaptive_min == 0.5 and a.adaptive_target == 8 << 20
    assert a.to_dict()["adaptive"] == {
        "target_bytes": 8 << 20,
        "min_seconds": 0.5,
        "max_seconds": 300.0,
    }


def test_conflicting_or_bad_flags_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert kcdp(["worker", "--window-seconds", "1", "--window-adaptive"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        kcdp(["worker", "--window-count", "0"])
    assert exc.value.code == 2


def test_metrics_names_and_rpo() -> None:
    m = WorkerMetrics()
    states = [
        VolumeState("busy", oldest_pending_us=1, checkpoint_us=None),
        VolumeState("idle", None, 5),
    ]
    m.watch(lambda: states)
    m.dlq.labels("DecodeError").inc()
    text = generate_latest(m.registry).decode()
    assert 'kcdp_rpo_seconds{volume="idle"} 0.0' in text
    busy = next(
        line for line in text.splitlines() if line.startswith('kcdp_rpo_seconds{volume="busy"}')
    )
    assert float(busy.split()[-1]) > 1e9  # pending since 1970
    assert 'kcdp_dlq_events_total{error="DecodeError"} 1.0' in text
    assert 'kcdp_checkpoint_age_seconds{volume="idle"}' in text
