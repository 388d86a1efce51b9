"""infra/prometheus/kcdp-rules.yml: valid for promtool, every alert unit-tested both ways
(``promtool test rules``), and every metric it names is one kafka-cdp exports.

promtool (Debian package ``prometheus``, installed by ``make system-deps``) is required:
without it these tests fail, they do not skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from connectors.intercept.metrics import InterceptMetrics
from connectors.retention.policy import RetentionPolicy
from connectors.retention.report import PruneReport
from streams.metrics import VolumeState, WorkerMetrics
from streams.pruning import PruneMetrics

RULES_DIR = Path(__file__).resolve().parents[2] / "infra" / "prometheus"
RULES = RULES_DIR / "kcdp-rules.yml"
RULE_TESTS = RULES_DIR / "kcdp-rules.test.yml"
#: metrics the retention/prune work exports (kcdp prune); not yet part of this worker.
_METRIC = re.compile(r"\bkcdp_[a-z0-9_]+")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool not found: install the Debian package 'prometheus' (make system-deps)"
        )
    return found


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_check_config_of_the_compose_prometheus() -> None:
    proc = subprocess.run(
        [promtool(), "check", "config", str(RULES_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout


def test_promtool_test_rules() -> None:
    proc = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert alerts - fires == set(), "alerts without a firing case"
    assert alerts - quiet == set(), "alerts without a case where they do not fire"
    assert (fires | quiet) <= alerts, "cases name unknown alerts"


def _exported(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",),
        }[family.type]
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_rules_use_only_metrics_kafka_cdp_exports() -> None:
    worker = WorkerMetrics()
    PruneMetrics(worker.registry).record(  # the prune timer's metrics, in the same registry
        PruneReport(volume="v", dry_run=False, stored_bytes={"any-point": 1}),
        RetentionPolicy(keep_within=60.0),
    )
    worker.watch(lambda: [VolumeState("v", oldest_pending_us=1, checkpoint_us=1)])
    intercept = InterceptMetrics("v")

    class Idle:
        in_flight_bytes = in_flight_events = max_in_flight_bytes = 0

    intercept.watch(Idle())
    exported = _exported(worker.registry) | _exported(intercept.registry)
    used: set[str] = set()
    for rule in _rules():
        used.update(_METRIC.findall(rule["expr"]))
    assert used, "no kcdp metric found in the rules"
    assert used - exported == set()
    for name in ("kcdp_rpo_seconds", "kcdp_dlq_events_total", "kcdp_gaps_total"):
        assert name in used, name


def test_rules_ship_as_package_data() -> None:
    import tomllib

    pyproject = tomllib.loads((RULES_DIR.parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["infra"]
    assert "prometheus/*.yml" in patterns
