"""``kcdp intercept nbd``, ``kcdp bookmark`` and ``kcdp baseline``: the capture commands.

* ``intercept nbd VOLUME --backing FILE`` exports the volume over NBD through nbdkit with
  the capture plugin, in the foreground, until SIGINT/SIGTERM (then the volume closes
  cleanly). It prints the NBD URI on stdout once clients can connect.
* ``bookmark VOLUME NAME`` asks the running intercept of VOLUME (through its control
  socket) to publish a BOOKMARK and prints the event's Kafka offset.
* ``baseline VOLUME --backing FILE`` copies a volume that is not exported into the topic
  (a baseline) and closes it cleanly; prints the offset of BASELINE_END.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from connectors.config import Settings
from connectors.errors import UsageError, VolumeError
from connectors.intercept import InterceptedVolume
from connectors.intercept.control import request, socket_path
from connectors.intercept.nbd import NbdExport
from connectors.topics import warn_topic_problems

_SIZE = re.compile(r"(\d+)([KMGT]?)(i?B)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``123``, ``64K``, ``1M``, ``2GiB`` (binary units)."""
    m = _SIZE.fullmatch(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 1073741824, 512M, 1G)")
    return int(m.group(1)) << (10 * " KMGT".index((m.group(2) or " ").upper()))


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("intercept", parents=list(parents), help="capture a volume's writes")
    isub = p.add_subparsers(dest="intercept_command", metavar="KIND", required=True)
    nbd = isub.add_parser(
        "nbd",
        parents=list(parents),
        help="export a volume over NBD, capturing every write (nbdkit)",
        description="Run nbdkit with the kafka-cdp plugin in the foreground. pwrite, zero, "
        "trim are captured; flush and FUA wait for Kafka. Prints the NBD URI when ready.",
    )
    _volume_args(nbd)
    where = nbd.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, help="TCP port on --host (default: a unix socket)")
    where.add_argument("--unix", help="unix socket path (default <state-dir>/run/VOLUME.nbd)")
    nbd.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1)")
    mode = nbd.add_mutually_exclusive_group()
    mode.add_argument("--sync", dest="mode", action="store_const", const="sync", default="sync")
    mode.add_argument(
        "--async", dest="mode", action="store_const", const="async", help="ack before Kafka"
    )
    nbd.add_argument(
        "--baseline",
        choices=("auto", "always", "never"),
        default="auto",
        help="auto (default): copy the volume when its history cannot be trusted; "
        "never: trust that the topic holds it (wrong restores if it does not)",
    )
    nbd.add_argument("--threads", type=int, default=16, help="nbdkit threads (default 16)")
    nbd.add_argument(
        "--metrics-port",
        type=int,
        help="serve the intercept's Prometheus metrics at /metrics on this port (default: off)",
    )
    nbd.add_argument("--metrics-host", default="127.0.0.1", help="metrics bind address (127.0.0.1)")
    nbd.set_defaults(func=cmd_intercept_nbd)

    b = sub.add_parser(
        "bookmark",
        parents=list(parents),
        help="mark a point in a volume's history; prints its Kafka offset",
        description="Ask the running intercept of VOLUME to publish a BOOKMARK. Fails when "
        "no intercept runs for the volume.",
    )
    b.add_argument("volume")
    b.add_argument("name")
    b.add_argument("--group", help="check that the intercept uses this consistency group")
    b.add_argument("--backing", help="backing file of the volume (finds <FILE>.kcdp.sock)")
    b.add_argument("--socket", help="control socket path (default <state-dir>/run/VOLUME.sock)")
    b.set_defaults(func=cmd_bookmark)

    base = sub.add_parser(
        "baseline",
        parents=list(parents),
        help="copy a volume that is not exported into the topic, then close it cleanly",
    )
    _volume_args(base)
    base.set_defaults(func=cmd_baseline)


def _volume_args(p: argparse.ArgumentParser) -> None:
    from connectors.cli.topics import add_sizing_args

    add_sizing_args(p)
    p.add_argument("volume")
    p.add_argument("--backing", required=True, help="backing file or block device")
    p.add_argument("--size", type=parse_size, help="create the file sparse at this size")
    p.add_argument("--group", help="consistency group (default: the volume)")


def _volume_settings(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    return {
        "path": os.path.abspath(args.backing),
        "volume": args.volume,
        "size": args.size,
        "group": args.group,
        "bootstrap_servers": settings.bootstrap_servers,
        "topic": settings.topic,
        "client_config": dict(settings.kafka),
        "schema_registry": settings.schema_registry or None,
        "run_dir": str(settings.state_path / "run"),
        "planned_workers": settings.planned_workers,
        "lag_budget_seconds": settings.lag_budget_seconds,
    }


def cmd_intercept_nbd(args: argparse.Namespace, settings: Settings) -> int:
    volume_settings = {
        **_volume_settings(args, settings),
        "mode": args.mode,
        "baseline": args.baseline,
        "check_topics": False,  # checked here, where the warnings reach the terminal
    }
    warn_topic_problems(
        settings.kafka_config(),
        write_topic=settings.topic,
        planned_workers=settings.planned_workers,
        lag_budget_seconds=settings.lag_budget_seconds,
    )
    if args.metrics_port is not None:
        volume_settings["metrics_port"] = args.metrics_port
        volume_settings["metrics_host"] = args.metrics_host
    unix = args.unix
    if args.port is None and unix is None:
        (settings.state_path / "run").mkdir(parents=True, exist_ok=True)
        unix = str(settings.state_path / "run" / f"{args.volume}.nbd")
    export = NbdExport(
        volume_settings, port=args.port, unix=unix, host=args.host, threads=args.threads
    )
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        export.terminate()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(export.start(), flush=True)
        status = export.wait()
    finally:
        export.cleanup()
        for s, handler in old.items():
            signal.signal(s, handler)
    if stopping:
        return 130 if stopping[0] == signal.SIGINT else 0
    if status != 0:
        raise VolumeError(f"nbdkit exited with status {status}: {export.log_tail()}")
    return 0


def cmd_bookmark(args: argparse.Namespace, settings: Settings) -> int:
    if args.socket:
        path = Path(args.socket)
    elif args.backing:
        path = socket_path(os.path.abspath(args.backing))
    else:
        path = settings.state_path / "run" / f"{args.volume}.sock"
    status = json.loads(request(path, "status"))
    if status.get("volume") != args.volume:
        raise VolumeError(f"the intercept at {path} serves {status.get('volume')!r}")
    if args.group and status.get("group") != args.group:
        raise VolumeError(
            f"volume {args.volume} is captured in group {status.get('group')!r}, not {args.group!r}"
        )
    if not args.name.strip() or "\n" in args.name:
        raise UsageError("a bookmark name is one non-empty line")
    print(request(path, f"bookmark {args.name}"))
    return 0


def cmd_baseline(args: argparse.Namespace, settings: Settings) -> int:
    with InterceptedVolume(**_volume_settings(args, settings), baseline="always") as vol:
        end = vol.wait_baseline()
    print(end)
    sys.stdout.flush()
    return 0
