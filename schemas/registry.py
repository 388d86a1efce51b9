"""Schema registry clients: one per URL and settings in the process
(:func:`registry_client_for`), and the classification of their failures
(:func:`registry_failure`: a bad record, a refusal, or a registry that cannot answer)."""

from __future__ import annotations

import threading
from typing import Any

from connectors.errors import ConfigError, KcdpError, RegistryError


def registry_failure(exc: BaseException, what: str) -> KcdpError:
    """Classify an exception of the registry client.

    The registry answered that it does not have it (HTTP 404) or refused the request as
    invalid (other 4xx but those below): a plain :class:`KcdpError` (the caller decides:
    a bad record, a refused registration). It refused our credentials (401, 403): a
    :class:`RegistryError` that is not retriable. It could not answer (no connection,
    timeout, 408, 429, 5xx, a malformed answer): a retriable :class:`RegistryError`.
    """
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if isinstance(exc, SchemaRegistryError):
        status = exc.http_status_code
        detail = f"{exc.error_message} (HTTP {status}, registry code {exc.error_code})"
        if status in (401, 403):
            return RegistryError(
                f"schema registry refused {what}: {detail}; check its credentials",
                retriable=False,
            )
        if 400 <= status < 500 and status not in (408, 429):
            return KcdpError(detail)
        return RegistryError(f"schema registry failed {what}: {detail}")
    return RegistryError(f"schema registry unreachable while {what}: {type(exc).__name__}: {exc}")


_clients: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
_clients_lock = threading.Lock()


def registry_client_for(url: str, extra: dict[str, Any] | None = None) -> Any:
    """The process's registry client for ``url`` and ``extra`` settings (made once)."""
    key = (url, tuple(sorted((k, str(v)) for k, v in (extra or {}).items())))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _registry_client(url, dict(extra or {}))
        return client


def _registry_client(url: str, extra: dict[str, Any]) -> Any:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    try:
        return SchemaRegistryClient.new_client({"url": url, **extra})
    except Exception as exc:
        raise ConfigError(f"invalid schema registry configuration: {exc}") from None
