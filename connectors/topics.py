"""kafka-cdp's three topics: what they should look like, creating them, and what breaks.

* the write topic (``kcdp.writes``): every captured write; its partitions are the unit of
  work of the workers, so it needs **at least as many partitions as worker processes are
  planned** (a worker with no partition idles; one partition means one worker does all
  the work), a **retention at least the worker's lag budget** (how far behind a worker may
  fall, stopped or slow, before unwindowed events are deleted: a retention gap), and
  ``cleanup.policy=delete`` — compaction keeps only the newest write of each volume key and
  would delete history before it is windowed;
* the announcement topic (``kcdp.increments``) and the dead-letter topic
  (``kcdp.writes.dlq``), created the same way.

:func:`topic_problems` names the settings that break these guarantees;
:func:`warn_topic_problems` logs them once at the start of an intercept or a worker.

What a broker reports differs: Apache Kafka answers DescribeConfigs with every topic
setting (defaults included); Tansu 0.6 answers only the settings given when the topic was
created (a topic created without ``retention.ms`` reports none), so a setting that is not
reported is shown as unknown and never counted as a problem.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.config import Settings, redact_text
from connectors.errors import BrokerError, ConfigError
from connectors.kafka import ensure_topics

log = logging.getLogger("kcdp.topics")

#: the default lag budget (setting ``lag_budget``, ``7d``) in seconds.
DEFAULT_LAG_BUDGET_SECONDS = Settings().lag_budget_seconds

#: librdkafka properties of producers only: an admin client refuses or ignores them.
_PRODUCER_ONLY = ("enable.", "acks", "partitioner", "linger.ms", "compression.type")
#: create_topics errors that are the operator's choice, not the broker's state.
_CONFIG_ERRORS = (
    "INVALID_REPLICATION_FACTOR",
    "INVALID_PARTITIONS",
    "INVALID_CONFIG",
    "POLICY_VIOLATION",
    "INVALID_REQUEST",
)


@dataclass(frozen=True, slots=True)
class TopicState:
    """An existing topic as the broker reports it: ``configs`` holds only what it returned."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)

    @property
    def retention_ms(self) -> int | None:
        """``retention.ms`` (-1: forever), or None when the broker did not report it."""
        value = self.configs.get("retention.ms")
        return None if value is None else int(value)

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.name,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "configs": dict(self.configs),
        }


@dataclass(frozen=True, slots=True)
class TopicProblem:
    """A setting of an existing topic that breaks a guarantee (``setting``: its name)."""

    topic: str
    setting: str
    detail: str

    def __str__(self) -> str:
        return f"topic {self.topic}: {self.detail}"

    def to_json(self) -> dict[str, str]:
        return {"topic": self.topic, "setting": self.setting, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """A topic to create: its name, partitions, replication factor and topic settings."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.name,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "configs": dict(self.configs),
        }


def topic_names(settings: Settings) -> list[str]:
    """The write, announcement and dead-letter topics of ``settings``, in that order."""
    return [settings.topic, settings.increments_topic, settings.dlq_topic]


def admin_client(conf: Mapping[str, Any]) -> Any:
    """An AdminClient from client properties (producer-only ones dropped)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        return AdminClient({k: v for k, v in conf.items() if not k.startswith(_PRODUCER_ONLY)})
    except (KafkaException, ValueError, TypeError) as exc:
        raise ConfigError(f"invalid Kafka client configuration: {exc}") from None


def describe_topics(
    conf: Mapping[str, Any], names: Iterable[str], *, timeout: float = 10.0
) -> dict[str, TopicState | None]:
    """Each of ``names`` as the broker reports it (None: the topic does not exist)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]

    names = list(names)
    admin = admin_client(conf)
    try:
        md = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka: {redact_text(str(exc))}") from None
    out: dict[str, TopicState | None] = {}
    for name in names:
        topic = md.get(name)
        if topic is None or topic.error is not None or not topic.partitions:
            out[name] = None
            continue
        resource = ConfigResource(ResourceType.TOPIC, name)
        try:
            entries = admin.describe_configs([resource])[resource].result(timeout=timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot describe topic {name}: {redact_text(str(exc))}") from None
        configs = {k: str(e.value) for k, e in entries.items() if e.value is not None}
        replicas = min(len(p.replicas) for p in topic.partitions.values())
        out[name] = TopicState(name, len(topic.partitions), replicas, configs)
    return out


def topic_problems(
    states: Mapping[str, TopicState | None],
    *,
    write_topic: str,
    planned_workers: int,
    lag_budget_seconds: float,
) -> list[TopicProblem]:
    """The settings of existing topics in ``states`` that break kafka-cdp's guarantees."""
    problems: list[TopicProblem] = []
    state = states.get(write_topic)
    if state is None:
        return problems
    if state.partitions < planned_workers:
        problems.append(
            TopicProblem(
                write_topic,
                "partitions",
                f"{state.partitions} partition(s) for {planned_workers} planned workers: "
                f"{planned_workers - state.partitions} worker(s) would get no partition "
                "(partitions must be at least the planned worker processes; add partitions "
                "before the first event, or plan fewer workers)",
            )
        )
    retention = state.retention_ms
    budget_ms = int(lag_budget_seconds * 1000)
    if retention is not None and 0 <= retention < budget_ms:
        problems.append(
            TopicProblem(
                write_topic,
                "retention.ms",
                f"retention.ms={retention} ({format_duration(retention / 1000)}) is shorter "
                f"than the lag budget ({format_duration(lag_budget_seconds)}): events a "
                "stopped or slow worker has not windowed yet would be deleted (a retention gap)",
            )
        )
    policy = state.configs.get("cleanup.policy", "")
    if "compact" in {p.strip() for p in policy.split(",")}:
        problems.append(
            TopicProblem(
                write_topic,
                "cleanup.policy",
                f"cleanup.policy={policy}: compaction keeps only the newest event per volume "
                "key and deletes history before it is windowed (use cleanup.policy=delete)",
            )
        )
    return problems


def warn_topic_problems(
    conf: Mapping[str, Any],
    *,
    write_topic: str,
    planned_workers: int,
    lag_budget_seconds: float,
    timeout: float = 10.0,
    logger: logging.Logger = log,
) -> list[TopicProblem]:
    """Log a warning for each problem of the write topic (:func:`topic_problems`); called
    once when an intercept or a worker starts. Never raises: a broker that cannot be asked
    is itself logged as a warning (the client's own error follows soon enough)."""
    try:
        states = describe_topics(conf, [write_topic], timeout=timeout)
    except (BrokerError, ConfigError) as exc:
        logger.warning("cannot check the settings of topic %s: %s", write_topic, exc.message)
        return []
    problems = topic_problems(
        states,
        write_topic=write_topic,
        planned_workers=planned_workers,
        lag_budget_seconds=lag_budget_seconds,
    )
    for problem in problems:
        logger.warning("%s (kcdp check reports it too)", problem)
    return problems


def prepare_write_topic(
    conf: Mapping[str, Any],
    topic: str,
    *,
    planned_workers: int,
    lag_budget_seconds: float | None,
    timeout: float,
    logger: logging.Logger,
) -> None:
    """Create the write topic if missing (a partition per planned worker) and, unless
    ``lag_budget_seconds`` is None, warn once about settings that break a guarantee."""
    ensure_topics(conf, {topic: max(1, planned_workers)}, timeout=timeout)
    if lag_budget_seconds is not None:
        warn_topic_problems(
            conf,
            write_topic=topic,
            planned_workers=planned_workers,
            lag_budget_seconds=lag_budget_seconds,
            timeout=timeout,
            logger=logger,
        )


def default_replication_factor(brokers: int) -> int:
    """3, or the cluster's broker count when it has fewer."""
    return max(1, min(3, brokers))


def default_min_insync(replication_factor: int) -> int:
    """2 when there are 3 or more replicas (one broker may fail), else 1."""
    return 2 if replication_factor >= 3 else 1


def plan_topics(
    settings: Settings,
    *,
    partitions: int,
    replication_factor: int,
    min_insync_replicas: int,
    retention_ms: int,
) -> list[TopicPlan]:
    """The three topics with the sizing rule checked; ConfigError names a rule broken."""
    if partitions < 1 or replication_factor < 1 or min_insync_replicas < 1:
        raise ConfigError("partitions, replication factor and min.insync.replicas must be >= 1")
    if partitions < settings.planned_workers:
        raise ConfigError(
            f"{partitions} partition(s) for {settings.planned_workers} planned workers: "
            "partitions must be at least the planned worker processes"
        )
    if min_insync_replicas > replication_factor:
        raise ConfigError(
            f"min.insync.replicas={min_insync_replicas} exceeds the replication factor "
            f"{replication_factor}: no write could be acknowledged"
        )
    if 0 <= retention_ms < settings.lag_budget_seconds * 1000:
        raise ConfigError(
            f"retention {format_duration(retention_ms / 1000)} is shorter than the lag budget "
            f"{format_duration(settings.lag_budget_seconds)} (--lag-budget)"
        )
    configs = {
        "cleanup.policy": "delete",
        "retention.ms": str(retention_ms),
        "min.insync.replicas": str(min_insync_replicas),
    }
    return [
        TopicPlan(name, partitions, replication_factor, configs) for name in topic_names(settings)
    ]


def create_topics(
    conf: Mapping[str, Any], plans: Iterable[TopicPlan], *, timeout: float = 15.0
) -> dict[str, bool]:
    """Create each planned topic that does not exist; name -> True if created, False if it
    existed (it is left as it is)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    plans = list(plans)
    admin = admin_client(conf)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka: {redact_text(str(exc))}") from None
    out = {p.name: False for p in plans if p.name in existing}
    new = [
        NewTopic(
            p.name,
            num_partitions=p.partitions,
            replication_factor=p.replication_factor,
            config=dict(p.configs),
        )
        for p in plans
        if p.name not in existing
    ]
    if not new:
        return out
    for name, future in admin.create_topics(new, request_timeout=timeout).items():
        try:
            future.result()
            out[name] = True
        except KafkaException as exc:
            err = exc.args[0]
            if err.name() == "TOPIC_ALREADY_EXISTS":  # created meanwhile by someone else
                out[name] = False
            elif err.name() in _CONFIG_ERRORS:
                raise ConfigError(f"cannot create topic {name}: {err.str()}") from None
            else:
                raise BrokerError(f"cannot create topic {name}: {err.str()}") from None
    return out


def broker_count(conf: Mapping[str, Any], *, timeout: float = 10.0) -> int:
    """Brokers in the cluster's metadata."""
    from confluent_kafka import KafkaException

    try:
        return len(admin_client(conf).list_topics(timeout=timeout).brokers)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka: {redact_text(str(exc))}") from None


def format_duration(seconds: float) -> str:
    """``7d``, ``36h``, ``90m``, ``45s`` (the largest whole unit), ``forever`` below 0."""
    if seconds < 0:
        return "forever"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
