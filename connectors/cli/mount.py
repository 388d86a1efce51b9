"""``kcdp mount`` and ``kcdp umount``: a restore point's filesystem, read-only, from the store.

``mount VOLUME (--to-offset N | --to-timestamp T | --to-bookmark NAME | --latest) DIR``
exports the point (as ``kcdp export`` does, on a private socket), maps it with nbdfuse and
a read-only loop device and mounts it on DIR (``-o ro,noload`` for ext3/ext4); it stays
in the foreground until SIGINT/SIGTERM or ``kcdp umount DIR``, then tears everything
down. A mount or umount of DIR first cleans what a killed mount of DIR left.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from connectors.cli.export import resolve_point
from connectors.cli.target import add_target
from connectors.config import Settings
from connectors.errors import NotRestorableError
from connectors.restore.export_server import DEFAULT_CACHE_MIB
from connectors.restore.mount import PointMount, unmount


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    m = sub.add_parser(
        "mount",
        parents=list(parents),
        help="mount a restore point's filesystem read-only, served from the store",
        description="Export point N (as kcdp export), map it with nbdfuse and a read-only "
        "loop device, and mount it on DIR read-only (ext4: -o ro,noload). Stays in the "
        "foreground; Ctrl-C, SIGTERM or `kcdp umount DIR` unmounts and stops everything.",
    )
    m.add_argument("volume")
    add_target(m)
    m.add_argument("directory", metavar="DIR", help="mount point (an existing directory)")
    m.add_argument("--fstype", default="ext4", help="filesystem type (default ext4)")
    m.add_argument(
        "--cache-mib",
        type=int,
        default=DEFAULT_CACHE_MIB,
        help=f"bound of the object cache in MiB (default {DEFAULT_CACHE_MIB})",
    )
    m.set_defaults(func=cmd_mount)
    u = sub.add_parser(
        "umount",
        parents=list(parents),
        help="unmount what `kcdp mount` mounted on DIR (also after a killed mount)",
    )
    u.add_argument("directory", metavar="DIR")
    u.set_defaults(func=cmd_umount)


def cmd_mount(args: argparse.Namespace, settings: Settings) -> int:
    volume, offset, _plan = resolve_point(args, settings)
    mount = PointMount(
        settings.state_path,
        args.directory,
        fstype=args.fstype,
        store_url=settings.store_url,
        volume=volume,
        offset=offset,
        key_file=settings.key_file,
        cache_mib=args.cache_mib,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        mount.start()
        sys.stdout.write(f"mounted {volume}@{offset} read-only on {mount.directory}\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            server = mount.server
            if server is None or server.proc is None or server.proc.poll() is not None:
                break
    finally:
        mount.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def cmd_umount(args: argparse.Namespace, settings: Settings) -> int:
    if not unmount(settings.state_path, args.directory):
        raise NotRestorableError(f"kcdp mount has nothing recorded on {args.directory}")
    sys.stdout.write(f"unmounted {args.directory}\n")
    return 0
