"""Encryption at rest end to end: the intercept API captures writes holding a planted
pattern, ``kcdp worker --encryption-key-file`` (with its storer processes) seals every
window and checkpoint into S3 over HTTP (moto), and the restore side reads them back.

The planted pattern is random bytes, so no compression hides it: it appears in no stored
object. With the key, restores at random offsets are exact and ``verify --read-data`` is
clean; without it, or with another key, commands exit 11 and write no output; a flipped
ciphertext byte is an integrity problem naming the object. After a key rotation the worker
seals under the new key, and points written under the old key still restore.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import orjson
import pytest

from connectors.cli import main
from connectors.intercept import InterceptedVolume
from connectors.kafka import ensure_topics
from connectors.store import open_store
from connectors.store.keyring import generate_key_file, load_key_file
from connectors.store.sealed import MAGIC, MARKER_KEY, read_marker
from infra.broker import free_port
from schemas.manifest import list_window_keys
from tests.streams_support import wait_for
from tests.worker_process import WorkerProcess

VOLUME = "sealedvol"
SIZE = 1 << 20
PATTERN = os.urandom(4096)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def protect(
    bootstrap: str,
    s3_url: str,
    topic: str,
    tmp: Path,
    key: Path,
    writes: int,
    image: bytearray,
    states: dict[int, bytes],
    rng: random.Random,
) -> None:
    """Run the worker (sealing with ``key``) while ``writes`` writes are captured; every
    point's image goes to ``states``; returns once the last write is durable."""
    worker = WorkerProcess(
        bootstrap=bootstrap,
        store_url=s3_url,
        topic=topic,
        workdir=tmp / "worker",
        web_port=free_port(),
        window_seconds=0.5,
        extra=("--encryption-key-file", str(key), "--checkpoint-windows", "3"),
    )
    with (
        worker,
        InterceptedVolume(
            tmp / "vol.img", VOLUME, SIZE, bootstrap_servers=bootstrap, topic=topic
        ) as vol,
    ):
        worker.wait_ready(timeout=120)
        last = -1
        for i in range(writes):
            at = rng.randrange(0, SIZE - 8192)
            data = PATTERN if i % 5 == 0 else os.urandom(rng.randint(1, 6000))
            last = vol.write(at, data)
            image[at : at + len(data)] = data
            states[last] = bytes(image)
        store = open_store(s3_url, key_file=str(key))

        def durable() -> bool:
            k = list_window_keys(store, VOLUME)
            return bool(k) and k[-1][1] >= last

        wait_for(durable, "the last write is durable", 90)
        store.close()
    assert "Traceback" not in worker.log_path.read_text(errors="replace")


def status_and_check(
    capsys: pytest.CaptureFixture[str], common: tuple[str, ...], kafka: tuple[str, ...]
) -> None:
    """status and check read the sealed store with its key; without it, they refuse."""
    code, stdout, err = run(capsys, "status", *common, *kafka, "--json")
    assert code == 0, err
    assert VOLUME in stdout
    code, stdout, err = run(capsys, "check", *common, *kafka, "--part", "store")
    assert code == 0 and "encrypted" in stdout, stdout + err
    code, _, err = run(capsys, "status", *common[:2], *kafka, "--json")
    assert code == 11, err
    code, stdout, err = run(capsys, "check", *common[:2], *kafka, "--part", "store")
    assert code != 0 and "encryption-key-file" in stdout + err, stdout + err


def refusals(capsys: pytest.CaptureFixture[str], s3_url: str, point: int, tmp: Path) -> None:
    """No key, or another key: exit 11, one line naming the setting, no output written."""
    other = tmp / "other-key"
    generate_key_file(other)
    for extra in ((), ("--encryption-key-file", str(other))):
        out = tmp / "refused.img"
        code, _, err = run(
            capsys,
            "restore",
            VOLUME,
            "--store",
            s3_url,
            *extra,
            "--to-offset",
            str(point),
            "-o",
            str(out),
        )
        assert code == 11, err
        assert "encryption-key-file" in err or "does not hold" in err
        assert "Traceback" not in err and not out.exists()
        code, _, err = run(capsys, "points", VOLUME, "--store", s3_url, *extra)
        assert code == 11, err


def test_sealed_store_end_to_end_with_rotation(
    bootstrap: str, s3_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(7)
    topic = f"enc-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1, "kcdp.writes.dlq": 1})
    key = tmp_path / "key"
    old_id = generate_key_file(key).id
    image, states = bytearray(SIZE), dict[int, bytes]()
    protect(bootstrap, s3_url, topic, tmp_path / "a", key, 30, image, states, rng)
    old_points = sorted(states)

    raw = open_store(s3_url, key_file=str(key)).inner  # type: ignore[attr-defined]
    objects = [i.key for i in raw.list("")]
    assert MARKER_KEY in objects and len(objects) > 5
    for k in objects:
        blob = raw.get(k)
        assert PATTERN[:64] not in blob, f"{k} holds the planted plaintext"
        if k != MARKER_KEY:
            assert blob[:4] == MAGIC and blob[4:12].hex() == old_id, k

    common = ("--store", s3_url, "--encryption-key-file", str(key))
    for point in [*rng.sample(old_points, 4), old_points[-1]]:
        out = tmp_path / f"r{point}.img"
        code, _, err = run(
            capsys,
            "restore",
            VOLUME,
            *common,
            "--to-offset",
            str(point),
            "-o",
            str(out),
            "--replay-from",
            "log",
        )
        assert code == 0, err
        assert out.read_bytes() == states[point], point
    code, stdout, err = run(capsys, "verify", VOLUME, *common, "--read-data", "--json")
    assert code == 0, err
    assert orjson.loads(stdout)["problems"] == []

    status_and_check(capsys, common, ("--bootstrap-servers", bootstrap, "--topic", topic))
    refusals(capsys, s3_url, old_points[-1], tmp_path)

    # rotation: the new key first, the old one kept to read what it sealed
    new = tmp_path / "new-key"
    new_id = generate_key_file(new).id
    rotated = tmp_path / "rotated"
    rotated.write_text(new.read_text() + key.read_text())
    rotated.chmod(0o600)
    protect(bootstrap, s3_url, topic, tmp_path / "b", rotated, 20, image, states, rng)
    assert read_marker(raw) == [old_id, new_id]
    ids = {raw.get(k.key)[4:12].hex() for k in raw.list("v1/volumes/") if k.key.endswith(".fwd")}
    assert ids == {old_id, new_id}
    common = ("--store", s3_url, "--encryption-key-file", str(rotated))
    new_points = sorted(set(states) - set(old_points))
    for point in [*rng.sample(old_points, 3), *rng.sample(new_points, 3), new_points[-1]]:
        out = tmp_path / f"rot{point}.img"
        code, _, err = run(
            capsys, "restore", VOLUME, *common, "--to-offset", str(point), "-o", str(out)
        )
        assert code == 0, err
        assert out.read_bytes() == states[point], point
    out = tmp_path / "old-key-only.img"
    code, _, err = run(
        capsys,
        "restore",
        VOLUME,
        "--store",
        s3_url,
        "--encryption-key-file",
        str(key),
        "--to-offset",
        str(new_points[-1]),
        "-o",
        str(out),
    )
    assert code == 11 and new_id in err, err

    # a flipped ciphertext byte is named by verify --read-data
    fwd = sorted(k.key for k in raw.list("v1/volumes/") if k.key.endswith(".fwd"))[-1]
    blob = bytearray(raw.get(fwd))
    blob[len(blob) // 2] ^= 0x40
    raw.put(fwd, bytes(blob))
    code, stdout, err = run(capsys, "verify", VOLUME, *common, "--read-data", "--json")
    assert code != 0
    problems = orjson.loads(stdout)["problems"]
    assert any(p["key"] == fwd and "authenticate" in p["detail"] for p in problems), problems
    assert load_key_file(rotated).ids() == [new_id, old_id]
