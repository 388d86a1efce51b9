"""Kafka client settings shared by every kafka-cdp producer and consumer (confluent-kafka).

All producers use ``partitioner=murmur2_random`` so a group maps to the same partition as
with the Java client. :func:`ensure_topics` creates missing topics with the partition count
asked for (an existing topic is left as it is). :func:`connect_admin` is every command's
first contact: a refused password or an untrusted certificate fails at once (exit 5).
The security properties themselves pass unchanged; the worker's Faust client gets them
through :mod:`connectors.kafka_security`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from connectors.config import is_secret_key, redact_text, register_secret
from connectors.errors import BrokerError, ConfigError

#: Producer properties for events whose acknowledgement is a durability promise.
DURABLE_PRODUCER: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
    "linger.ms": 5,
    "compression.type": "none",
    "message.timeout.ms": 30000,
}

#: Largest WRITE data carried by one event; larger writes are split (Kafka's default
#: message.max.bytes is ~1 MiB including framing).
MAX_EVENT_DATA = 512 * 1024


def producer_config(base: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """Durable producer properties: ``base`` (bootstrap, -X) over the defaults, then overrides."""
    conf = dict(DURABLE_PRODUCER)
    conf.update(base)
    conf.update(overrides)
    return conf


def capture_producer_base(
    bootstrap: str, delivery_timeout: float, *, sync: bool, client: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The intercept's producer properties before the durable defaults: its bootstrap,
    delivery timeout, no linger in sync mode, then the client's own (whose secrets are
    registered for redaction, in the NBD plugin's process too)."""
    base: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "message.timeout.ms": max(1, int(delivery_timeout * 1000)),
    }
    if sync:
        base["linger.ms"] = 0
    base.update(client or {})
    for key, value in (client or {}).items():
        if is_secret_key(key):
            register_secret(str(value))
    return base


def consumer_config(base: Mapping[str, Any], group_id: str, **overrides: Any) -> dict[str, Any]:
    """Consumer properties with explicit commits and short sessions."""
    conf: dict[str, Any] = {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    }
    conf.update(base)
    conf.update(overrides)
    return conf


#: Properties only producers or consumers take: left out of an AdminClient's configuration.
_NOT_ADMIN = (
    "enable.",
    "acks",
    "partitioner",
    "linger.ms",
    "compression.type",
    "message.timeout.ms",
    "group.id",
    "auto.offset.reset",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "isolation.level",
    "fetch.",
    "queued.",
    "max.poll.interval.ms",
)
#: librdkafka error names that no retry cures: the credentials or the certificates.
_FATAL_CONNECT = ("_AUTHENTICATION", "_SSL", "SASL_AUTHENTICATION_FAILED")


def admin_config(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``conf`` (bootstrap servers, ``-X`` security properties, ...) fit for an AdminClient."""
    return {k: v for k, v in conf.items() if not k.startswith(_NOT_ADMIN) and k != "on_delivery"}


def connect_admin(conf: Mapping[str, Any], *, timeout: float = 15.0) -> Any:
    """An AdminClient that has fetched metadata once: it fails fast (non-retriable
    :class:`BrokerError`, exit 5) when the broker refuses the credentials or the TLS
    certificate, instead of retrying until ``timeout``."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    fatal: list[str] = []

    def on_error(err: Any) -> None:
        if err.name() in _FATAL_CONNECT or "SSL handshake failed" in err.str():
            fatal.append(err.str())

    try:
        admin_conf: dict[str, Any] = {**admin_config(conf), "error_cb": on_error}
        admin = AdminClient(admin_conf)
    except (KafkaException, ValueError, TypeError) as exc:
        raise ConfigError(f"invalid Kafka client configuration: {redact_text(str(exc))}") from None
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return admin
        except KafkaException as exc:
            last = str(exc)
        finally:
            admin.poll(0)  # error_cb, and librdkafka's log lines to a configured logger
        if fatal:
            raise BrokerError(_connect_problem(fatal[0]), retriable=False)
    raise BrokerError(f"cannot reach Kafka within {timeout:g}s: {redact_text(last)}")


def _connect_problem(error: str) -> str:
    """A clear, secret-free message for a refused connection."""
    if "SSL" in error or "certificate" in error:
        return "Kafka TLS handshake failed (is ssl.ca.location the broker's CA?): " + redact_text(
            error
        )
    return (
        "Kafka refused the SASL credentials (check sasl.username, sasl.password and "
        "sasl.mechanism): " + redact_text(error)
    )


def ensure_topics(
    conf: Mapping[str, Any], topics: Mapping[str, int], *, timeout: float = 15.0
) -> None:
    """Create each missing topic in ``topics`` (name -> partitions); wait until visible."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    admin = connect_admin(conf, timeout=timeout)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka: {redact_text(str(exc))}") from None
    missing = [NewTopic(t, num_partitions=n, replication_factor=1) for t, n in topics.items()]
    missing = [t for t in missing if t.topic not in existing]
    if missing:
        for name, fut in admin.create_topics(missing, request_timeout=timeout).items():
            try:
                fut.result()
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerError(f"cannot create topic {name}: {exc}") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout).topics
        if all(t in md and md[t].partitions for t in topics):
            return
        time.sleep(0.1)
    raise BrokerError(f"topics {sorted(topics)} did not appear within {timeout:.0f}s")


def partition_count(conf: Mapping[str, Any], topic: str, *, timeout: float = 10.0) -> int:
    """Number of partitions of ``topic`` (0 if it does not exist)."""
    admin = connect_admin(conf, timeout=timeout)
    md = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    return len(md.partitions) if md and not md.error else 0
