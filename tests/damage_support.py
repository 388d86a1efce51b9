"""Damaging one stored object the ways a store goes bad: deleted, truncated, a byte flipped."""

from __future__ import annotations

import random

from connectors.store.base import ObjectStore

#: what :func:`damage_object` does
DAMAGES = ("delete", "truncate", "flip")


def damage_object(store: ObjectStore, key: str, kind: str, rng: random.Random) -> None:
    """Delete ``key``, cut it short at a random length, or flip bits of one random byte."""
    data = store.get(key)
    if kind == "delete":
        store.delete(key)
    elif kind == "truncate":
        store.put(key, data[: rng.randrange(len(data))])
    elif kind == "flip":
        flipped = bytearray(data)
        flipped[rng.randrange(len(data))] ^= rng.randrange(1, 256)
        store.put(key, bytes(flipped))
    else:
        raise ValueError(f"unknown damage {kind!r}")
