"""The topic sizing rule and the problems of existing topics, as plain functions."""

from __future__ import annotations

import pytest

from connectors.config import Settings, load_settings, parse_duration
from connectors.errors import ConfigError
from connectors.topics import (
    TopicState,
    default_min_insync,
    default_replication_factor,
    format_duration,
    plan_topics,
    topic_problems,
)

DAY = 86400.0
WEEK_MS = 7 * 86400 * 1000


def problems(state: TopicState | None, workers: int = 1, budget: float = 7 * DAY) -> list[str]:
    found = topic_problems(
        {"w": state}, write_topic="w", planned_workers=workers, lag_budget_seconds=budget
    )
    return [p.setting for p in found]


def test_a_sound_write_topic_has_no_problem() -> None:
    state = TopicState("w", 4, 3, {"retention.ms": str(WEEK_MS), "cleanup.policy": "delete"})
    assert problems(state, workers=4) == []
    assert problems(None, workers=4) == []  # a missing topic is no problem yet


def test_one_partition_while_several_workers_are_planned() -> None:
    assert problems(TopicState("w", 1, 1), workers=3) == ["partitions"]
    assert problems(TopicState("w", 2, 1), workers=3) == ["partitions"]
    assert problems(TopicState("w", 1, 1), workers=1) == []


def test_retention_shorter_than_the_lag_budget() -> None:
    short = TopicState("w", 1, 1, {"retention.ms": "3600000"})
    (p,) = topic_problems(
        {"w": short}, write_topic="w", planned_workers=1, lag_budget_seconds=7 * DAY
    )
    assert p.setting == "retention.ms" and "1h" in p.detail and "7d" in p.detail
    assert problems(TopicState("w", 1, 1, {"retention.ms": "-1"})) == []  # forever
    assert problems(TopicState("w", 1, 1, {"retention.ms": str(WEEK_MS)})) == []
    assert problems(TopicState("w", 1, 1, {})) == []  # not reported: unknown, not a problem


@pytest.mark.parametrize("policy", ["compact", "compact,delete", "delete, compact"])
def test_compaction_on_the_write_topic(policy: str) -> None:
    assert problems(TopicState("w", 1, 1, {"cleanup.policy": policy})) == ["cleanup.policy"]


def test_every_problem_at_once_and_only_on_the_write_topic() -> None:
    bad = {"retention.ms": "1000", "cleanup.policy": "compact"}
    states = {"w": TopicState("w", 1, 1, bad), "dlq": TopicState("dlq", 1, 1, bad)}
    found = topic_problems(states, write_topic="w", planned_workers=2, lag_budget_seconds=60)
    assert [(p.topic, p.setting) for p in found] == [
        ("w", "partitions"),
        ("w", "retention.ms"),
        ("w", "cleanup.policy"),
    ]


def test_plan_follows_the_sizing_rule() -> None:
    s = Settings(planned_workers=3, lag_budget="2d")
    plans = plan_topics(
        s,
        partitions=3,
        replication_factor=3,
        min_insync_replicas=2,
        retention_ms=int(2 * DAY) * 1000,
    )
    assert [p.name for p in plans] == ["kcdp.writes", "kcdp.increments", "kcdp.writes.dlq"]
    assert plans[0].configs == {
        "cleanup.policy": "delete",
        "retention.ms": "172800000",
        "min.insync.replicas": "2",
    }
    with pytest.raises(ConfigError, match="at least the planned worker processes"):
        plan_topics(s, partitions=2, replication_factor=3, min_insync_replicas=2, retention_ms=-1)
    with pytest.raises(ConfigError, match="shorter than the lag budget"):
        plan_topics(
            s, partitions=3, replication_factor=3, min_insync_replicas=2, retention_ms=3600_000
        )
    with pytest.raises(ConfigError, match="exceeds the replication factor"):
        plan_topics(s, partitions=3, replication_factor=1, min_insync_replicas=2, retention_ms=-1)


def test_defaults_for_replication() -> None:
    assert [default_replication_factor(n) for n in (1, 2, 3, 9)] == [1, 2, 3, 3]
    assert [default_min_insync(r) for r in (1, 2, 3, 5)] == [1, 1, 2, 2]


def test_durations() -> None:
    assert parse_duration("7d") == 7 * DAY
    assert parse_duration("36h") == 36 * 3600
    assert parse_duration("90m") == 5400
    assert parse_duration("3600") == parse_duration("3600s") == 3600
    assert parse_duration("2w") == 14 * DAY
    for bad in ("", "0", "-1d", "7 days", "1y"):
        with pytest.raises(ConfigError, match="invalid duration"):
            parse_duration(bad)
    assert [format_duration(x) for x in (7 * DAY, 3600, 5400, 45, 1.5, -1)] == [
        "7d",
        "1h",
        "90m",
        "45s",
        "1.5s",
        "forever",
    ]


def test_settings_planned_workers_and_lag_budget_from_env_and_file(tmp_path: object) -> None:
    s = load_settings({}, env={"KCDP_PLANNED_WORKERS": "4", "KCDP_LAG_BUDGET": "36h"})
    assert (s.planned_workers, s.lag_budget_seconds) == (4, 36 * 3600)
    assert load_settings({}, env={}).lag_budget_seconds == 7 * DAY
    with pytest.raises(ConfigError, match="planned_workers must be a whole number"):
        load_settings({}, env={"KCDP_PLANNED_WORKERS": "many"})
    with pytest.raises(ConfigError, match="at least 1"):
        load_settings({}, env={"KCDP_PLANNED_WORKERS": "0"})
    with pytest.raises(ConfigError, match="invalid duration"):
        load_settings({}, env={"KCDP_LAG_BUDGET": "soon"})
    assert (
        load_settings({"planned_workers": 2}, env={"KCDP_PLANNED_WORKERS": "9"}).planned_workers
        == 2
    )
