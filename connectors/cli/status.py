"""``kcdp status [VOLUME...] [--json] [--group-id ID]``: how far protection is behind capture.

One row per volume: last captured offset, last durable window, lag (events, data bytes),
RPO, oldest..newest restorable point, bytes stored, gaps, dead letters and the worker
group's health. Definitions: :mod:`connectors.status`. ``--json`` prints a JSON list of
:class:`connectors.status.VolumeStatus` objects for scripts.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from typing import Any

import orjson

from connectors.cli.prune import add_policy_args
from connectors.cli.prune import policy_from as retention_policy
from connectors.config import DEFAULT_GROUP_ID, Settings
from connectors.errors import UsageError
from connectors.status import DEFAULT_BATCH, DEFAULT_MAX_SCAN, StatusReader
from connectors.status_figures import VolumeStatus
from connectors.store import open_store
from connectors.worker_metrics import read_worker_metrics
from schemas.codec import AvroCodec

#: The worker's consumer group when ``--group-id`` is not given: the Faust app id, the


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        parents=list(parents),
        help="per-volume capture, durability, lag, RPO, restore points and worker health",
        description="For each volume in the store (or each VOLUME given): last captured "
        "offset and time, last durable window, lag in events and data bytes, RPO in "
        "seconds, oldest and newest restorable point, bytes stored, gaps, dead letters and "
        "the worker group's health. Definitions are in the README, 'Status and metrics'.",
    )
    p.add_argument("volumes", nargs="*", metavar="VOLUME", help="volumes (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument(
        "--group-id",
        dest="group_id",
        default=DEFAULT_GROUP_ID,
        help=f"the worker's consumer group (default {DEFAULT_GROUP_ID})",
    )
    p.add_argument(
        "--max-scan",
        type=int,
        default=DEFAULT_MAX_SCAN,
        help=f"records read at most per partition (default {DEFAULT_MAX_SCAN})",
    )
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per broker call (default 10)"
    )
    p.add_argument(
        "--worker-metrics",
        dest="worker_metrics",
        action="append",
        default=[],
        metavar="URL",
        help="a worker's /metrics URL (repeatable): adds records in quarantine and records "
        "re-reads found per volume",
    )
    add_policy_args(p)
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    if args.max_scan <= 0 or args.timeout <= 0:
        raise UsageError("--max-scan and --timeout must be positive")
    live = (
        read_worker_metrics(args.worker_metrics, timeout=args.timeout)
        if args.worker_metrics
        else None
    )
    store = open_store(settings.store_url, key_file=settings.key_file, keys_now=True)
    try:
        reader = StatusReader(
            store,
            kafka_conf=settings.kafka_config(),
            group_id=args.group_id,
            topic=settings.topic,
            dlq_topic=settings.dlq_topic,
            codec=AvroCodec(
                registry_url=settings.schema_registry or None,
                subject=f"{settings.topic}-value",
            ),
            dlq_codec=AvroCodec(
                "DeadLetter",
                registry_url=settings.schema_registry or None,
                subject=f"{settings.dlq_topic}-value",
            ),
            max_scan=args.max_scan,
            batch=min(DEFAULT_BATCH, args.max_scan),
            timeout=args.timeout,
            worker_figures=live,
            keep_within=retention_policy(args, settings).keep_within,
        )
        found = reader.volumes(args.volumes or None)
    finally:
        store.close()
    if args.json:
        print(orjson.dumps([s.to_dict() for s in found], option=orjson.OPT_INDENT_2).decode())
    elif not found:
        print(f"no protected volume in {settings.store_url}")
    else:
        print(render_table(found))
        for line in retention_lines(found):
            print(line)
    return 0


def retention_lines(rows: Sequence[VolumeStatus]) -> list[str]:
    """One line per pruned volume (base, last prune), and the journal alert: the any-point
    history holds less than 75% of keep_within (docs/FORMAT.md "Retention")."""
    lines = []
    for s in rows:
        if s.base_offset is not None:
            when = human_age(s.last_prune_us, s.checked_us)
            lines.append(f"{s.volume}: history pruned to base @{s.base_offset}, last prune {when}")
        if s.history_short and s.history_seconds is not None and s.history_target_seconds:
            lines.append(
                f"WARNING {s.volume}: the any-point journal holds {s.history_seconds:.0f} s, "
                f"less than 75% of keep_within {s.history_target_seconds:.0f} s"
            )
    return lines


def human_bytes(n: int) -> str:
    """``n`` bytes in binary units, e.g. ``1.5 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(time_us: int | None, now_us: int) -> str:
    if time_us is None:
        return "-"
    seconds = max(0.0, (now_us - time_us) / 1e6)
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return dt.datetime.fromtimestamp(time_us / 1e6, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


def _point(offset: int | None, time_us: int | None, now_us: int) -> str:
    return f"{_opt(offset)} ({human_age(time_us, now_us)})"


def render_table(rows: Sequence[VolumeStatus]) -> str:
    """Aligned columns with human units, one row per volume."""
    head = (
        "VOLUME",
        "PART",
        "CAPTURED",
        "DURABLE",
        "LAG",
        "RPO",
        "POINTS",
        "STORED",
        "GAPS",
        "DLQ",
        "FENCED",
        "HELD",
        "WORKER",
    )
    body = []
    for s in rows:
        lag = f"{s.lag_events} ev / {human_bytes(s.lag_bytes)}" + ("" if s.lag_complete else "+")
        points = (
            "-"
            if s.oldest_point is None and s.newest_point is None
            else f"{_opt(s.oldest_point)}..{_opt(s.newest_point)}"
        )
        if s.history_problem is not None:
            points += " (head!)"  # the newest window is not vouched for: see --json
        w = s.worker
        worker = w.state
        if w.uncommitted is not None:
            worker += f", {w.uncommitted} uncommitted"
        body.append(
            (
                s.volume,
                str(s.partition),
                _point(s.last_captured_offset, s.last_captured_time_us, s.checked_us),
                _point(s.last_durable_offset, s.last_durable_time_us, s.checked_us),
                lag,
                f"{s.rpo_seconds:.1f}s",
                points,
                human_bytes(s.bytes_stored),
                str(len(s.gaps)),
                _reasons(s.dlq_by_reason),
                str(len(s.fenced_sessions)),
                "-" if s.quarantined is None else f"{s.quarantined} ({s.reread_found} found)",
                worker,
            )
        )
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in (head, *body)
    )


def _reasons(by_reason: dict[str, int]) -> str:
    """``3 (StaleEventError 2, DecodeError 1)``: the total, then each reason, most first."""
    total = sum(by_reason.values())
    if not total:
        return "0"
    parts = sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    return f"{total} (" + ", ".join(f"{r} {n}" for r, n in parts) + ")"
