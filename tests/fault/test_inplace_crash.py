"""In-place moves under faults: a move SIGKILLed before a random range write leaves the
image's state incomplete (never looking complete), a run to another target is refused, and
the next run to the same target finishes it equal to the model — also when that run is
killed too; a tampered image (its state's point or volume changed) is refused before a
byte or its state is written; a damaged object read ahead fails the move at its step,
naming it, and the move finishes once the object is repaired."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from connectors.errors import IntegrityError, UsageError
from connectors.restore.catalog import Catalog
from connectors.restore.inplace import move_in_place
from connectors.restore.materialize import restore_point
from connectors.store import open_store
from connectors.store.base import ObjectStore
from schemas.applied_state import AppliedState, load_state, state_path
from tests.restore_history import POLICIES, History, random_history, write_store

ROOT = Path(__file__).resolve().parents[2]


def _stored(tmp_path: Path) -> tuple[str, ObjectStore, History, Catalog]:
    history = random_history(random.Random("inplace-crash"), events=220)
    url = f"file://{tmp_path / 'store'}"
    store = open_store(url)
    write_store(store, history, POLICIES["count7"], checkpoint_every=5)
    return url, store, history, Catalog(store, "va")


def _child(url: str, image: Path, target: int, at: int) -> bool:
    """Run the move in a child that kills itself before write ``at``; True if killed."""
    argv = [sys.executable, "-m", "tests.fault.inplace_child", url, "va", str(image)]
    done = subprocess.run([*argv, str(target), str(at)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"move failed ({done.returncode}): {done.stderr}")
    return done.returncode == -signal.SIGKILL


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_a_killed_move_is_finished_by_the_next_run_to_its_target(
    tmp_path: Path, direction: str
) -> None:
    url, store, history, catalog = _stored(tmp_path)
    w = catalog.windows
    far, near = (w[-1].last - 2, (w[3].first + w[3].last) // 2), (w[3].last, w[-2].first + 1)
    source, target = far if direction == "backward" else near
    want = history.image_at("va", target)
    image = tmp_path / "va.img"
    restore_point(store, catalog, source, image, progress=False)
    n = move_in_place(store, catalog, image, target).ranges_written  # writes of a whole move
    assert n >= 8, n
    rng = random.Random(direction)
    kills = 0
    for at in [1, 2, *sorted(rng.sample(range(3, n), 4)), n, n + 1]:
        restore_point(store, catalog, source, image, progress=False)
        if not _child(url, image, target, at):
            assert at == n + 1, f"the move finished before write {at} of {n}"
            assert image.read_bytes() == want
            break
        kills += 1
        state = load_state(image)
        assert state is not None and not state.complete, "a killed move looks complete"
        assert state.move is not None and (state.move.source, state.move.target) == (
            source,
            target,
        )
        with pytest.raises(UsageError, match="in the middle of a move"):
            move_in_place(store, catalog, image, target + 1)
        again: AppliedState | None = state
        if at % 2:  # the resuming run is killed too, once, then finished
            _child(url, image, target, max(1, at // 2))
            again = load_state(image)
            assert again is not None and (again.complete or again.move == state.move)
        moved = move_in_place(store, catalog, image, target)
        assert again is not None and moved.resumed != again.complete
        assert image.read_bytes() == want, f"killed before write {at}"
        done = load_state(image)
        assert done is not None and done.complete and done.applied_offset == target
    assert kills == 7


def test_a_tampered_image_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    _, store, history, catalog = _stored(tmp_path)
    w = catalog.windows
    image = tmp_path / "va.img"
    restore_point(store, catalog, w[8].last, image, progress=False)
    sidecar = state_path(image)
    doc = orjson.loads(sidecar.read_bytes())
    for claimed, target in [
        (w[6].last, w[2].last),  # another edge, rolled back from
        (w[6].last, w[9].last),  # another edge, rolled forward from
        ((w[5].first + w[5].last) // 2, w[2].last),  # inside another window
        ((w[5].first + w[5].last) // 2, (w[5].first + w[5].last) // 2 + 1),
    ]:
        assert history.image_at("va", claimed) != history.image_at("va", w[8].last)
        sidecar.write_bytes(orjson.dumps({**doc, "applied_offset": claimed}))
        before = image.read_bytes(), sidecar.read_bytes()
        with pytest.raises(IntegrityError, match="it is not at the point its applied state"):
            move_in_place(store, catalog, image, target)
        assert (image.read_bytes(), sidecar.read_bytes()) == before, (claimed, target)
    sidecar.write_bytes(orjson.dumps({**doc, "volume": "vb"}))
    with pytest.raises(UsageError, match="belongs to volume 'vb', not 'va'"):
        move_in_place(store, catalog, image, w[2].last)
    sidecar.write_bytes(orjson.dumps({**doc, "partition": 3}))
    with pytest.raises(UsageError, match=r"follows kcdp\.writes/3"):
        move_in_place(store, catalog, image, w[2].last)
    sidecar.write_bytes(orjson.dumps({**doc, "complete": False}))
    with pytest.raises(IntegrityError, match="disagrees"):
        move_in_place(store, catalog, image, w[2].last)
    sidecar.unlink()
    with pytest.raises(UsageError, match="has no applied state"):
        move_in_place(store, catalog, image, w[2].last)


def test_an_image_with_a_version_1_state_moves(tmp_path: Path) -> None:
    """A standby written before version 2 (no ``complete``, no ``move``) reads as complete."""
    _, store, history, catalog = _stored(tmp_path)
    w = catalog.windows
    image = tmp_path / "old.img"
    image.write_bytes(history.image_at("va", w[7].last))
    v1 = {"format": "kcdp-replica", "version": 1, "volume": "va", "topic": "kcdp.writes"}
    v1 |= {"partition": 0, "applied_offset": w[7].last, "session": "", "sequence": -1}
    state_path(image).write_bytes(orjson.dumps(v1))
    target = (w[3].first + w[3].last) // 2
    move_in_place(store, catalog, image, target)
    assert image.read_bytes() == history.image_at("va", target)
    doc = orjson.loads(state_path(image).read_bytes())
    assert doc["version"] == 2 and doc["complete"] is True and doc["applied_offset"] == target


def test_a_damaged_object_read_ahead_fails_the_move_at_its_step_naming_it(
    tmp_path: Path,
) -> None:
    _, store, history, catalog = _stored(tmp_path)
    w = catalog.windows
    image = tmp_path / "va.img"
    restore_point(store, catalog, w[-1].last, image, progress=False)
    target = w[-8].last
    ref = catalog.manifest(len(w) - 4).backward  # a rollback in the middle of the move
    good = store.get(ref.key)
    store.put(ref.key, good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(IntegrityError, match=re.escape(ref.key)):
        move_in_place(store, catalog, image, target)
    state = load_state(image)
    assert state is not None and not state.complete  # the rollbacks before it were written
    store.put(ref.key, good)
    move_in_place(store, catalog, image, target)
    assert image.read_bytes() == history.image_at("va", target)
