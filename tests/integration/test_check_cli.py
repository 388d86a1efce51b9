"""``kcdp check`` against the real broker and S3 endpoint, and against closed ports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from connectors.kafka import ensure_topics
from connectors.store import open_store
from infra.broker import free_port

KCDP = str(Path(sys.executable).parent / "kcdp")


def _check(*args: str) -> tuple[int, Any, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCDP_", "KAFKA_"))}
    run = subprocess.run(
        [KCDP, "check", "--json", "--timeout", "3", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    return run.returncode, orjson.loads(run.stdout) if run.stdout else None, run.stderr


def test_all_parts_ok(bootstrap: str, s3_url: str) -> None:
    ensure_topics({"bootstrap.servers": bootstrap}, {"kcdp.writes": 2})
    store = open_store(s3_url)
    store.put("v1/volumes/db/gaps/00000000000000000001.json", b"{}")
    store.close()
    code, report, err = _check("--bootstrap-servers", bootstrap, "--store", s3_url)
    assert code == 0, err
    assert report["ok"] is True
    kafka, s3, topics = report["parts"]
    assert (kafka["part"], kafka["ok"], kafka["exit_code"]) == ("kafka", True, 0)
    assert (topics["part"], topics["ok"]) == ("topics", True)  # 2 partitions, 1 planned worker
    assert "kcdp.writes has 2 partitions" in kafka["detail"]
    assert (s3["part"], s3["ok"]) == ("store", True)
    assert "v1/volumes/db/gaps/00000000000000000001.json" in s3["detail"]


def test_store_down_exits_4_and_kafka_still_reported(bootstrap: str) -> None:
    dead = f"s3://kcdp?endpoint=127.0.0.1:{free_port()}&secure=false"
    code, report, _ = _check("--bootstrap-servers", bootstrap, "--store", dead)
    assert code == 4
    assert [(p["part"], p["ok"], p["exit_code"]) for p in report["parts"]] == [
        ("kafka", True, 0),
        ("store", False, 4),
        ("topics", True, 0),
    ]


def test_kafka_down_exits_5(tmp_path: Path) -> None:
    code, report, _ = _check(
        "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--store", f"file://{tmp_path}"
    )
    assert code == 5
    assert [(p["part"], p["ok"]) for p in report["parts"]] == [
        ("kafka", False),
        ("store", True),
        ("topics", False),
    ]
    assert "cannot reach Kafka" in report["parts"][0]["detail"]


def test_part_selects_one_check(tmp_path: Path) -> None:
    code, report, _ = _check(
        "--part",
        "store",
        "--bootstrap-servers",
        f"127.0.0.1:{free_port()}",
        "--store",
        f"file://{tmp_path}",
    )
    assert code == 0
    assert [p["part"] for p in report["parts"]] == ["store"]


def test_bad_store_url_is_a_config_error_exit_2() -> None:
    code, report, _ = _check("--part", "store", "--store", "ftp://nowhere")
    assert code == 2
    assert "unknown store URL scheme" in report["parts"][0]["detail"]


def test_bad_kafka_property_is_a_config_error_exit_2() -> None:
    code, report, _ = _check("--part", "kafka", "-X", "no.such.property=1")
    assert code == 2
    assert "invalid Kafka client configuration" in report["parts"][0]["detail"]


def test_non_positive_timeout_is_a_usage_error() -> None:
    run = subprocess.run(
        [KCDP, "check", "--timeout", "0"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert "kcdp: error: --timeout must be positive" in run.stderr
