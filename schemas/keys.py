"""Object key layout v1 — the only module that builds or parses store keys.

See docs/FORMAT.md "Object store layout". Offsets are zero-padded to 20 digits so that
lexicographic order is offset order.
"""

from __future__ import annotations

import re

from connectors.errors import ConfigError

LAYOUT = "v1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_WINDOW = re.compile(r"(\d{20})-(\d{20})\.json$")
_OFFSET = re.compile(r"(\d{20})\.json$")


def check_name(name: str, what: str = "volume") -> str:
    """Return ``name`` if it is a valid volume/group name, else raise :class:`ConfigError`."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"invalid {what} name {name!r}: use 1-128 of A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    return name


def pad(offset: int) -> str:
    if offset < 0:
        raise ValueError(f"offset {offset} is negative")
    return f"{offset:020d}"


def volume_prefix(volume: str) -> str:
    return f"{LAYOUT}/volumes/{check_name(volume)}/"


def manifests_prefix(volume: str) -> str:
    return f"{volume_prefix(volume)}manifests/"


def manifest_key(volume: str, first: int, last: int) -> str:
    return f"{manifests_prefix(volume)}{pad(first)}-{pad(last)}.json"


def data_key(volume: str, first: int, last: int, part: str) -> str:
    """Key of a window object; ``part`` is ``fwd``, ``bwd`` or ``log``."""
    if part not in ("fwd", "bwd", "log"):
        raise ValueError(f"unknown window object part {part!r}")
    return f"{volume_prefix(volume)}data/{pad(first)}-{pad(last)}.{part}"


def checkpoints_prefix(volume: str) -> str:
    return f"{volume_prefix(volume)}checkpoints/"


def checkpoint_key(volume: str, offset: int) -> str:
    return f"{checkpoints_prefix(volume)}{pad(offset)}.json"


def gaps_prefix(volume: str) -> str:
    return f"{volume_prefix(volume)}gaps/"


def gap_key(volume: str, offset: int) -> str:
    return f"{gaps_prefix(volume)}{pad(offset)}.json"


def head_key(volume: str) -> str:
    """The volume's head document (its newest window; overwritten after each window)."""
    return f"{volume_prefix(volume)}head.json"


def retention_key(volume: str) -> str:
    """The volume's retention state (base, journal start, deletion candidates)."""
    return f"{volume_prefix(volume)}retention.json"


def chunk_candidates_key() -> str:
    """The store's chunk deletion candidates (chunks may be shared by volumes)."""
    return f"{LAYOUT}/retention/chunks.json"


def chunks_prefix() -> str:
    return f"{LAYOUT}/chunks/"


def volumes_prefix() -> str:
    return f"{LAYOUT}/volumes/"


def partition_prefix(topic: str, partition: int) -> str:
    return f"{LAYOUT}/partitions/{topic}/{partition}/"


def partition_marker_key(topic: str, partition: int, volume: str) -> str:
    return f"{partition_prefix(topic, partition)}{check_name(volume)}"


def chunk_key(sha256_hex: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", sha256_hex):
        raise ValueError(f"not a sha256 hex digest: {sha256_hex!r}")
    return f"{LAYOUT}/chunks/{sha256_hex[:2]}/{sha256_hex}"


def parse_window_key(key: str) -> tuple[int, int]:
    """(first, last) offsets from a manifest key."""
    m = _WINDOW.search(key)
    if not m:
        raise ValueError(f"not a manifest key: {key!r}")
    return int(m.group(1)), int(m.group(2))


def parse_offset_key(key: str) -> int:
    """The offset of a checkpoint or gap key."""
    m = _OFFSET.search(key)
    if not m:
        raise ValueError(f"not a checkpoint or gap key: {key!r}")
    return int(m.group(1))
