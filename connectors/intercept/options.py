"""Options and argument checks of :class:`connectors.intercept.intercepted.InterceptedVolume`."""

from __future__ import annotations

from typing import Literal

from connectors.errors import ConfigError, InvalidEventError
from schemas.keys import check_name

Mode = Literal["sync", "async"]
BaselinePolicy = Literal["auto", "always", "never"]

#: Default bound on unacknowledged event bytes (async mode, and baselines in either mode).
DEFAULT_MAX_IN_FLIGHT = 64 * 1024 * 1024
#: Default size of one baseline read.
DEFAULT_BASELINE_CHUNK = 1024 * 1024


def check_options(
    *,
    volume: str,
    group: str,
    mode: str,
    baseline: str,
    max_in_flight_bytes: int,
    baseline_chunk: int,
    max_event_data: int,
    delivery_timeout: float,
) -> None:
    """Raise :class:`ConfigError` naming the first invalid option."""
    check_name(volume, "volume")
    check_name(group, "group")
    if mode not in ("sync", "async"):
        raise ConfigError(f"mode must be 'sync' or 'async', not {mode!r}")
    if baseline not in ("auto", "always", "never"):
        raise ConfigError(f"baseline must be auto, always or never, not {baseline!r}")
    for what, number in (
        ("max_in_flight_bytes", max_in_flight_bytes),
        ("baseline_chunk", baseline_chunk),
        ("max_event_data", max_event_data),
    ):
        if number <= 0:
            raise ConfigError(f"{what} must be positive, not {number}")
    if delivery_timeout <= 0:
        raise ConfigError("delivery_timeout must be positive")


def check_range(volume: str, size: int, what: str, offset: int, length: int) -> None:
    """Raise :class:`InvalidEventError` unless ``[offset, offset+length)`` is a non-empty
    range inside volume ``volume`` of ``size`` bytes (``what`` names the operation)."""
    if not isinstance(offset, int) or not isinstance(length, int):
        raise InvalidEventError(f"{what}: offset and length must be integers")
    if offset < 0 or length < 0:
        raise InvalidEventError(f"{what}: negative offset or length ({offset}, {length})")
    if length == 0:
        raise InvalidEventError(f"{what}: empty {what} at {offset} on volume {volume}")
    if offset + length > size:
        raise InvalidEventError(
            f"{what} [{offset}, {offset + length}) ends past the end of volume "
            f"{volume} ({size} bytes)"
        )
