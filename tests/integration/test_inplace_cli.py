"""``kcdp restore --in-place IMAGE`` end to end through a real S3 HTTP endpoint (moto): a
restore output records its point, is moved back and forth in place (equal to the model),
``--dry-run`` prints the in-place path and its cost and writes nothing, mismatched images
are refused, and a forced backward restore after the newest checkpoint works in place."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from connectors.cli import main
from connectors.restore.catalog import Catalog
from connectors.store.base import ObjectStore
from schemas.applied_state import load_state, state_path
from tests.restore_history import POLICIES, History, random_history, write_store


@pytest.fixture(scope="module")
def history() -> History:
    return random_history(random.Random("inplace-cli"), events=160)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _restore(capsys: pytest.CaptureFixture[str], url: str, point: int, *rest: str) -> str:
    code, stdout, err = _run(
        capsys,
        "restore",
        "va",
        "--store",
        url,
        "--to-offset",
        str(point),
        "--replay-from",
        "log",
        *rest,
    )
    assert code == 0, err
    return stdout


def test_in_place_moves_a_restore_output_and_dry_run_shows_the_cost(
    s3_url: str,
    s3_store: ObjectStore,
    history: History,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_store(s3_store, history, POLICIES["bytes40k"], checkpoint_every=4)
    events = history.of("va")
    newer, older = events[-3][0], events[-12][0]
    image = tmp_path / "va.img"
    _restore(capsys, s3_url, newer, "-o", str(image))
    state = load_state(image)
    assert state is not None and state.complete and state.applied_offset == newer

    before = image.read_bytes(), state_path(image).read_bytes()
    text = _restore(capsys, s3_url, older, "--in-place", str(image), "--dry-run")
    assert f"restore va to offset {older} in place" in text
    assert f"in place    backward from point {newer} to {older}" in text
    assert "total" in text and "other       full" in text and "(dry run)" in text
    assert (image.read_bytes(), state_path(image).read_bytes()) == before

    doc = orjson.loads(_restore(capsys, s3_url, older, "--in-place", str(image), "--json"))
    assert doc["chosen"] == "in-place" and doc["bytes"] < doc["full"]["bytes"]
    assert doc["in_place"]["direction"] == "backward" and doc["resumed"] is False
    assert 0 < doc["bytes_written"] < len(before[0])
    assert image.read_bytes() == history.image_at("va", older)
    state = load_state(image)
    assert state is not None and state.complete and state.applied_offset == older

    text = _restore(capsys, s3_url, newer, "--in-place", str(image))
    assert f"moved {image} in place from {older} to {newer}" in text
    assert image.read_bytes() == history.image_at("va", newer)

    # far back, onto a checkpoint: a full restore into the image reads fewer bytes
    first_cp = Catalog(s3_store, "va").checkpoints[0]
    doc = orjson.loads(_restore(capsys, s3_url, first_cp, "--in-place", str(image), "--json"))
    assert doc["chosen"] == "full" and doc["bytes"] < doc["in_place"]["bytes"]
    assert image.read_bytes() == history.image_at("va", first_cp)
    state = load_state(image)
    assert state is not None and state.complete and state.applied_offset == first_cp


def test_mismatched_images_are_refused(
    s3_url: str,
    s3_store: ObjectStore,
    history: History,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_store(s3_store, history, POLICIES["bytes40k"], checkpoint_every=4)
    point = history.of("va")[-2][0]
    image = tmp_path / "va.img"
    base = ("restore", "va", "--store", s3_url, "--to-offset", str(point))
    bare = tmp_path / "bare.img"
    bare.write_bytes(bytes(history.sizes["va"]))
    code, _, err = _run(capsys, *base, "--in-place", str(bare))
    assert code == 2 and "has no applied state" in err
    _restore(capsys, s3_url, point, "-o", str(image))
    code, _, err = _run(
        capsys, "restore", "vb", "--store", s3_url, "--latest", "--in-place", str(image)
    )
    assert code == 2 and "belongs to volume 'va', not 'vb'" in err
    with image.open("r+b") as fh:
        fh.truncate(history.sizes["va"] - 1)
    code, _, err = _run(capsys, *base, "--in-place", str(image))
    assert code == 2 and "holds" in err
    code, _, err = _run(capsys, *base, "--in-place", str(image), "-o", str(image))
    assert code == 2 and "not both" in err
    code, _, err = _run(
        capsys, "restore", "--group", "g", "--store", s3_url, "--latest", "--in-place", str(image)
    )
    assert code == 2 and "does not take --group" in err


def test_forced_backward_after_the_newest_checkpoint_works_in_place(
    s3_url: str,
    s3_store: ObjectStore,
    history: History,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_store(s3_store, history, POLICIES["bytes40k"], checkpoint_every=3, checkpoint_last=False)
    catalog = Catalog(s3_store, "va")
    newest_cp = catalog.checkpoints[-1]
    assert newest_cp < catalog.windows[-1].last
    point = next(w.last for w in catalog.windows if w.last > newest_cp)  # its edge: after it
    standby = tmp_path / "standby.img"
    _restore(capsys, s3_url, catalog.windows[-1].last, "-o", str(standby))
    backward = ("--direction", "backward")
    code, _, err = _run(
        capsys,
        "restore",
        "va",
        "--store",
        s3_url,
        "--to-offset",
        str(point),
        *backward,
        "--replay-from",
        "log",
        "-o",
        str(tmp_path / "x.img"),
    )
    assert code == 8 and "to roll back from" in err
    doc = orjson.loads(
        _restore(capsys, s3_url, point, *backward, "--in-place", str(standby), "--json")
    )
    assert doc["chosen"] == "in-place" and doc["in_place"]["direction"] == "backward"
    assert "full" in doc["refused"]
    assert standby.read_bytes() == history.image_at("va", point)


def test_points_with_an_image_price_each_window_end(
    s3_url: str,
    s3_store: ObjectStore,
    history: History,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``kcdp points --image``: the image's point, and for each window end the path a
    ``restore --in-place`` would take with both paths' bytes; near the image's point the
    move reads less than a full restore; a wrong volume's image is refused (exit 2)."""
    write_store(s3_store, history, POLICIES["bytes40k"], checkpoint_every=4)
    catalog = Catalog(s3_store, "va")
    ends = [w.last for w in catalog.windows]
    image = tmp_path / "va.img"
    _restore(capsys, s3_url, ends[-2], "-o", str(image))
    code, out, err = _run(
        capsys, "points", "va", "--store", s3_url, "--image", str(image), "--json"
    )
    assert code == 0, err
    doc = orjson.loads(out)
    assert doc["image"] == {"path": str(image), "point": ends[-2], "complete": True}
    reach = {w["last_offset"]: w["reach"] for w in doc["windows"]}
    assert set(reach) == set(ends)
    near = reach[ends[-1]]
    assert near["chosen"] == "in-place" and near["bytes"] == near["in_place_bytes"]
    assert near["in_place_bytes"] < near["full_bytes"]
    here = reach[ends[-2]]
    assert here["chosen"] == "in-place" and here["in_place_bytes"] == 0
    for r in reach.values():  # the chosen path is never the dearer one
        if r["in_place_bytes"] is not None and r["full_bytes"] is not None:
            assert r["bytes"] == min(r["in_place_bytes"], r["full_bytes"])
    code, text, err = _run(capsys, "points", "va", "--store", s3_url, "--image", str(image))
    assert code == 0, err
    assert f"image      {image} at point {ends[-2]}" in text
    assert text.count("[image: ") == len(ends)
    code, _, err = _run(capsys, "points", "vb", "--store", s3_url, "--image", str(image))
    assert code == 2 and "belongs to volume 'va'" in err
