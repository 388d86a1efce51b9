"""Explicit configuration: flags > environment > TOML file > documented defaults.

The TOML file comes from ``--config PATH`` or ``KCDP_CONFIG``. Its top-level keys are the
field names of :class:`Settings`; the ``[kafka]`` table holds librdkafka properties, merged
under repeatable ``-X key=value`` flags; the ``[retention]`` table the retention policy
(:mod:`connectors.retention.policy`). Environment variables are listed in :data:`ENV`.

Secrets (Kafka passwords, S3 keys) are registered with :func:`register_secret` as they are
read, and :func:`redact` / the logging filter in :mod:`connectors.logs` scrub them from
every message and log line.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from connectors.errors import ConfigError

#: Settings field -> environment variable.
ENV: dict[str, str] = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "store": "KCDP_STORE",
    "schema_registry": "KCDP_SCHEMA_REGISTRY",
    "topic": "KCDP_TOPIC",
    "state_dir": "KCDP_STATE_DIR",
    "log_level": "KCDP_LOG_LEVEL",
    "planned_workers": "KCDP_PLANNED_WORKERS",
    "lag_budget": "KCDP_LAG_BUDGET",
    "encryption_key_file": "KCDP_ENCRYPTION_KEY_FILE",
}
CONFIG_ENV = "KCDP_CONFIG"

#: Property names whose values are secrets (matched case-insensitively as substrings).
SECRET_MARKERS = ("password", "secret", "token", "credential", "private.key", "key.pem")
#: Environment variables whose values are secrets.
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MINIO_SECRET_KEY",
    "MINIO_ROOT_PASSWORD",
    "KCDP_S3_SECRET_KEY",
)

_secrets: set[str] = set()

#: The worker's consumer group (and Faust app id): where it commits durable offsets.
DEFAULT_GROUP_ID = "kcdp-increments"


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved configuration shared by every command.

    Defaults: a local broker at ``127.0.0.1:9092``, a directory store under the state
    directory, topics ``kcdp.writes`` / ``kcdp.increments`` / ``kcdp.writes.dlq``, Avro
    single-object encoding (no registry).
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    store: str = ""
    schema_registry: str = ""
    topic: str = "kcdp.writes"
    increments_topic: str = "kcdp.increments"
    dlq_topic: str = "kcdp.writes.dlq"
    state_dir: str = "~/.local/state/kcdp"
    log_level: str = "INFO"
    #: worker processes planned for the write topic: its partitions must be at least this.
    planned_workers: int = 1
    #: how far behind a worker may fall (stopped or slow) before events must still be in
    #: the write topic: its retention must be at least this (``7d``, ``36h``, seconds).
    lag_budget: str = "7d"
    #: the key file that seals the store's objects ("" : the store is not encrypted;
    #: docs/FORMAT.md "Encryption").
    encryption_key_file: str = ""
    kafka: Mapping[str, str] = field(default_factory=dict)
    #: the TOML ``[retention]`` table (connectors.retention.policy resolves it with env/flags)
    retention: Mapping[str, Any] = field(default_factory=dict)

    @property
    def lag_budget_seconds(self) -> float:
        return parse_duration(self.lag_budget)

    @property
    def state_path(self) -> Path:
        return Path(os.path.expanduser(self.state_dir))

    @property
    def store_url(self) -> str:
        """The store URL; defaults to a directory store inside the state directory."""
        return self.store or f"file://{self.state_path / 'store'}"

    @property
    def key_file(self) -> str | None:
        """The encryption key file (``~`` expanded), or None for an unencrypted store."""
        return os.path.expanduser(self.encryption_key_file) if self.encryption_key_file else None

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka properties: bootstrap servers, then ``-X`` / ``[kafka]``, then overrides."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(self.kafka)
        conf.update(overrides)
        return conf


def parse_x_options(pairs: Iterable[str]) -> dict[str, str]:
    """Parse repeatable ``-X key=value`` flags; values pass to Kafka unchanged.

    Secret values are registered before any error is raised, and a malformed pair that
    names a secret property is not echoed.
    """
    pairs = list(pairs)
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if sep and key.strip() and is_secret_key(key):
            register_secret(value)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            shown = "a value naming a secret property" if is_secret_key(pair) else repr(pair)
            raise ConfigError(f"-X expects key=value, got {redact_text(shown)}")
        out[key.strip()] = value
    return out


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> Settings:
    """Resolve settings from ``flags`` (None values mean "not given"), ``env`` and TOML."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    values: dict[str, Any] = {}
    kafka: dict[str, str] = {}
    path = config_path or flags.get("config") or env.get(CONFIG_ENV)
    names = {f.name for f in fields(Settings)}
    if path:
        file_values = _read_toml(Path(path))
        unknown = set(file_values) - names
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        kafka.update({str(k): str(v) for k, v in file_values.pop("kafka", {}).items()})
        values.update(file_values)
    for name, var in ENV.items():
        if env.get(var):
            values[name] = env[var]
    for name in names - {"kafka"}:
        if name in flags:
            values[name] = flags[name]
    kafka.update(flags.get("kafka", {}))
    for key, value in kafka.items():
        if is_secret_key(key):
            register_secret(value)
    for var in SECRET_ENV:
        if env.get(var):
            register_secret(env[var])
    _check_typed(values)
    try:
        settings = replace(Settings(), **values, kafka=kafka)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    for name in ("bootstrap_servers", "topic", "increments_topic", "dlq_topic"):
        if not isinstance(getattr(settings, name), str) or not getattr(settings, name):
            raise ConfigError(f"setting {name} must be a non-empty string")
    return settings


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds from ``3600``, ``90s``, ``45m``, ``36h``, ``7d``, ``2w``; ConfigError otherwise."""
    m = _DURATION.fullmatch(str(text).strip().lower())
    if not m or float(m[1]) <= 0:
        raise ConfigError(f"invalid duration {text!r} (e.g. 7d, 36h, 90m, 3600)")
    return float(m[1]) * _UNIT_SECONDS[m[2]]


def _check_typed(values: dict[str, Any]) -> None:
    """Convert and check, in place, the settings that are not plain strings."""
    if "planned_workers" in values:
        try:
            values["planned_workers"] = int(values["planned_workers"])
        except (TypeError, ValueError):
            raise ConfigError(
                f"planned_workers must be a whole number, not {values['planned_workers']!r}"
            ) from None
        if values["planned_workers"] < 1:
            raise ConfigError("planned_workers must be at least 1")
    if "lag_budget" in values:
        values["lag_budget"] = str(values["lag_budget"])
        parse_duration(values["lag_budget"])


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def is_secret_key(key: str) -> bool:
    low = key.lower()
    return any(marker in low for marker in SECRET_MARKERS)


def register_secret(value: str) -> None:
    """Remember ``value`` so that :func:`redact_text` removes it from any text."""
    if value and len(value) >= 3:
        _secrets.add(value)


_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/@:\s]*):(?P<pw>[^/@\s]*)@")


def redact_text(text: str) -> str:
    """``text`` with every registered secret and URL password replaced by ``***``."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def redact(conf: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a property mapping safe to print: secret-looking keys show ``***``."""
    return {k: ("***" if is_secret_key(k) else redact_text(str(v))) for k, v in conf.items()}
