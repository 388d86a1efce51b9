"""Seeding a standby image from the store (connectors/restore/replica_seed.py): the path a
replica takes when the topic no longer holds the offset after its image's point."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from connectors.errors import GapError
from connectors.restore.catalog import Catalog
from connectors.restore.replica_seed import seed_image
from connectors.store import MemoryStore
from schemas.applied_state import load_state
from tests.restore_history import POLICIES, History, random_history, write_store


@pytest.fixture(scope="module")
def stored() -> tuple[History, MemoryStore, int]:
    history = random_history(random.Random("seed"), events=160, group="g")
    store = MemoryStore()
    write_store(store, history, POLICIES["count7"], topic="t", partition=2)
    return history, store, Catalog(store, "va").latest()


def test_a_trimmed_topic_continues_from_the_stores_newest_point(
    stored: tuple[History, MemoryStore, int], tmp_path: Path
) -> None:
    history, store, newest = stored
    out = tmp_path / "va.img"
    out.write_bytes(history.image_at("va", 10))  # an old standby, at offset 10
    state = seed_image(
        store, volume="va", output=out, topic="t", partition=2, after=10, needed=newest + 1
    )
    assert state is not None and state.applied_offset == newest
    assert out.read_bytes() == history.image_at("va", newest)
    assert load_state(out) == state
    last = [e for o, e in history.of("va") if o <= newest][-1]
    assert (state.session, state.sequence) == (last.session, last.sequence)


def test_offsets_in_neither_the_store_nor_the_topic_are_a_gap(
    stored: tuple[History, MemoryStore, int], tmp_path: Path
) -> None:
    _, store, newest = stored
    out = tmp_path / "va.img"
    with pytest.raises(GapError, match=rf"offsets {newest + 1}\.\.{newest + 4} of va"):
        seed_image(
            store, volume="va", output=out, topic="t", partition=2, after=3, needed=newest + 5
        )
    with pytest.raises(GapError, match="holds no point of vq"):
        seed_image(store, volume="vq", output=out, topic="t", partition=2, after=-1, needed=9)
    assert not out.exists() and load_state(out) is None  # nothing written


def test_nothing_newer_in_the_store_leaves_the_image_alone(
    stored: tuple[History, MemoryStore, int], tmp_path: Path
) -> None:
    _, store, newest = stored
    out = tmp_path / "va.img"
    out.write_bytes(b"untouched")
    assert seed_image(store, volume="va", output=out, topic="t", partition=2, after=newest) is None
    assert seed_image(store, volume="vq", output=out, topic="t", partition=2, after=-1) is None
    assert out.read_bytes() == b"untouched" and load_state(out) is None
