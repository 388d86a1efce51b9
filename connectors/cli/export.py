"""``kcdp export``: serve a restore point over NBD straight from the store.

``export VOLUME (--to-offset N | --to-timestamp T | --to-bookmark NAME | --latest)
[--port P | --unix SOCKET] [--writable [--overlay FILE]] [--cache-mib M]`` plans the
point as ``kcdp restore`` would (a point that is not restorable fails at once, exit 8),
starts nbdkit with :mod:`connectors.restore.export_plugin` (with ``--to-offset``, while
the point is being planned: the plugin's start-up overlaps the planning), prints the NBD
URI on stdout once nbdkit serves and serves until SIGINT/SIGTERM, which stop nbdkit.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import orjson

from connectors.cli.target import add_target, target_offset
from connectors.config import Settings
from connectors.errors import UsageError
from connectors.restore.export_server import DEFAULT_CACHE_MIB, ExportServer
from schemas import keys

if TYPE_CHECKING:
    from connectors.restore.plan import Plan

#: seconds the plugin has to open the point (read manifests and increments)
START_TIMEOUT = 600.0


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        parents=list(parents),
        help="serve a restore point over NBD from the store, without restoring it",
        description="Export point N of a volume over NBD (nbdkit): each read is served from "
        "the checkpoint chunks, increments and write log the restore of N would use, "
        "fetched on demand, verified, and cached. Read-only unless --writable, which keeps "
        "writes in a local copy-on-write overlay; the store is never written.",
    )
    p.add_argument("volume")
    add_target(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, help="serve on TCP 127.0.0.1:PORT")
    where.add_argument("--unix", help="serve on this unix socket (default: a private one)")
    p.add_argument("--writable", action="store_true", help="accept writes into an overlay")
    p.add_argument(
        "--overlay", help="overlay file for --writable (default: a temporary one, removed)"
    )
    p.add_argument(
        "--cache-mib",
        type=int,
        default=DEFAULT_CACHE_MIB,
        help=f"bound of the object cache in MiB (default {DEFAULT_CACHE_MIB})",
    )
    p.add_argument("--json", action="store_true", help="print the export as JSON")
    p.set_defaults(func=cmd_export)


def resolve_point(args: argparse.Namespace, settings: Settings) -> tuple[str, int, Plan]:
    """(volume, offset, plan) the target flags name; a point not restorable fails now
    (exit 8), before the export serves."""
    from connectors.restore.catalog import Catalog
    from connectors.restore.export import plan_export
    from connectors.store import open_store

    volume = keys.check_name(args.volume)
    if args.cache_mib < 0:
        raise UsageError("--cache-mib must be >= 0")
    store = open_store(settings.store_url, key_file=settings.key_file, keys_now=True)
    try:
        catalog = Catalog(store, volume)
        offset = target_offset(args, [catalog])
        return volume, offset, plan_export(catalog, offset)
    finally:
        store.close()


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    if args.overlay and not args.writable:
        raise UsageError("--overlay needs --writable")
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError("--port must be 1..65535")
    if args.cache_mib < 0:
        raise UsageError("--cache-mib must be >= 0")
    servers: list[ExportServer] = []

    def launch(volume: str, offset: int) -> ExportServer:
        server = ExportServer(
            store_url=settings.store_url,
            volume=volume,
            offset=offset,
            key_file=settings.key_file,
            cache_mib=args.cache_mib,
            writable=args.writable,
            overlay=args.overlay,
            port=args.port,
            unix=args.unix,
        )
        servers.append(server)
        server.launch()
        return server

    def on_signal(signum: int, frame: FrameType | None) -> None:
        for server in servers:
            server.terminate()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if args.to_offset is not None and args.to_offset >= 0:  # nbdkit starts while we plan
            launch(keys.check_name(args.volume), args.to_offset)
        volume, offset, plan = resolve_point(args, settings)
        server = servers[0] if servers else launch(volume, offset)
        uri = server.wait_ready(timeout=START_TIMEOUT)
        doc = {
            "volume": volume,
            "offset": offset,
            "volume_size": plan.volume_size,
            "direction": server.direction,
            "writable": bool(args.writable),
            "uri": uri,
        }
        if args.json:
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        else:
            mode = "read-write (overlay)" if args.writable else "read-only"
            sys.stdout.write(f"exporting {volume}@{offset} {mode} at {uri}\n")
        sys.stdout.flush()
        relay = server.relay_log(sys.stderr)
        server.wait()
        relay.join(5.0)
    finally:
        for server in servers:
            server.cleanup()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
