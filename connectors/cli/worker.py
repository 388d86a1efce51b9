"""``kcdp worker``: run the increments worker (a Faust worker) in the foreground.

It consumes the write topic in the consumer group ``--group-id``, cuts every volume's
events into windows by the window flags, stores increments, write logs and manifests in
``--store``, keeps its volumes' images under ``--workdir``, publishes dead letters and window
announcements, and serves Prometheus metrics at ``/metrics`` on ``--web-port``. SIGINT
or SIGTERM stop it; it exits 0 after a clean stop and non-zero after a failure.
Window flags (docs/FORMAT.md "Windows"); with none given, 10-second windows are used.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connectors.cli.prune import add_policy_args
from connectors.cli.prune import policy_from as retention_policy
from connectors.config import DEFAULT_GROUP_ID, Settings
from connectors.errors import KcdpError
from connectors.kafka import ensure_topics
from connectors.store import open_store
from connectors.topics import warn_topic_problems
from streams.app import create_app
from streams.options import WorkerOptions
from streams.pruning import PruneSchedule
from streams.window import WindowPolicy

log = logging.getLogger("kcdp.worker")


def _size(text: str) -> int:
    from connectors.cli.capture import parse_size

    return parse_size(text)


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value

    return parse


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        parents=list(parents),
        help="run the increments worker (Faust): windows, increments, manifests",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w = p.add_argument_group("windows")
    w.add_argument("--window-seconds", type=_positive(float), help="fixed event-time period T")
    w.add_argument("--window-count", type=_positive(int), help="close after N events")
    w.add_argument("--window-bytes", type=_size, help="close after B bytes of written data")
    w.add_argument(
        "--window-adaptive",
        action="store_true",
        help="period from the write rate: clamp(target*dur/bytes, min, max)",
    )
    w.add_argument("--adaptive-target", type=_size, default=64 << 20, help="default 64M")
    w.add_argument("--adaptive-min", type=_positive(float), default=1.0, help="seconds; 1")
    w.add_argument("--adaptive-max", type=_positive(float), default=300.0, help="seconds; 300")
    w.add_argument(
        "--window-max-bytes", type=_size, default=256 << 20, help="memory cap (default 256M)"
    )
    w.add_argument(
        "--tick-grace", type=float, default=0.5, help="seconds past a deadline before a TICK"
    )
    p.add_argument(
        "--group-id",
        default=DEFAULT_GROUP_ID,
        help=f"consumer group / Faust app id (default {DEFAULT_GROUP_ID})",
    )
    p.add_argument(
        "--workdir", help="the volumes' images and worker data (default <state-dir>/worker)"
    )
    p.add_argument("--web-port", type=int, help="serve /metrics on this port (default: off)")
    p.add_argument("--web-host", default="127.0.0.1", help="web bind address (127.0.0.1)")
    p.add_argument(
        "--partitions",
        type=_positive(int),
        help="partitions when creating the write topic (default: the planned workers)",
    )
    from connectors.cli.topics import add_sizing_args

    add_sizing_args(p)
    p.add_argument(
        "--session-timeout", type=_positive(float), default=6.0, help="Kafka session, seconds"
    )
    p.add_argument("--batch-size", type=_positive(int), default=1000, help="records per batch")
    p.add_argument(
        "--close-threads",
        type=int,
        default=2,
        help="threads per partition storing cut windows in the background (0: inline); 2",
    )
    p.add_argument(
        "--store-processes",
        type=int,
        default=None,
        help="child processes storing cut windows, shared by all partitions, instead of "
        "threads (0: threads); 2, or 0 for a memory:// store",
    )
    p.add_argument(
        "--checkpoint-windows", type=int, default=64, help="checkpoint every N windows (0: off)"
    )
    p.add_argument(
        "--checkpoint-bytes", type=_size, default=1 << 30, help="... or every B written bytes"
    )
    p.add_argument(
        "--prune-interval",
        type=float,
        default=0.0,
        help="apply the retention policy to this worker's volumes every S seconds (0: off)",
    )
    add_policy_args(p)
    p.set_defaults(func=cmd_worker)


def policy_from_args(args: argparse.Namespace) -> WindowPolicy:
    """The window policy the flags ask for; 10 s windows when none is given."""
    if not (args.window_seconds or args.window_count or args.window_bytes or args.window_adaptive):
        base = WindowPolicy.default()
        seconds: float | None = base.seconds
    else:
        seconds = args.window_seconds
    return WindowPolicy(
        seconds=seconds,
        count=args.window_count,
        bytes=args.window_bytes,
        adaptive=args.window_adaptive,
        max_bytes=args.window_max_bytes,
        adaptive_target=args.adaptive_target,
        adaptive_min=args.adaptive_min,
        adaptive_max=args.adaptive_max,
        grace=args.tick_grace,
    )


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    policy = policy_from_args(args)
    workdir = Path(args.workdir) if args.workdir else settings.state_path / "worker"
    options = WorkerOptions(
        workdir=workdir,
        policy=policy,
        group_id=args.group_id,
        web_port=args.web_port,
        web_host=args.web_host,
        session_timeout=args.session_timeout,
        heartbeat_interval=min(1.0, args.session_timeout / 3),
        batch_size=args.batch_size,
        checkpoint_windows=args.checkpoint_windows,
        checkpoint_bytes=args.checkpoint_bytes,
        close_threads=args.close_threads,
        store_processes=(
            args.store_processes
            if args.store_processes is not None
            else (0 if settings.store_url.startswith("memory://") else 2)
        ),
    )
    store = open_store(settings.store_url, key_file=settings.key_file, keys_now=True)
    ensure_topics(
        settings.kafka_config(),
        {
            settings.topic: args.partitions or settings.planned_workers,
            settings.increments_topic: 1,
            settings.dlq_topic: 1,
        },
    )
    warn_topic_problems(
        settings.kafka_config(),
        write_topic=settings.topic,
        planned_workers=settings.planned_workers,
        lag_budget_seconds=settings.lag_budget_seconds,
        logger=log,
    )
    pruning = PruneSchedule(args.prune_interval, retention_policy(args, settings))
    app, worker = create_app(settings, store=store, options=options, pruning=pruning)
    log.info(
        "worker %s: topic %s, store %s, policy %s",
        options.group_id,
        settings.topic,
        store.url,
        policy.to_dict(),
    )
    fw = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True, override_logging=False)
    exit_code: int | str | None = 0
    try:
        fw.execute_from_commandline()
    except SystemExit as exc:
        exit_code = exc.code
    finally:
        try:
            worker.close()
        except Exception as exc:  # a failure already recorded is the one to report
            if worker.failure is None:
                worker.failure = exc
            else:
                log.error("closing after the failure also failed: %s", exc)
        finally:
            store.close()
    if worker.failure is not None:
        if isinstance(worker.failure, KcdpError):
            raise worker.failure
        return 1
    return exit_code if isinstance(exit_code, int) else 1
