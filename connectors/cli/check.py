"""``kcdp check``: can this host reach the configured Kafka and object store?

Each part is tried once with a bounded timeout and reported on stdout as
``PART  ok|FAILED  detail`` (or one JSON object with ``--json``). Kafka is checked by
listing topics; the store by listing one key; the topics by describing them: a write topic
whose settings break a guarantee (:func:`connectors.topics.topic_problems`: fewer partitions
than ``--planned-workers``, retention shorter than ``--lag-budget``, compaction) fails the
part with exit 2. The command exits 0 when every part is reachable and sound, else with the
exit code of the first failed part (5 for Kafka, 4 for the store, 2 for a configuration
error). Secrets never appear in the report.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.cli.topics import add_sizing_args
from connectors.config import Settings, redact_text
from connectors.errors import BrokerError, ConfigError, KcdpError

log = logging.getLogger("kcdp.check")


@dataclass(frozen=True, slots=True)
class PartResult:
    """Outcome of checking one part: ``error`` is None when the part is reachable."""

    part: str
    target: str
    detail: str
    error: KcdpError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "target": self.target,
            "ok": self.ok,
            "detail": self.detail,
            "exit_code": 0 if self.error is None else self.error.exit_code,
        }


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        parents=list(parents),
        help="check that Kafka and the object store are reachable",
        description="Try Kafka (list topics), the object store (list one key) and the "
        "topics' settings (describe them), each with a bounded timeout, and report "
        "ok/FAILED per part. Exit 0 if all are reachable and sound, else the exit code of "
        "the first failure.",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds allowed for each part (default 10)",
    )
    p.add_argument(
        "--part",
        dest="parts",
        action="append",
        choices=sorted(CHECKS),
        help="check only this part (repeatable; default: every part)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_sizing_args(p)
    p.set_defaults(func=run)


def check_kafka(settings: Settings, timeout: float) -> PartResult:
    """List the cluster's topics; report brokers, topics and the write topic's partitions."""
    from confluent_kafka import KafkaException

    from connectors.kafka import connect_admin
    from connectors.kafka_security import KafkaSecurity

    target = redact_text(settings.bootstrap_servers)
    conf = settings.kafka_config(logger=logging.getLogger("kcdp.kafka"))
    try:
        KafkaSecurity.from_properties(conf).ssl_context()  # what the worker's client gets
        admin = connect_admin(conf, timeout=timeout)
        md = admin.list_topics(timeout=timeout)
    except KcdpError as failed:
        return PartResult("kafka", target, redact_text(failed.message), failed)
    except KafkaException as exc:
        error = BrokerError(f"cannot reach Kafka at {target} within {timeout:g}s: {exc}")
        return PartResult("kafka", target, redact_text(error.message), error)
    topics = {name for name in md.topics if not name.startswith("__")}
    write_topic = md.topics.get(settings.topic)
    if write_topic is None:
        topic_note = f"topic {settings.topic} does not exist yet"
    else:
        topic_note = f"topic {settings.topic} has {len(write_topic.partitions)} partitions"
    detail = f"{len(md.brokers)} broker(s), {len(topics)} topic(s); {topic_note}"
    return PartResult("kafka", target, detail)


def check_store(settings: Settings, timeout: float) -> PartResult:
    """Open the store and list at most one key."""
    from connectors.store import open_store

    target = redact_text(settings.store_url)
    try:
        store = open_store(
            settings.store_url,
            retry=False,
            timeout=timeout,
            key_file=settings.key_file,
            keys_now=True,
        )
        try:
            first = next(iter(itertools.islice(store.list(""), 1)), None)
        finally:
            store.close()
    except KcdpError as exc:
        return PartResult("store", target, redact_text(exc.message), exc)
    detail = "empty" if first is None else f"holds objects (first key {first.key})"
    if settings.key_file:
        detail += "; encrypted"
    return PartResult("store", target, detail)


def check_topics(settings: Settings, timeout: float) -> PartResult:
    """Describe the three topics; fail (exit 2) on settings that break a guarantee."""
    from connectors.topics import describe_topics, format_duration, topic_names, topic_problems

    target = redact_text(settings.bootstrap_servers)
    try:
        states = describe_topics(settings.kafka_config(), topic_names(settings), timeout=timeout)
    except KcdpError as exc:
        return PartResult("topics", target, redact_text(exc.message), exc)
    problems = topic_problems(
        states,
        write_topic=settings.topic,
        planned_workers=settings.planned_workers,
        lag_budget_seconds=settings.lag_budget_seconds,
    )
    missing = [name for name, state in states.items() if state is None]
    notes = [f"{len(states) - len(missing)} of {len(states)} exist"]
    if missing:
        notes.append(f"missing {', '.join(missing)} (kcdp topics create)")
    write = states.get(settings.topic)
    if write is not None and write.retention_ms is None:
        notes.append(f"{settings.topic} retention.ms not reported by the broker")
    notes.append(
        f"planned workers {settings.planned_workers}, "
        f"lag budget {format_duration(settings.lag_budget_seconds)}"
    )
    if problems:
        error = ConfigError("; ".join(str(p) for p in problems))
        return PartResult("topics", target, "; ".join([error.message, *notes]), error)
    return PartResult("topics", target, "; ".join(notes))


#: part name -> checker, in report order.
CHECKS: dict[str, Callable[[Settings, float], PartResult]] = {
    "kafka": check_kafka,
    "store": check_store,
    "topics": check_topics,
}


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {args.timeout}")
    parts = [name for name in CHECKS if not args.parts or name in args.parts]
    results = [CHECKS[name](settings, args.timeout) for name in parts]
    for r in results:
        if r.error is not None:
            log.debug("%s check failed: %s", r.part, r.error.message)
    if args.json:
        print(
            orjson.dumps(
                {"ok": all(r.ok for r in results), "parts": [r.to_json() for r in results]}
            ).decode()
        )
    else:
        for r in results:
            print(f"{r.part:<6} {'ok' if r.ok else 'FAILED':<7} {r.target}: {r.detail}")
    failed = [r.error for r in results if r.error is not None]
    return failed[0].exit_code if failed else 0
