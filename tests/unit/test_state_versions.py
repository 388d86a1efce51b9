"""Local state files check their version on read (docs/FORMAT.md "Local state files"): one
of another version is refused with its file, the version found and the one this code reads
named, and is left as it is; a damaged intercept state is ignored with a warning naming the
file (the next open does not resume)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import cast

import orjson
import pytest

from connectors.errors import IntegrityError, VolumeError
from connectors.intercept.publisher import Publisher
from connectors.intercept.session import Session
from connectors.intercept.state import InterceptState, load_state, save_state, state_path
from schemas.applied_state import AppliedState, Move
from schemas.applied_state import load_state as load_applied
from schemas.applied_state import save_state as save_applied
from schemas.applied_state import state_path as applied_path
from schemas.codec import AvroCodec
from streams.image_state import applied_offset

CLEAN = InterceptState("v", "g", "a" * 32, 7, clean=True, volume_size=4096)


def _rewrite(path: Path, **changes: object) -> bytes:
    doc = orjson.loads(path.read_bytes())
    doc.update(changes)
    path.write_bytes(orjson.dumps(doc))
    return path.read_bytes()


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_an_intercept_state_of_another_version_is_refused(tmp_path: Path, version: object) -> None:
    backing = tmp_path / "vol.img"
    save_state(backing, CLEAN)
    _rewrite(state_path(backing), version=version)
    with pytest.raises(VolumeError) as caught:
        load_state(backing)
    message = caught.value.message
    assert str(state_path(backing)) in message
    assert f"version {version!r}" in message and "reads version 1" in message


def test_opening_a_session_over_a_newer_state_leaves_the_file_as_it_is(tmp_path: Path) -> None:
    backing = tmp_path / "vol.img"
    save_state(backing, CLEAN)
    newer = _rewrite(state_path(backing), version=2)
    session = Session(
        backing,
        volume="v",
        group="g",
        size=4096,
        host="h",
        lock=threading.Lock(),
        publisher=cast(Publisher, object()),  # refused before anything is published
        codec=AvroCodec(),
        sync=True,
    )
    with pytest.raises(VolumeError, match="intercept state version 2"):
        session.begin(created=False, policy="auto", new_copy=lambda: pytest.fail("no copy"))
    assert state_path(backing).read_bytes() == newer


@pytest.mark.parametrize(
    "damage",
    [
        b"{not json",
        b"[1, 2]",
        b'{"format": "something-else", "version": 1}',
        b'{"format": "kcdp-intercept-state", "version": 1, "volume": "v"}',
    ],
)
def test_a_damaged_intercept_state_is_ignored_with_a_warning(
    tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    backing = tmp_path / "vol.img"
    state_path(backing).write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="kcdp.intercept"):
        assert load_state(backing) is None
    assert str(state_path(backing)) in caplog.text and "needs a baseline" in caplog.text


def test_a_missing_intercept_state_is_no_state_and_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="kcdp.intercept"):
        assert load_state(tmp_path / "vol.img") is None
    assert caplog.text == ""
    save_state(tmp_path / "vol.img", CLEAN)
    assert load_state(tmp_path / "vol.img") == CLEAN


@pytest.mark.parametrize("version", [3, 0, None])
def test_an_applied_state_of_another_version_is_refused(tmp_path: Path, version: object) -> None:
    image = tmp_path / "r.img"
    save_applied(image, AppliedState("v", "kcdp.writes", 0, applied_offset=3, session="s"))
    _rewrite(applied_path(image), version=version)
    with pytest.raises(IntegrityError) as caught:
        load_applied(image)
    message = caught.value.message
    assert str(applied_path(image)) in message
    assert f"version {version!r}" in message and "reads versions 1, 2" in message


def test_an_applied_state_with_a_field_missing_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "r.img"
    applied_path(image).write_bytes(b'{"format": "kcdp-replica", "version": 1, "volume": "v"}')
    with pytest.raises(IntegrityError, match=r"r\.img\.kcdp-replica\.json is unreadable"):
        load_applied(image)


def test_a_version_1_applied_state_reads_as_complete(tmp_path: Path) -> None:
    image = tmp_path / "old.img"
    applied_path(image).write_bytes(
        b'{"format":"kcdp-replica","version":1,"volume":"v","topic":"kcdp.writes",'
        b'"partition":0,"applied_offset":12,"session":"s","sequence":4}'
    )
    state = load_applied(image)
    assert state == AppliedState("v", "kcdp.writes", 0, 12, "s", 4)
    assert state.complete and state.move is None
    save_applied(image, state)  # rewritten as version 2, same state
    doc = orjson.loads(applied_path(image).read_bytes())
    assert doc["version"] == 2 and doc["complete"] is True and doc["move"] is None
    assert load_applied(image) == state


def test_an_applied_state_with_a_move_round_trips_and_must_agree(tmp_path: Path) -> None:
    image = tmp_path / "m.img"
    moving = AppliedState("v", "t", 1, 30, move=Move(30, 7, "ab" * 32))
    save_applied(image, moving)
    loaded = load_applied(image)
    assert loaded == moving and loaded is not None and not loaded.complete
    doc = orjson.loads(applied_path(image).read_bytes())
    assert doc["complete"] is False and doc["move"] == {"from": 30, "to": 7, "plan": "ab" * 32}
    _rewrite(applied_path(image), complete=True)  # says complete, names a move: damaged
    with pytest.raises(IntegrityError, match="'complete' disagrees with 'move'"):
        load_applied(image)
    _rewrite(applied_path(image), complete=False, move=None)
    with pytest.raises(IntegrityError, match="unreadable"):
        load_applied(image)


def test_the_worker_rebuilds_an_image_in_the_middle_of_a_move(tmp_path: Path) -> None:
    image = tmp_path / "w.img"
    save_applied(image, AppliedState("v", "t", 0, 30))
    assert applied_offset(image, "v") == 30
    save_applied(image, AppliedState("v", "t", 0, 30, move=Move(30, 7, "cd" * 32)))
    assert applied_offset(image, "v") is None
