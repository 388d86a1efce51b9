"""``kcdp points VOLUME [--image IMAGE] [--json]``: a volume's restore points.

Windows (offsets, times, tier, consistency), bookmarks, checkpoints, gaps and the oldest and
newest point. With ``--image`` (a ``kcdp replica`` standby or an earlier restore output,
checked as ``kcdp restore --in-place`` checks it), each window's end also shows how that
image would be brought there: the path ``restore --in-place`` would take and the bytes it
reads, next to a full restore's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from connectors.config import Settings
from connectors.errors import KcdpError
from connectors.restore.catalog import Catalog
from connectors.restore.inplace import image_state
from connectors.restore.inplace_plan import choose
from connectors.restore.verify import list_points
from connectors.store import open_store
from schemas.applied_state import AppliedState

MiB = 1 << 20


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "points",
        parents=list(parents),
        help="list a volume's restore points",
        description="Windows (offsets, times, consistency), bookmarks, checkpoints and gaps "
        "of a volume, and its oldest and newest restorable point. With --image, how that "
        "image would reach each window's end: in place or by a full restore, and the bytes "
        "each reads.",
    )
    p.add_argument("volume")
    p.add_argument(
        "--image",
        metavar="IMAGE",
        help="a kcdp replica or restore output: price moving it to each window's end",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_points)


def cmd_points(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings.store_url, key_file=settings.key_file, keys_now=True)
    try:
        catalog = Catalog(store, args.volume)
        catalog.require_windows()
        doc = list_points(catalog)
        if args.image:
            state = image_state(args.image, catalog)
            doc["image"] = {
                "path": args.image,
                "point": state.applied_offset,
                "complete": state.complete,
            }
            for w in doc["windows"]:
                w["reach"] = _reach(catalog, state, w["last_offset"])
    finally:
        store.close()
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(points_text(doc) + "\n")
    return 0


def _reach(catalog: Catalog, state: AppliedState, offset: int) -> dict[str, Any]:
    """How the image reaches ``offset``: the path taken, its bytes, and both paths' bytes
    (None: refused, with the reason)."""
    try:
        choice = choose(catalog, state, offset)
    except KcdpError as exc:
        return {"chosen": None, "refused": exc.message}
    return {
        "chosen": choice.chosen,
        "bytes": choice.bytes,
        "in_place_bytes": None if choice.move is None else choice.move.bytes,
        "full_bytes": None if choice.full is None else choice.full.path.bytes,
        "refused": dict(choice.refused),
    }


def points_text(doc: dict[str, Any]) -> str:
    """The text form of :func:`cmd_points`' document."""
    lines = [f"volume {doc['volume']}: oldest point {doc['oldest']}, newest {doc['newest']}"]
    if doc["oldest_by_tier"]:
        tiers = ", ".join(f"{t} {o}" for t, o in doc["oldest_by_tier"].items())
        lines.append(f"  oldest point by tier: {tiers}")
    if doc["base"] is not None:
        lines.append(f"  base       @{doc['base']} (older history pruned)")
    image = doc.get("image")
    if image is not None:
        where = "" if image["complete"] else " (in the middle of a move)"
        lines.append(f"  image      {image['path']} at point {image['point']}{where}")
    for w in doc["windows"]:
        restorable = (
            f"restorable from {w['restorable_from']}"
            if w["tier"] != "consolidated"
            else f"{w['windows']} windows consolidated: only its end is a point"
        )
        lines.append(
            f"  {w['tier']:<12} {w['first_offset']}-{w['last_offset']}  "
            f"{_iso(w['first_time_us'])} .. {_iso(w['last_time_us'])}  {restorable}"
            + ("" if w["consistent"] else "  (end inconsistent)")
            + ("" if "reach" not in w else f"  [{_reach_text(w['reach'])}]")
        )
    lines += [
        f"  bookmark   {b['name']} @{b['offset']}  {_iso(b['time_us'])}" for b in doc["bookmarks"]
    ]
    lines += [f"  checkpoint @{c}" for c in doc["checkpoints"]]
    lines += [f"  gap        {g['kind']} at {g['at_offset']}: {g['detail']}" for g in doc["gaps"]]
    return "\n".join(lines)


def _reach_text(reach: dict[str, Any]) -> str:
    if reach["chosen"] is None:
        return f"image: refused ({reach['refused']})"
    parts = []
    for name, key in (("in place", "in_place_bytes"), ("full", "full_bytes")):
        if reach[key] is not None:
            mark = "*" if reach["chosen"] == name.replace(" ", "-") else ""
            parts.append(f"{mark}{name} {reach[key] / MiB:.1f} MiB")
    return "image: " + ", ".join(parts)


def _iso(time_us: int) -> str:
    when = dt.datetime.fromtimestamp(time_us / 1e6, tz=dt.UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")
