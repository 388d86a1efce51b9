"""``kcdp topics create`` and ``kcdp topics describe``: provision and inspect the topics.

``create`` makes the write, announcement and dead-letter topics (``--topic``; the other two
names from the config file's ``increments_topic`` / ``dlq_topic``) with the operator's
partitions, replication factor, ``min.insync.replicas`` and retention, all with
``cleanup.policy=delete``. The sizing rule: partitions >= the planned worker processes
(``--planned-workers``), retention >= the worker's lag budget (``--lag-budget``); a request
that breaks it is refused (exit 2). A topic that exists already is reported and left as it
is; if its settings break a guarantee (:func:`connectors.topics.topic_problems`) the command
says so and exits 2. ``describe`` prints each topic's partitions, replicas and the settings
the broker reports, with the same problems (exit 0).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from connectors.config import Settings, parse_duration
from connectors.errors import ConfigError
from connectors.topics import (
    TopicProblem,
    TopicState,
    broker_count,
    create_topics,
    default_min_insync,
    default_replication_factor,
    describe_topics,
    format_duration,
    plan_topics,
    topic_names,
    topic_problems,
)

log = logging.getLogger("kcdp.topics")


def _duration(text: str) -> str:
    try:
        parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def add_sizing_args(p: argparse.ArgumentParser) -> None:
    """``--planned-workers`` and ``--lag-budget`` (settings ``planned_workers``/``lag_budget``)."""
    p.add_argument(
        "--planned-workers",
        dest="planned_workers",
        type=_count,
        help="worker processes planned for the write topic (env KCDP_PLANNED_WORKERS; default 1)",
    )
    p.add_argument(
        "--lag-budget",
        dest="lag_budget",
        type=_duration,
        help="how far a worker may fall behind before the write topic may delete events: "
        "7d, 36h, seconds (env KCDP_LAG_BUDGET; default 7d)",
    )


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "topics",
        parents=list(parents),
        help="create or describe the write, announcement and dead-letter topics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = p.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    create = tsub.add_parser(
        "create",
        parents=list(parents),
        help="create the missing topics with the sizing rule checked; report existing ones",
        description="Create the write, announcement and dead-letter topics that do not exist "
        "(cleanup.policy=delete). Partitions must be at least the planned workers and "
        "retention at least the lag budget. Existing topics are reported, never altered.",
    )
    create.add_argument(
        "--partitions",
        type=_count,
        help="partitions of each topic (default: the planned workers, at least 4)",
    )
    create.add_argument(
        "--replication-factor",
        type=_count,
        help="replicas of each partition (default 3, or the broker count when fewer)",
    )
    create.add_argument(
        "--min-insync-replicas",
        type=_count,
        help="min.insync.replicas (producers use acks=all; default 2 with 3+ replicas, else 1)",
    )
    create.add_argument(
        "--retention",
        help="retention.ms of each topic as a duration (7d, 36h, seconds) or 'forever' "
        "(default: the lag budget)",
    )
    add_sizing_args(create)
    create.add_argument("--timeout", type=float, default=15.0, help="seconds (default 15)")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(func=cmd_create)

    describe = tsub.add_parser(
        "describe",
        parents=list(parents),
        help="show the topics' partitions, replicas and settings, and what breaks a guarantee",
    )
    add_sizing_args(describe)
    describe.add_argument("--timeout", type=float, default=15.0, help="seconds (default 15)")
    describe.add_argument("--json", action="store_true", help="print one JSON object")
    describe.set_defaults(func=cmd_describe)


def _retention_ms(text: str | None, settings: Settings) -> int:
    if text is None:
        return int(settings.lag_budget_seconds * 1000)
    if text.strip().lower() in ("forever", "-1"):
        return -1
    return int(parse_duration(text) * 1000)


def _problems(settings: Settings, states: dict[str, TopicState | None]) -> list[TopicProblem]:
    return topic_problems(
        states,
        write_topic=settings.topic,
        planned_workers=settings.planned_workers,
        lag_budget_seconds=settings.lag_budget_seconds,
    )


def _row(state: TopicState) -> str:
    c = state.configs
    retention = state.retention_ms
    shown = "not reported" if retention is None else format_duration(retention / 1000)
    return (
        f"partitions={state.partitions} replicas={state.replication_factor} "
        f"cleanup.policy={c.get('cleanup.policy', 'not reported')} retention={shown} "
        f"min.insync.replicas={c.get('min.insync.replicas', 'not reported')}"
    )


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    conf = settings.kafka_config()
    if args.replication_factor is None:
        replication = default_replication_factor(broker_count(conf, timeout=args.timeout))
    else:
        replication = args.replication_factor
    plans = plan_topics(
        settings,
        partitions=args.partitions or max(4, settings.planned_workers),
        replication_factor=replication,
        min_insync_replicas=args.min_insync_replicas or default_min_insync(replication),
        retention_ms=_retention_ms(args.retention, settings),
    )
    created = create_topics(conf, plans, timeout=args.timeout)
    states = describe_topics(conf, topic_names(settings), timeout=args.timeout)
    problems = _problems(settings, states)
    if args.json:
        report = {
            "ok": not problems,
            "topics": [
                {
                    "topic": p.name,
                    "created": created.get(p.name, False),
                    "requested": p.to_json(),
                    "reported": (s.to_json() if (s := states.get(p.name)) else None),
                }
                for p in plans
            ],
            "problems": [p.to_json() for p in problems],
        }
        print(orjson.dumps(report).decode())
    else:
        for plan in plans:
            state = states.get(plan.name)
            verb = "created" if created.get(plan.name) else "exists, left as it is"
            print(f"{plan.name:<20} {verb:<22} {_row(state) if state else 'not visible yet'}")
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
    return 2 if problems else 0


def cmd_describe(args: argparse.Namespace, settings: Settings) -> int:
    states = describe_topics(settings.kafka_config(), topic_names(settings), timeout=args.timeout)
    problems = _problems(settings, states)
    if args.json:
        report = {
            "topics": [
                s.to_json() if s else {"topic": name, "exists": False} for name, s in states.items()
            ],
            "problems": [p.to_json() for p in problems],
        }
        print(orjson.dumps(report).decode())
        return 0
    for name, state in states.items():
        print(f"{name:<20} {_row(state) if state else 'does not exist'}")
    for problem in problems:
        print(f"problem: {problem}")
    return 0
