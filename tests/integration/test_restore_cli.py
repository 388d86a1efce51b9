"""``kcdp restore / points / verify`` end to end through a real S3 HTTP endpoint (moto)."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import orjson
import pytest

from connectors.cli import main
from connectors.store.base import ObjectStore
from tests.restore_history import POLICIES, History, random_history, write_store


@pytest.fixture(scope="module")
def history() -> History:
    return random_history(random.Random("cli"), events=160)


@pytest.fixture
def s3_history(s3_store: ObjectStore, history: History) -> History:
    write_store(s3_store, history, POLICIES["bytes40k"], checkpoint_every=4)
    return history


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_restore_to_offset_through_s3(
    s3_url: str, s3_history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = s3_history.of("va")
    point = events[len(events) // 2][0]
    out = tmp_path / "va.img"
    code, stdout, err = _run(
        capsys,
        "restore",
        "va",
        "--store",
        s3_url,
        "--to-offset",
        str(point),
        "-o",
        str(out),
        "--replay-from",
        "log",
        "--json",
    )
    assert code == 0, err
    doc = orjson.loads(stdout)
    assert doc["offset"] == point and doc["output"] == str(out)
    assert out.read_bytes() == s3_history.image_at("va", point)


def test_dry_run_writes_nothing(
    s3_url: str, s3_history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    point = s3_history.of("vb")[-5][0]
    out = tmp_path / "vb.img"
    code, stdout, err = _run(
        capsys,
        "restore",
        "vb",
        "--store",
        s3_url,
        "--to-offset",
        str(point),
        "-o",
        str(out),
        "--dry-run",
    )
    assert code == 0, err
    assert "direction" in stdout and "(dry run)" in stdout
    assert list(tmp_path.iterdir()) == []


def test_latest_bookmark_and_timestamp(
    s3_url: str, s3_history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "va.img"
    base = ("restore", "va", "--store", s3_url, "-o", str(out), "--replay-from", "log")
    events = s3_history.of("va")
    assert _run(capsys, *base, "--latest")[0] == 0
    assert out.read_bytes() == s3_history.image_at("va", events[-1][0])
    offset, mark = next((o, e) for o, e in events if e.name.startswith("bm"))
    assert _run(capsys, *base, "--to-bookmark", mark.name)[0] == 0
    assert out.read_bytes() == s3_history.image_at("va", offset)
    offset, event = events[len(events) // 3]
    when = dt.datetime.fromtimestamp(event.timestamp_us / 1e6, tz=dt.UTC)
    stamp = when.isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert _run(capsys, *base, "--to-timestamp", stamp)[0] == 0
    assert out.read_bytes() == s3_history.image_at("va", offset)


def test_group_restore_at_one_offset(
    s3_url: str, s3_history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    point = len(s3_history.events) * 2 // 3
    code, stdout, err = _run(
        capsys,
        "restore",
        "--group",
        "g",
        "--store",
        s3_url,
        "--to-offset",
        str(point),
        "-o",
        str(tmp_path / "g"),
        "--replay-from",
        "log",
        "--json",
    )
    assert code == 0, err
    assert sorted(v["volume"] for v in orjson.loads(stdout)["volumes"]) == ["va", "vb"]
    for volume in ("va", "vb"):
        got = (tmp_path / "g" / f"{volume}.img").read_bytes()
        assert got == s3_history.image_at(volume, point)


def test_points_and_verify(
    s3_url: str, s3_store: ObjectStore, s3_history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, _ = _run(capsys, "points", "va", "--store", s3_url, "--json")
    assert code == 0
    doc = orjson.loads(stdout)
    assert doc["oldest"] == s3_history.baseline_end("va")
    assert doc["newest"] == s3_history.of("va")[-1][0]
    assert len(doc["checkpoints"]) >= 1 and doc["bookmarks"]
    assert _run(capsys, "verify", "va", "--store", s3_url, "--read-data")[0] == 0
    manifest = orjson.loads(s3_store.get(_first_manifest(s3_store)))
    key = manifest["objects"]["forward"]["key"]
    data = bytearray(s3_store.get(key))
    data[-3] ^= 1
    s3_store.put(key, bytes(data))
    code, stdout, _ = _run(capsys, "verify", "va", "--store", s3_url, "--read-data")
    assert code == 6 and key in stdout


def _first_manifest(store: ObjectStore) -> str:
    return next(i.key for i in store.list("v1/volumes/va/manifests/"))


def test_bad_requests_get_clear_errors(
    s3_url: str, s3_history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x.img")
    past = str(len(s3_history.events) + 100)
    code, _, err = _run(
        capsys,
        "restore",
        "va",
        "--store",
        s3_url,
        "--to-offset",
        past,
        "-o",
        out,
        "--replay-from",
        "log",
    )
    assert code == 8 and "past the newest window" in err and "Traceback" not in err
    code, _, err = _run(
        capsys,
        "restore",
        "va",
        "--store",
        s3_url,
        "--to-offset",
        past,
        "-o",
        out,
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--log-level",
        "ERROR",  # the in-process log handler may hold an earlier test's captured stderr
    )
    assert code == 8 and "cannot be read from Kafka" in err and "Traceback" not in err
    code, _, err = _run(capsys, "restore", "va", "--store", s3_url, "--to-offset", "0", "-o", out)
    assert code == 8 and "not consistent" in err
    code, _, err = _run(
        capsys, "restore", "va", "--store", s3_url, "--to-timestamp", "yesterday", "-o", out
    )
    assert code == 2 and "RFC 3339" in err
    code, _, err = _run(capsys, "restore", "nope", "--store", s3_url, "--latest", "-o", out)
    assert code == 8 and "no windows" in err
    code, _, err = _run(capsys, "verify", "nope", "--store", s3_url)
    assert code == 8 and "has nothing" in err
    assert not Path(out).exists()
    base = ("restore", "va", "--store", s3_url, "--latest", "--replay-from", "log")
    code, _, err = _run(capsys, *base, "-o", str(tmp_path))
    assert code == 9 and "is a directory" in err
    code, _, err = _run(capsys, *base, "-o", str(tmp_path / "no" / "x.img"))
    assert code == 9 and "does not exist" in err
