"""``kcdp restore``, ``kcdp verify`` and ``kcdp replica`` (``kcdp points``: its own module).

* ``restore VOLUME (--to-offset N | --to-timestamp T | --to-bookmark NAME | --latest) -o PATH``
  materializes a point from the store (``--group G`` restores every volume of a group at
  one offset into ``PATH/<volume>.img``); ``--dry-run`` prints the plan and writes nothing.
  ``--in-place IMAGE`` instead of ``-o`` moves a replica or an earlier restore output from
  the point it records to N (:mod:`connectors.restore.inplace`) when that reads less.
* ``verify VOLUME [--read-data]`` scrubs manifests, objects and the chain (exit 6 on
  corruption, 7 on a broken chain or missing object).
* ``replica VOLUME -o PATH [--follow] [--until-offset N]`` keeps a standby image from the topic.

Results go to stdout (``--json`` for scripts); progress bars to stderr on a terminal only.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from connectors.cli.target import add_target, target_offset
from connectors.config import Settings
from connectors.errors import GapError, IntegrityError, NotRestorableError, UsageError
from connectors.kafka import connect_admin
from connectors.restore.catalog import Catalog, group_volumes
from connectors.restore.inplace import image_state, move_in_place
from connectors.restore.inplace_plan import choose
from connectors.restore.kafka_source import KafkaReplay
from connectors.restore.materialize import restore_point
from connectors.restore.partitioner import group_partition
from connectors.restore.plan import DIRECTIONS
from connectors.restore.planner import plan_restore
from connectors.restore.replica import Replica
from connectors.restore.verify import verify_volume
from connectors.store import open_store
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.codec import AvroCodec


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    _register_restore(sub, parents)
    v = sub.add_parser(
        "verify",
        parents=list(parents),
        help="scrub a volume's manifests, objects and window chain",
        description="Check every manifest, the window chain and every object's size; with "
        "--read-data also download each object and checkpoint chunk and check digests and "
        "CRCs. Exit 0 when clean, 6 on corruption, 7 on a missing object or broken chain.",
    )
    v.add_argument("volume")
    v.add_argument("--read-data", action="store_true", help="download and check every object")
    v.add_argument("--workers", type=int, default=4, help="parallel downloads (default 4)")
    v.add_argument("--json", action="store_true", help="print JSON")
    v.set_defaults(func=cmd_verify)
    r = sub.add_parser(
        "replica",
        parents=list(parents),
        help="keep a standby image of a volume current from the topic",
        description="Apply the volume's events from the topic to PATH in coalesced, sorted "
        "batches; the applied offset is stored in PATH.kcdp-replica.json, and a restart "
        "resumes after it. Without --follow, stop at the end of the partition. An empty "
        "image, or one the topic can no longer continue (retention), is first seeded from "
        "the store's newest point (--no-seed: never).",
    )
    r.add_argument("volume")
    r.add_argument("-o", "--output", required=True, help="image file or block device")
    r.add_argument("--group", help="consistency group (default: the volume name)")
    r.add_argument("--partition", type=int, help="partition (default: murmur2 of the group)")
    r.add_argument("--follow", action="store_true", help="keep following until SIGINT/SIGTERM")
    r.add_argument("--until-offset", type=int, help="stop after applying offset N")
    r.add_argument(
        "--no-seed",
        action="store_true",
        help="never read the store: by default an image without a state, or one whose next "
        "offset the topic no longer holds, is first brought to the store's newest point",
    )
    r.add_argument("--json", action="store_true", help="print the final state as JSON")
    r.set_defaults(func=cmd_replica)


def _register_restore(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "restore",
        parents=list(parents),
        help="materialize a volume (or a group) at an offset, time or bookmark",
        description="Restore point N: the volume after every one of its events with offset "
        "<= N. Rolls forward from a checkpoint or back from a later one, whichever reads "
        "fewer bytes, then replays single writes (from Kafka while retained, else from the "
        "archived write log). Every object is verified; corruption fails naming the object.",
    )
    p.add_argument("volume", nargs="?", help="volume name (omit with --group)")
    p.add_argument("--group", help="restore every volume of this consistency group into -o DIR")
    add_target(p)
    p.add_argument("-o", "--output", help="output file, block device, or DIR")
    p.add_argument(
        "--in-place",
        metavar="IMAGE",
        help="instead of -o: move IMAGE (a kcdp replica or restore output, at the point its "
        "IMAGE.kcdp-replica.json records) to the point with the increments in between, "
        "when that reads fewer bytes than a full restore into it",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--direction", choices=DIRECTIONS, default="auto", help="default auto")
    p.add_argument(
        "--replay-from",
        choices=("auto", "kafka", "log"),
        default="auto",
        help="single writes from Kafka while retained (auto), only Kafka, or only the "
        "archived write log (default auto)",
    )
    p.add_argument("--workers", type=int, default=4, help="parallel downloads (default 4)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_restore)


def _kafka(args: argparse.Namespace, settings: Settings, catalog: Catalog) -> KafkaReplay | None:
    if args.replay_from == "log" or not len(catalog):
        return None
    m = catalog.manifest(len(catalog) - 1)
    return KafkaReplay(
        kafka_conf=settings.kafka_config(),
        topic=m.topic,
        partition=m.partition,
        codec=_codec(settings, m.topic),
        timeout=3.0 if args.replay_from == "auto" else 15.0,
        quiet=args.replay_from == "auto",
    )


def _codec(settings: Settings, topic: str) -> AvroCodec:
    """The event codec: single-object Avro, or the Confluent format with a registry."""
    return AvroCodec(registry_url=settings.schema_registry or None, subject=f"{topic}-value")


def _emit(args: argparse.Namespace, doc: Any, text: str) -> None:
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(text + "\n")


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    if (args.volume is None) == (args.group is None):
        raise UsageError("restore needs a VOLUME or --group G (not both)")
    if (args.output is None) == (args.in_place is None):
        raise UsageError("restore needs -o PATH or --in-place IMAGE (not both)")
    if args.group and args.in_place:
        raise UsageError("--in-place moves one volume's image; it does not take --group")
    store = open_store(settings.store_url, key_file=settings.key_file, keys_now=True)
    try:
        if args.group:
            return _restore_group(args, settings, store)
        catalog = Catalog(store, args.volume, workers=args.workers)
        offset = target_offset(args, [catalog])
        if args.in_place:
            return _restore_in_place(args, settings, store, catalog, offset)
        if args.dry_run:
            tail = args.replay_from != "log"
            plan = plan_restore(catalog, offset, direction=args.direction, tail=tail)
            _emit(args, {**plan.to_dict(), "dry_run": True}, plan.to_text() + "\n(dry run)")
            return 0
        result = restore_point(
            store,
            catalog,
            offset,
            Path(args.output),
            direction=args.direction,
            workers=args.workers,
            kafka=_kafka(args, settings, catalog),
        )
        text = (
            f"{result.plan.to_text()}\nrestored {args.volume}@{offset} to {args.output} "
            f"in {result.seconds:.2f} s (single writes from {result.replay_source})"
        )
        _emit(args, result.to_dict(), text)
        return 0
    finally:
        store.close()


def _restore_in_place(
    args: argparse.Namespace, settings: Settings, store: ObjectStore, catalog: Catalog, offset: int
) -> int:
    """Move the image in place, or restore it in full when that reads fewer bytes."""
    image = Path(args.in_place)
    state = image_state(image, catalog)
    tail = args.replay_from != "log"
    choice = choose(catalog, state, offset, direction=args.direction, tail=tail)
    if args.dry_run:
        doc = {**choice.to_dict(), "image": str(image), "dry_run": True}
        _emit(args, doc, choice.to_text() + "\n(dry run)")
        return 0
    if choice.chosen == "in-place":
        moved = move_in_place(store, catalog, image, offset, plan=choice.move)
        how = "resumed an interrupted move, " if moved.resumed else ""
        text = (
            f"{choice.to_text()}\nmoved {image} in place from {moved.plan.source} to {offset} "
            f"in {moved.seconds:.2f} s ({how}{moved.ranges_written} ranges, "
            f"{moved.bytes_written} bytes rewritten)"
        )
        done = {k: v for k, v in moved.to_dict().items() if k != "move"}
        _emit(args, {**choice.to_dict(), "image": str(image), **done}, text)
        return 0
    result = restore_point(
        store,
        catalog,
        offset,
        image,
        direction=args.direction,
        workers=args.workers,
        kafka=_kafka(args, settings, catalog),
    )
    text = (
        f"{choice.to_text()}\nrestored {args.volume}@{offset} to {image} in full in "
        f"{result.seconds:.2f} s (fewer bytes than in place)"
    )
    done = {"output": str(image), "replay_source": result.replay_source}
    _emit(args, {**choice.to_dict(), "image": str(image), **done}, text)
    return 0


def _restore_group(args: argparse.Namespace, settings: Settings, store: ObjectStore) -> int:
    group = keys.check_name(args.group, "group")
    volumes = group_volumes(store, group)
    catalogs = [Catalog(store, v, workers=args.workers) for v in volumes]
    offset = target_offset(args, catalogs)
    out_dir = Path(args.output)
    plans = [plan_restore(c, offset, direction=args.direction) for c in catalogs]
    if args.dry_run:
        doc = {"group": group, "offset": offset, "dry_run": True, "volumes": []}
        doc["volumes"] = [p.to_dict() for p in plans]
        _emit(args, doc, "\n".join(p.to_text() for p in plans) + "\n(dry run)")
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [
        restore_point(
            store,
            c,
            offset,
            out_dir / f"{c.volume}.img",
            direction=args.direction,
            workers=args.workers,
            kafka=_kafka(args, settings, c),
        )
        for c in catalogs
    ]
    doc = {"group": group, "offset": offset, "volumes": [r.to_dict() for r in results]}
    text = "\n".join(f"restored {r.plan.volume}@{offset} to {r.output}" for r in results)
    _emit(args, doc, text)
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings.store_url, key_file=settings.key_file, keys_now=True)
    try:
        report = verify_volume(store, args.volume, read_data=args.read_data, workers=args.workers)
    finally:
        store.close()
    if not report.windows and not report.checkpoints and not report.problems:
        raise NotRestorableError(f"volume {args.volume} has nothing in {settings.store_url}")
    _emit(args, report.to_dict(), report.to_text())
    if any(p.kind == "integrity" for p in report.problems):
        return IntegrityError.exit_code
    return GapError.exit_code if report.problems else 0


def cmd_replica(args: argparse.Namespace, settings: Settings) -> int:
    volume = keys.check_name(args.volume)
    group = keys.check_name(args.group or volume, "group")
    conf = settings.kafka_config()
    connect_admin(conf)  # refused credentials or certificate: fail now, exit 5
    partition = args.partition
    if partition is None:
        partition = group_partition(conf, settings.topic, group)
    codec = _codec(settings, settings.topic)
    replica = Replica(
        volume=volume,
        output=args.output,
        partition=partition,
        kafka_conf=conf,
        topic=settings.topic,
        codec=codec,
        store=None
        if args.no_seed
        else open_store(settings.store_url, key_file=settings.key_file, keys_now=True),
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        state = replica.run(follow=args.follow, until_offset=args.until_offset, stop=stop)
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    doc = orjson.loads(state.to_json())
    _emit(args, doc, f"replica {volume} at offset {state.applied_offset} in {args.output}")
    return 0
