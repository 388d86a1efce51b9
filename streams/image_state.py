"""The worker's image of a volume between runs: its state file and how it is brought up to
the store on resume (docs/FORMAT.md "Local state files").

The image is synced before its state file records an applied offset, so the state never
claims more than is on disk. On resume the image is trusted from that offset when the
offset is a stored window's end (or -1), else rebuilt from the newest checkpoint; the
forward increments of the windows after it are then applied, each window checked to follow
the one before it. Re-applying a forward increment over a partly applied one gives the same
image (it holds the final bytes of every range its window changed).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from connectors.errors import IntegrityError, VolumeError
from connectors.store.base import ObjectStore
from schemas.applied_state import AppliedState, load_state, save_state, state_path
from schemas.chain import Predecessor, check_link
from schemas.checkpoint import Checkpoint, check_pairing, materialize_checkpoint
from schemas.image import Image
from schemas.increment import read_increment
from schemas.manifest import Manifest, get_verified, load_manifest
from schemas.retention import Base

log = logging.getLogger("kcdp.volume")


def record_applied(image_path: Path, state: AppliedState) -> None:
    """Record what the (already synced) image holds; VolumeError if it cannot be written."""
    try:
        save_state(image_path, state)
    except OSError as exc:
        raise VolumeError(
            f"cannot record the applied offset of {image_path}: {exc.strerror}"
        ) from exc


def applied_offset(image_path: Path, volume: str) -> int | None:
    """The applied offset the image's state file records, or None (none, or unreadable:
    the image is then rebuilt from the store)."""
    try:
        state = load_state(image_path)
    except (OSError, IntegrityError) as exc:
        log.warning("volume %s: image state unusable, rebuilding: %s", volume, exc)
        return None
    if state is None or state.volume != volume or not state.complete:
        return None  # an image in the middle of an in-place move holds no one point
    return state.applied_offset


def fresh_image(image_path: Path, size: int) -> Image:
    """An all-zero image of ``size`` bytes at ``image_path``, its state file removed."""
    with contextlib.suppress(FileNotFoundError):
        state_path(image_path).unlink()
    with contextlib.suppress(FileNotFoundError):
        os.truncate(image_path, 0)
    return Image(image_path, size)


def catch_up(
    store: ObjectStore,
    volume: str,
    image_path: Path,
    size: int,
    windows: list[tuple[int, int, str]],
    checkpoint: Checkpoint | None,
    base: Base | None = None,
) -> tuple[Image, bool]:
    """The image brought to the newest of ``windows`` (the volume's effective windows,
    oldest first; after a prune they follow ``base``) and whether its state file must be
    rewritten (after a sync)."""
    applied = applied_offset(image_path, volume)
    lasts = [w[1] for w in windows]
    empty_ok = base is None and applied == -1
    if applied is not None and (empty_ok or applied in lasts) and image_path.exists():
        start = applied
        image = Image(image_path, size)
    else:
        log.info("volume %s: rebuilding the image from the store", volume)
        image = fresh_image(image_path, size)
        start = -1
        if checkpoint is None and base is not None:
            raise IntegrityError(
                f"volume {volume}: its history starts at the retention base {base.offset}, "
                "but no checkpoint is stored to rebuild the image from"
            )
        if checkpoint is not None:  # onto the fresh (all-zero, sparse) image
            materialize_checkpoint(store, checkpoint, image, fresh=True)
            start = checkpoint.offset
    at = next((k for _f, last, k in windows if last == start), None)
    prev: Predecessor = None if at is None else load_manifest(store, at)
    if base is not None and start == base.offset:
        prev = base.link
        cp = checkpoint
        if cp is not None and cp.offset == start and cp.digest != base.checkpoint_digest:
            raise IntegrityError(f"{cp.key}: is not the base checkpoint of {volume}")
    elif checkpoint is not None and start == checkpoint.offset:
        check_pairing(checkpoint, prev if isinstance(prev, Manifest) else None)
    todo = [w for w in windows if w[1] > start]
    for _first, _last, key in todo:
        m = load_manifest(store, key)
        check_link(prev, m)
        data = get_verified(store, m.forward)
        extents = list(read_increment(data, expect_direction="forward", name=m.forward.key))
        if m.volume_size != size:
            raise IntegrityError(f"{key}: volume size differs from the last manifest's")
        image.apply(extents)
        prev = m
    return image, bool(todo) or applied != (windows[-1][1] if windows else -1)
