"""``kcdp topics create|describe``, ``kcdp check``'s topics part and the start-up warnings,
against the real (Tansu) broker.

Tansu 0.6 answers DescribeConfigs with the settings given when a topic was created, and
nothing else (no broker defaults): a topic created without ``retention.ms`` reports none.
The tests assert what it does return; a topic without reported retention is "not
reported", never a problem. Tansu keeps one replica whatever replication factor a topic
is created with, so replication is asserted as requested, not as reported.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from connectors.cli import main as kcdp
from connectors.intercept import InterceptedVolume
from connectors.kafka import ensure_topics
from connectors.topics import describe_topics
from infra.broker import free_port

KCDP = str(Path(sys.executable).with_name("kcdp"))
DAY_MS = 86400 * 1000


def names() -> tuple[str, str, str]:
    base = f"test.topics.{uuid.uuid4().hex[:8]}"
    return f"{base}.writes", f"{base}.increments", f"{base}.dlq"


def config(tmp_path: Path, bootstrap: str, topics: tuple[str, str, str]) -> list[str]:
    path = tmp_path / "kcdp.toml"
    w, i, d = topics
    path.write_text(
        f'bootstrap_servers = "{bootstrap}"\ntopic = "{w}"\nincrements_topic = "{i}"\n'
        f'dlq_topic = "{d}"\nstate_dir = "{tmp_path}"\n'
    )
    return ["--config", str(path)]


def bad_write_topic(bootstrap: str, name: str) -> None:
    """One partition, one hour of retention, compacted: all that check must report."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    cfg = {"retention.ms": "3600000", "cleanup.policy": "compact"}
    for future in admin.create_topics([NewTopic(name, 1, 1, config=cfg)]).values():
        future.result()
    ensure_topics({"bootstrap.servers": bootstrap}, {name: 1})  # wait until visible


def test_create_makes_the_three_topics_then_leaves_them(
    bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = names()
    common = config(tmp_path, bootstrap, topics)
    args = ["topics", "create", "--partitions", "3", "--replication-factor", "1"]
    args += ["--retention", "8d", "--planned-workers", "2", "--json"]
    assert kcdp([*common, *args]) == 0, capsys.readouterr().err
    report = orjson.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["problems"] == []
    assert [(t["topic"], t["created"]) for t in report["topics"]] == [(n, True) for n in topics]
    states = describe_topics({"bootstrap.servers": bootstrap}, topics)
    for name in topics:
        state = states[name]
        assert state is not None and state.partitions == 3
        # what Tansu reports: exactly the settings given at creation
        assert state.configs == {
            "cleanup.policy": "delete",
            "retention.ms": str(8 * DAY_MS),
            "min.insync.replicas": "1",
        }

    # again, asking for other settings: reported, not altered
    args = ["topics", "create", "--partitions", "6", "--retention", "30d", "--json"]
    assert kcdp([*common, *args, "--replication-factor", "1"]) == 0
    again = orjson.loads(capsys.readouterr().out)
    assert [t["created"] for t in again["topics"]] == [False, False, False]
    assert again["topics"][0]["reported"]["partitions"] == 3
    assert describe_topics({"bootstrap.servers": bootstrap}, topics) == states

    assert kcdp([*common, "topics", "describe"]) == 0
    out = capsys.readouterr().out
    assert f"{topics[0]}" in out and "partitions=3" in out and "retention=8d" in out
    assert "problem" not in out


def test_create_refuses_what_breaks_the_sizing_rule(
    bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = names()
    common = config(tmp_path, bootstrap, topics)
    base = [*common, "topics", "create", "--replication-factor", "1"]
    assert kcdp([*base, "--partitions", "2", "--planned-workers", "3"]) == 2
    assert "at least the planned worker processes" in capsys.readouterr().err
    assert kcdp([*base, "--retention", "1d"]) == 2  # default lag budget 7d
    assert "shorter than the lag budget 7d" in capsys.readouterr().err
    assert kcdp([*base, "--min-insync-replicas", "2"]) == 2
    assert "exceeds the replication factor" in capsys.readouterr().err
    assert kcdp([*base, "--retention", "1d", "--lag-budget", "12h"]) == 0  # budget lowered
    capsys.readouterr()
    assert all(describe_topics({"bootstrap.servers": bootstrap}, topics).values())


def test_check_reports_topics_that_break_the_guarantees(
    bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = names()
    common = config(tmp_path, bootstrap, topics)
    bad_write_topic(bootstrap, topics[0])
    check = [*common, "check", "--part", "topics", "--json", "--timeout", "5"]
    assert kcdp([*check, "--planned-workers", "3"]) == 2
    (part,) = orjson.loads(capsys.readouterr().out)["parts"]
    assert (part["part"], part["ok"], part["exit_code"]) == ("topics", False, 2)
    detail = part["detail"]
    assert "1 partition(s) for 3 planned workers" in detail
    assert "retention.ms=3600000 (1h) is shorter than the lag budget (7d)" in detail
    assert "cleanup.policy=compact" in detail
    assert f"missing {topics[1]}, {topics[2]}" in detail

    # topics create leaves it as it is and says why it exits 2
    assert kcdp([*common, "topics", "create", "--replication-factor", "1"]) == 2
    err = capsys.readouterr().err
    assert "problem: topic" in err and "cleanup.policy=compact" in err
    state = describe_topics({"bootstrap.servers": bootstrap}, [topics[0]])[topics[0]]
    assert state is not None and state.partitions == 1
    assert state.configs["cleanup.policy"] == "compact"


def test_check_of_a_topic_without_reported_retention(
    bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = names()
    ensure_topics({"bootstrap.servers": bootstrap}, {t: 2 for t in topics})  # no configs
    common = config(tmp_path, bootstrap, topics)
    assert kcdp([*common, "check", "--part", "topics", "--planned-workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "topics ok" in out and "3 of 3 exist" in out
    assert f"{topics[0]} retention.ms not reported by the broker" in out


def test_check_topics_with_kafka_down_exits_5(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    run = subprocess.run(
        [KCDP, "check", "--part", "topics", "--timeout", "2", "--bootstrap-servers", dead],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 5, run.stdout + run.stderr
    assert "topics FAILED" in run.stdout and "cannot reach Kafka" in run.stdout


def test_intercept_warns_once_at_open(
    bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = names()[0]
    bad_write_topic(bootstrap, topic)
    caplog.set_level(logging.WARNING, logger="kcdp")
    with InterceptedVolume(
        tmp_path / "v.img",
        "v",
        65536,
        bootstrap_servers=bootstrap,
        topic=topic,
        planned_workers=2,
    ) as vol:
        vol.write(0, b"still captured")
    warnings = [r.getMessage() for r in caplog.records if r.name == "kcdp.intercept"]
    topic_warnings = [w for w in warnings if w.startswith(f"topic {topic}:")]
    assert len(topic_warnings) == 3, warnings  # partitions, retention, compaction: once each
    assert all("(kcdp check reports it too)" in w for w in topic_warnings)


def test_worker_warns_at_start(bootstrap: str, tmp_path: Path) -> None:
    topics = names()
    bad_write_topic(bootstrap, topics[0])
    common = config(tmp_path, bootstrap, topics)
    proc = subprocess.Popen(
        [KCDP, *common, "worker", "--planned-workers", "2", "--store", f"file://{tmp_path}/s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "cleanup.policy=compact" in line:
                break
    finally:
        proc.terminate()
        proc.wait(60)
    text = "".join(seen)
    assert f"topic {topics[0]}: 1 partition(s) for 2 planned workers" in text
    assert "is shorter than the lag budget (7d)" in text
    assert "cleanup.policy=compact" in text
