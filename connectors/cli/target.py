"""The point flags shared by ``kcdp restore``, ``export`` and ``mount``.

Exactly one of ``--to-offset N``, ``--to-timestamp T`` (RFC 3339 with a zone),
``--to-bookmark NAME`` or ``--latest``; :func:`target_offset` turns them into the offset
they name over one volume or a group's volumes. Light on purpose: commands that start a
server import this, not the restore machinery.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import TYPE_CHECKING

from connectors.errors import NotRestorableError, UsageError

if TYPE_CHECKING:
    from connectors.restore.catalog import Catalog


def add_target(p: argparse.ArgumentParser) -> None:
    """The point flags (exactly one): --to-offset, --to-timestamp, --to-bookmark, --latest."""
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-offset", type=int, help="Kafka offset N in the group's partition")
    target.add_argument("--to-timestamp", help="RFC 3339 time, e.g. 2026-11-25T01:00:00Z")
    target.add_argument("--to-bookmark", help="bookmark name")
    target.add_argument("--latest", action="store_true", help="the newest restorable point")


def parse_time(text: str) -> int:
    """RFC 3339 text -> microseconds since the epoch (a zone is required)."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--to-timestamp {text!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise UsageError(f"--to-timestamp {text!r} needs a zone (Z or +HH:MM)")
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def target_offset(args: argparse.Namespace, catalogs: list[Catalog]) -> int:
    """The offset the target flags name (the largest over a group's volumes)."""
    if args.to_offset is not None:
        if args.to_offset < 0:
            raise UsageError("--to-offset must be >= 0")
        return int(args.to_offset)
    if args.to_bookmark is not None:
        found = []
        for c in catalogs:
            try:
                found.append(c.find_bookmark(args.to_bookmark).offset)
            except NotRestorableError:
                continue
        if not found:
            raise NotRestorableError(f"no bookmark named {args.to_bookmark!r}")
        return max(found)
    if args.to_timestamp is not None:
        t = parse_time(args.to_timestamp)
        offsets = []
        for c in catalogs:
            try:
                offsets.append(c.offset_at_time(t))
            except NotRestorableError:
                if len(catalogs) == 1:
                    raise
        if not offsets:
            raise NotRestorableError(f"no event at or before {args.to_timestamp}")
        return max(offsets)
    newest = [c.latest() for c in catalogs]
    return min(newest)
