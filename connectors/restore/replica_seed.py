"""Seeding a standby image from the store: the replica's way past an empty image or a
trimmed topic (docs/FORMAT.md "Local state files").

:func:`seed_image` materializes the newest restorable point of a volume into the image,
every object verified as a restore verifies it
(:func:`connectors.restore.materialize.restore_point`: a file through a temporary one
renamed over it, a block device in place, durable when it returns), and only then records
the point in the image's applied state. It runs only when the image has no state or the
topic no longer holds the offset after it; both stay true after a kill before the state is
written, so the next start seeds again and the image is never followed from a point it
does not hold.
"""

from __future__ import annotations

import logging
from pathlib import Path

from connectors.errors import GapError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.store.base import ObjectStore
from schemas.applied_state import AppliedState, save_state
from schemas.manifest import list_window_keys

log = logging.getLogger("kcdp.replica")


def seed_image(
    store: ObjectStore,
    *,
    volume: str,
    output: Path,
    topic: str,
    partition: int,
    after: int,
    needed: int | None = None,
) -> AppliedState | None:
    """Bring ``output`` to the newest stored point of ``volume`` when it is past ``after``
    (the image's applied offset); return its state, or None when the store holds no point
    past ``after`` (nothing is written then).

    ``needed``: the topic's oldest offset when it no longer holds ``after + 1``; the stored
    point must reach ``needed - 1`` or :class:`GapError` names the offsets neither holds.
    """
    if not list_window_keys(store, volume):
        newest = None
    else:
        catalog = Catalog(store, volume)
        newest = catalog.latest()
    if newest is None or newest <= after:
        if needed is None:
            return None
        have = "no point" if newest is None else f"its newest point {newest}"
        raise GapError(
            f"{topic}/{partition}: offsets {after + 1}..{needed - 1} were deleted from the "
            f"topic and the store holds {have} of {volume}; the replica cannot continue"
        )
    if needed is not None and newest < needed - 1:
        raise GapError(
            f"{topic}/{partition}: offsets {newest + 1}..{needed - 1} of {volume} are in "
            f"neither the store (newest point {newest}) nor the topic (from {needed})"
        )
    index = catalog.index_for(newest)
    assert index is not None  # latest() is the end of a stored window
    window = catalog.manifest(index)
    log.info("seeding replica %s of %s from the store at offset %d", output, volume, newest)
    restore_point(store, catalog, newest, output, progress=False)  # durable when it returns
    state = AppliedState(
        volume=volume,
        topic=topic,
        partition=partition,
        applied_offset=newest,
        session=window.session,
        sequence=window.last_sequence,
    )
    save_state(output, state)
    return state
