"""``kcdp prune`` end to end on the file store and through a real S3 HTTP endpoint (moto),
unsealed and sealed (encryption at rest):
deletes go over HTTP; a dry run writes nothing; kept points restore exactly afterwards
(``kcdp restore``), dropped ones exit 8 naming the nearest kept points; ``kcdp points``
shows the tiers; after two prunes past the grace nothing unreferenced is left."""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson
import pytest

from connectors.cli import main
from connectors.retention.policy import RetentionPolicy
from connectors.store import open_store
from connectors.store.keyring import generate_key_file
from connectors.store.sealed import MAGIC
from schemas.retention import load_retention
from tests.retention_support import Partition, promised_points, unreferenced

#: the policy (keep_within 6 h, 4 hourly, 2 daily points) and a grace of 1 s (tests only)
POLICY = ["--keep-within", "6h", "--keep-hourly", "4", "--keep-daily", "2", "--unsafe-grace"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(params=["file", "s3", "sealed-s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """A store URL and its key file (None: unsealed)."""
    if request.param == "file":
        return f"file://{tmp_path / 'store'}", None
    key_file = None
    if request.param == "sealed-s3":
        key_file = str(tmp_path / "key")
        generate_key_file(key_file)
    return str(request.getfixturevalue("s3_url")), key_file


def test_prune_keeps_promised_points_and_deletes_after_grace(
    target: tuple[str, str | None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, key_file = target
    store = open_store(url, key_file=key_file)
    part = Partition(store, tmp_path / "work", random.Random(3))
    part.write(160, mean_gap_us=25 * 60 * 1_000_000)  # ~66 h of history
    part.close()
    state = ["--store", url, "--state-dir", str(tmp_path / "state")]
    state += ["--encryption-key-file", key_file] if key_file else []
    before = {i.key: i.size for i in store.list("")}

    code, out, err = _run(capsys, "prune", *state, *POLICY, "--grace", "1s", "--dry-run", "--json")
    assert code == 0, err
    dry = orjson.loads(out)["volumes"]
    assert any(v["consolidate"] for v in dry) and all(v["dry_run"] for v in dry)
    assert {i.key: i.size for i in store.list("")} == before, "a dry run wrote"

    code, out, err = _run(capsys, "prune", *state, *POLICY, "--grace", "1s", "--json")
    assert code == 0, err
    first = orjson.loads(out)["volumes"]
    assert sum(v["marked"] for v in first) > 0 and sum(v["deleted"] for v in first) == 0
    time.sleep(1.2)
    for _ in range(2):  # past the grace: unlinked objects, then the chunks they freed
        code, out, err = _run(capsys, "prune", *state, *POLICY, "--grace", "1s", "--json")
        assert code == 0, err
        time.sleep(1.2)
    after = {i.key: i.size for i in store.list("")}
    assert sum(after.values()) < sum(before.values())
    if key_file:  # what the prune wrote (consolidations, the base checkpoint) is sealed too
        raw = open_store(url)
        assert all(raw.get(k)[:4] == MAGIC for k in after), "a plaintext object"

    policy = RetentionPolicy(
        keep_within=6 * 3600.0, keep_hourly=4, keep_daily=2, grace=1.0, unsafe_grace=True
    )
    tiers: set[str] = set()
    for volume in part.sizes:
        assert unreferenced(store, volume) == []
        retention = load_retention(store, volume)
        assert retention is not None and retention.base is not None
        promised = sorted(promised_points(part, volume, policy))
        for point in random.Random(volume).sample(promised, min(6, len(promised))):
            out_img = tmp_path / f"{volume}-{point}.img"
            code, _, err = _run(
                capsys,
                "restore",
                volume,
                *state,
                "--to-offset",
                str(point),
                "-o",
                str(out_img),
                "--replay-from",
                "log",
            )
            assert code == 0, err
            assert out_img.read_bytes() == part.history.image_at(volume, point)
        dropped = next(o for o, _ in part.history.of(volume) if o < retention.base.offset)
        code, _, err = _run(
            capsys,
            "restore",
            volume,
            *state,
            "--to-offset",
            str(dropped),
            "-o",
            str(tmp_path / "x"),
        )
        assert code == 8
        assert "dropped by the retention policy" in err and "nearest kept points" in err
        code, out, err = _run(capsys, "points", volume, *state, "--json")
        assert code == 0, err
        doc = orjson.loads(out)
        assert doc["base"] == retention.base.offset
        tiers |= {w["tier"] for w in doc["windows"]}
        code, out, err = _run(capsys, "verify", volume, *state, "--read-data")
        assert code == 0, out + err
    assert tiers == {"any-point", "consolidated"}
    store.close()


def test_prune_without_policy_deletes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"file://{tmp_path / 'store'}"
    store = open_store(url)
    part = Partition(store, tmp_path / "work", random.Random(4))
    part.write(60, mean_gap_us=30 * 60 * 1_000_000)
    part.close()
    before = {i.key: store.get(i.key) for i in store.list("")}
    code, out, err = _run(capsys, "prune", "--store", url, "--state-dir", str(tmp_path / "s"))
    assert code == 0, err
    assert "nothing is consolidated or deleted" in out
    assert {i.key: store.get(i.key) for i in store.list("")} == before
    store.close()
