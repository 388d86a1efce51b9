"""The base checkpoint (docs/FORMAT.md "Retention", step 2): a checkpoint at the oldest kept
edge, rolled forward from the newest checkpoint before it (or the empty image) by the
forward increments in between. Only the chunks those increments touch are read, patched
and written; every other chunk is taken from the older checkpoint's list.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from connectors.store.base import ObjectStore
from schemas.checkpoint import DEFAULT_CHUNK_SIZE, Checkpoint, fetch_chunk, write_checkpoint
from schemas.image import Image
from schemas.increment import read_increment
from schemas.manifest import Manifest, get_verified


def empty_checkpoint(volume: str, size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Checkpoint:
    """The implicit all-zero checkpoint before a volume's first window (never stored)."""
    n = -(-size // chunk_size)
    return Checkpoint(
        volume=volume,
        offset=-1,
        volume_size=size,
        chunk_size=chunk_size,
        chunks=(None,) * n,
        chunk_sizes=(0,) * n,
        image_sha256="",
        created_us=0,
        window_digest="",
    )


def roll_forward(
    store: ObjectStore,
    start: Checkpoint,
    windows: Sequence[Manifest],
    target: Manifest,
    workdir: Path,
) -> Checkpoint:
    """Store the checkpoint after ``target`` (the last of ``windows``, the windows after
    ``start`` in order, each already checked to follow the one before) and return it."""
    size = target.volume_size
    cs = start.chunk_size
    same = start.volume_size == size
    loaded: set[int] = set()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        image = Image(Path(tmp) / "image", size)
        try:

            def load(i: int) -> None:
                """Chunk ``i`` of ``start`` into the image, once, before it is patched."""
                loaded.add(i)
                lo, hi = start.chunk_range(i) if i < len(start.chunks) else (size, size)
                if lo < size and start.chunks[i] is not None:
                    data = fetch_chunk(store, start.chunks[i] or "", hi - lo, start.chunk_names)
                    image.pwrite(lo, data[: max(0, min(hi, size) - lo)])

            if not same:  # a resized volume: nothing can be taken from the old list
                for i in range(len(start.chunks)):
                    load(i)
            for m in windows:
                data = get_verified(store, m.forward)
                for ext in read_increment(data, expect_direction="forward", name=m.forward.key):
                    for i in range(ext.offset // cs, (ext.end - 1) // cs + 1):
                        if i not in loaded:
                            load(i)
                    image.apply((ext,))
            return write_checkpoint(
                store,
                image,
                volume=target.volume,
                offset=target.last_offset,
                chunk_size=cs,
                previous=start if same else None,
                dirty=[(i * cs, min((i + 1) * cs, size)) for i in sorted(loaded)],
                window_digest=target.digest,
            )
        finally:
            image.close()
