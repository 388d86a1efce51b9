"""Issue 10 reproductions through ``kcdp``: a deleted middle manifest, a flipped manifest
field. Every restore either equals the model or is refused (exit 6, 7 or 8); none returns
other bytes with exit 0, dry runs included, and ``kcdp verify`` names the damage."""

from __future__ import annotations

import random
import re
from pathlib import Path

import orjson
import pytest

from connectors.cli import main
from connectors.restore.catalog import Catalog
from connectors.store.file import FileStore
from tests.restore_history import POLICIES, History, random_history, write_store

REFUSED = (6, 7, 8)


@pytest.fixture(scope="module")
def history() -> History:
    return random_history(random.Random("chain-repro"), events=200)


@pytest.fixture
def store(tmp_path: Path, history: History) -> FileStore:
    s = FileStore(tmp_path / "store")
    write_store(s, history, POLICIES["count7"], checkpoint_every=3)
    return s


def _kcdp(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def _restore(
    capsys: pytest.CaptureFixture[str], store: FileStore, out: Path, point: int, *extra: str
) -> int:
    code, text = _kcdp(
        capsys,
        "restore",
        "va",
        "--store",
        store.url,
        "--to-offset",
        str(point),
        "-o",
        str(out),
        "--replay-from",
        "log",
        *extra,
    )
    assert code == 0 or code in REFUSED, text
    return code


def _hole(store: FileStore) -> tuple[int, int, str]:
    """Delete the manifest of the window right after a checkpoint (its objects stay)."""
    catalog = Catalog(store, "va")
    k = next(
        i + 1 for i, w in enumerate(catalog.windows[:-3]) if w.last in catalog.checkpoints and i > 0
    )
    gone = catalog.windows[k]
    store.delete(gone.key)
    return gone.first, gone.last, gone.key


def test_points_inside_a_deleted_window_are_refused_both_ways(
    store: FileStore, history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, last, key = _hole(store)
    catalog = Catalog(store, "va")
    after = catalog.windows[catalog.index_for(last) + 1]  # type: ignore[operator]
    inside = [first, (first + last) // 2, last, after.first, (after.first + after.last) // 2]
    out = tmp_path / "out.img"
    for point in inside:
        for direction in ("auto", "forward", "backward"):
            args = ("--direction", direction)
            assert _restore(capsys, store, out, point, *args, "--dry-run") in REFUSED, point
            assert _restore(capsys, store, out, point, *args) in REFUSED, (direction, point)
            assert not out.exists()
    code, text = _kcdp(capsys, "verify", "va", "--store", store.url, "--read-data", "--json")
    assert code == 7
    assert key in {p["key"] for p in orjson.loads(text)["problems"]}


def test_every_point_around_a_deleted_window_is_exact_or_refused(
    store: FileStore, history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, last, _ = _hole(store)
    catalog = Catalog(store, "va")
    out = tmp_path / "out.img"
    restored = 0
    for point in range(catalog.windows[0].last, catalog.windows[-1].last + 1, 3):
        for direction in ("forward", "backward"):
            if _restore(capsys, store, out, point, "--direction", direction) == 0:
                assert out.read_bytes() == history.image_at("va", point), (direction, point)
                assert not first <= point <= last
                restored += 1
    assert restored >= 20  # the rest of the history stays restorable
    latest = catalog.windows[-1].last
    assert _restore(capsys, store, out, latest) == 0  # backward from the newest checkpoint
    assert out.read_bytes() == history.image_at("va", latest)


def test_a_flipped_manifest_field_is_named_by_verify_and_refused_by_restore(
    store: FileStore, history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = Catalog(store, "va")
    w = catalog.windows[len(catalog.windows) // 2]
    path = store.root / w.key
    doc = path.read_bytes()
    flipped = re.sub(
        rb'"logical_bytes":(\d+)', lambda m: b'"logical_bytes":%d' % (int(m[1]) + 1), doc, count=1
    )
    assert flipped != doc
    path.write_bytes(flipped)
    code, text = _kcdp(capsys, "verify", "va", "--store", store.url, "--read-data", "--json")
    assert code == 6, text
    assert w.key in {p["key"] for p in orjson.loads(text)["problems"]}
    out = tmp_path / "out.img"
    mid = (w.first + w.last) // 2
    for direction in ("auto", "forward", "backward"):
        assert _restore(capsys, store, out, mid, "--direction", direction) in REFUSED
        assert not out.exists()
