"""``kcdp prune [VOLUME…] [--dry-run] [--json]``: apply the retention policy now.

The policy comes from the flags below, the environment (``KCDP_KEEP_WITHIN`` …) and the
config file's ``[retention]`` table (docs/FORMAT.md "Retention"). Without a volume every
volume of the store is pruned. ``--dry-run`` lists what would be consolidated and dropped
and the bytes unlinked, and writes nothing. With no limit set nothing is deleted.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import orjson

from connectors.config import Settings
from connectors.retention.policy import RetentionPolicy, resolve_policy
from connectors.retention.prune import prune_volume
from connectors.status_figures import list_volumes
from connectors.store import open_store
from schemas import keys

#: Flags of the policy: (flag, field, help).
POLICY_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("--keep-within", "keep_within", "every point of this age stays restorable (e.g. 24h)"),
    ("--keep-hourly", "keep_hourly", "older: one point per hour for N hours"),
    ("--keep-daily", "keep_daily", "one point per day for N days"),
    ("--keep-weekly", "keep_weekly", "one point per ISO week for N weeks"),
    ("--keep-monthly", "keep_monthly", "one point per month for N months"),
    ("--keep-bookmarks", "keep_bookmarks", "bookmarks younger than this stay exact (e.g. 30d)"),
    ("--max-bytes", "max_bytes", "stored window bytes; above it the journal is shortened"),
    ("--grace", "grace", "unlinked objects are deleted after this (default 6h, minimum 1h)"),
    (
        "--base-slack",
        "base_slack",
        "the base moves once the forward bytes before the oldest kept point pass this "
        "fraction of the volume (default 0.25; 0: at every prune)",
    ),
)


def add_policy_args(p: argparse.ArgumentParser) -> None:
    """The policy flags, shared by ``kcdp prune`` and ``kcdp worker --prune-interval``."""
    g = p.add_argument_group("retention policy (flags > env KCDP_KEEP_* > [retention])")
    for flag, dest, text in POLICY_FLAGS:
        g.add_argument(flag, dest=dest, help=text)
    g.add_argument(
        "--unsafe-grace",
        dest="unsafe_grace",
        action="store_const",
        const=True,
        help="accept a grace below 1 h (tests only: a chunk a checkpoint takes may go)",
    )


def policy_from(args: argparse.Namespace, settings: Settings) -> RetentionPolicy:
    flags = {dest: getattr(args, dest, None) for _, dest, _ in POLICY_FLAGS}
    flags["unsafe_grace"] = getattr(args, "unsafe_grace", None)
    return resolve_policy(settings.retention, os.environ, flags)


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "prune",
        parents=list(parents),
        help="apply the retention policy: consolidate old windows, delete after a grace",
        description="Consolidate windows older than --keep-within into one per kept point, "
        "move the base forward, and delete unlinked objects once the grace period passed. "
        "Every point the policy keeps stays restorable at every instant.",
    )
    p.add_argument("volumes", nargs="*", metavar="VOLUME", help="default: every volume")
    p.add_argument("--dry-run", action="store_true", help="list what would change, write nothing")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_policy_args(p)
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    policy = policy_from(args, settings)
    workdir = settings.state_path / "prune"
    workdir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store_url, key_file=settings.key_file, keys_now=True)
    try:
        volumes = [keys.check_name(v) for v in args.volumes] or sorted(
            list_volumes(store, settings.topic)
        )
        reports = [
            prune_volume(store, v, policy, workdir=workdir, dry_run=args.dry_run) for v in volumes
        ]
    finally:
        store.close()
    if args.json:
        doc = {"policy": policy.to_dict(), "volumes": [r.to_dict() for r in reports]}
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        if policy.empty:
            print("no retention limit is set: nothing is consolidated or deleted")
        for r in reports:
            print(r.to_text())
    return 0
