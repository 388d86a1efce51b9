"""``kcdp demo``: the main job on the embedded default (see connectors.demo.story)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connectors.config import Settings
from connectors.demo.story import DemoOptions, run_demo

MiB = 1024 * 1024


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        parents=list(parents),
        help="protect, write, restore and prove a volume on the embedded default",
        description="Start an embedded Kafka (Tansu), a worker and an NBD intercept with "
        "ext4 on it; write files and a sqlite3 database; restore three points (by offset, "
        "timestamp and bookmark) and prove each one. Exit 0 only if every point is proven.",
    )
    p.add_argument(
        "--workdir", default="demo-output", help="output directory (default ./demo-output)"
    )
    p.add_argument("--size-mib", type=int, default=64, help="volume size in MiB (default 64)")
    p.add_argument("--window-seconds", type=float, default=1.0, help="window period (default 1)")
    p.add_argument("--scale", type=float, default=1.0, help="scale of the files written")
    p.add_argument(
        "--mode",
        choices=("auto", "filesystem", "api"),
        default="auto",
        help="filesystem: ext4 over NBD; api: the Python API; auto: filesystem when possible",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    del settings  # the demo runs on its own embedded broker and directory store
    opts = DemoOptions(
        workdir=Path(args.workdir),
        size=args.size_mib * MiB,
        window_seconds=args.window_seconds,
        scale=args.scale,
        mode=args.mode,
    )
    return run_demo(opts)
