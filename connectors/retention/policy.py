"""The retention policy (docs/FORMAT.md "Retention"): what a prune keeps.

Resolved like every setting: flags > environment (:data:`ENV`) > the TOML ``[retention]``
table > the defaults below. Durations take ``s``, ``m``, ``h``, ``d`` or ``w`` suffixes
(plain numbers are seconds); sizes ``K``, ``M``, ``G``, ``T`` (powers of 1024). With no
limit set, a prune keeps everything and deletes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from connectors.errors import ConfigError
from schemas.checkpoint import CHUNK_REFRESH_US

#: Unlinked objects stay this long before they are deleted (longer than a long restore).
DEFAULT_GRACE_S = 6 * 3600.0
#: The shortest grace accepted without ``unsafe_grace``: a checkpoint that takes a stored
#: chunk must reference it before the chunk's candidacy can end (invariant 4).
MIN_GRACE_S = 3600.0
#: The base stays put while the forward bytes between it and the oldest kept edge are at
#: most this fraction of the volume (docs/FORMAT.md "Retention", ``base_slack``).
DEFAULT_BASE_SLACK = 0.25

#: Policy field -> environment variable.
ENV: dict[str, str] = {
    "keep_within": "KCDP_KEEP_WITHIN",
    "keep_hourly": "KCDP_KEEP_HOURLY",
    "keep_daily": "KCDP_KEEP_DAILY",
    "keep_weekly": "KCDP_KEEP_WEEKLY",
    "keep_monthly": "KCDP_KEEP_MONTHLY",
    "keep_bookmarks": "KCDP_KEEP_BOOKMARKS",
    "max_bytes": "KCDP_MAX_BYTES",
    "grace": "KCDP_PRUNE_GRACE",
    "base_slack": "KCDP_BASE_SLACK",
}
_DURATIONS = ("keep_within", "keep_bookmarks", "grace")
_COUNTS = ("keep_hourly", "keep_daily", "keep_weekly", "keep_monthly")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Limits of a volume's history; None: no limit of that kind.

    ``keep_within``/``keep_bookmarks``/``grace`` are seconds; ``keep_*ly`` bucket counts;
    ``max_bytes`` the stored window bytes a prune shortens the journal to fit;
    ``base_slack`` a fraction of the volume size (how far the base may lag).
    """

    keep_within: float | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_bookmarks: float | None = None
    max_bytes: int | None = None
    grace: float = DEFAULT_GRACE_S
    base_slack: float = DEFAULT_BASE_SLACK
    unsafe_grace: bool = False

    def __post_init__(self) -> None:
        for name in (*_DURATIONS, *_COUNTS, "max_bytes", "base_slack"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"retention {name} must not be negative, got {value}")
        if self.grace < MIN_GRACE_S and not self.unsafe_grace:
            raise ConfigError(
                f"retention grace {self.grace:g} s is below the minimum {MIN_GRACE_S:g} s "
                f"(the chunk refresh age is {CHUNK_REFRESH_US / 1e6:g} s); a shorter grace "
                "may delete a chunk a checkpoint is about to reference"
            )

    @property
    def empty(self) -> bool:
        """No limit set: a prune keeps everything."""
        limits = (*_DURATIONS[:2], *_COUNTS, "max_bytes")
        return all(getattr(self, name) is None for name in limits)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_duration(value: object, name: str) -> float:
    """Seconds of ``value``: a number, or text like ``90s``, ``30m``, ``24h``, ``7d``."""
    if isinstance(value, bool):
        raise ConfigError(f"retention {name}: not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(value).lower())
    if not m:
        raise ConfigError(
            f"retention {name}: not a duration (use e.g. 90s, 30m, 24h, 7d): {value!r}"
        )
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_size(value: object, name: str) -> int:
    """Bytes of ``value``: a number, or text like ``512M``, ``20G``."""
    if isinstance(value, bool):
        raise ConfigError(f"retention {name}: not a size: {value!r}")
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)i?b?\s*", str(value).lower())
    if not m:
        raise ConfigError(f"retention {name}: not a size (use e.g. 512M, 20G): {value!r}")
    return int(m.group(1)) * _SIZES[m.group(2)]


_Num = TypeVar("_Num", int, float)


def _number(value: object, name: str, cast: type[_Num], what: str) -> _Num:
    """``value`` (not a bool) as ``cast``, else a :class:`ConfigError` saying ``what``."""
    try:
        if isinstance(value, bool):
            raise ValueError
        return cast(str(value))
    except ValueError:
        raise ConfigError(f"retention {name}: not {what}: {value!r}") from None


def _parse(name: str, value: object) -> Any:
    if name in _DURATIONS:
        return parse_duration(value, name)
    if name in _COUNTS:
        return _number(value, name, int, "a count")
    if name == "max_bytes":
        return parse_size(value, name)
    if name == "base_slack":
        return _number(value, name, float, "a fraction (e.g. 0.25)")
    if name == "unsafe_grace":
        return value is True or str(value).lower() in ("1", "true", "yes")
    raise ConfigError(f"unknown retention setting {name!r}")


def resolve_policy(
    table: Mapping[str, Any] | None,
    env: Mapping[str, str],
    flags: Mapping[str, Any] | None = None,
) -> RetentionPolicy:
    """The policy from ``flags`` (None values: not given) > ``env`` > ``table`` (TOML)."""
    names = {f.name for f in fields(RetentionPolicy)}
    if table is not None and not isinstance(table, Mapping):
        raise ConfigError("the [retention] table of the config file must be a table")
    values: dict[str, Any] = {}
    for name, value in (table or {}).items():
        if name not in names:
            raise ConfigError(f"[retention]: unknown setting {name!r}")
        values[name] = _parse(name, value)
    for name, var in ENV.items():
        if env.get(var):
            values[name] = _parse(name, env[var])
    for name, value in (flags or {}).items():
        if value is not None and name in names:
            values[name] = _parse(name, value)
    return RetentionPolicy(**values)
