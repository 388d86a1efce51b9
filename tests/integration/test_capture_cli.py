"""``kcdp baseline``, ``kcdp intercept nbd`` and ``kcdp bookmark`` as a user runs them."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from connectors.cli import main as kcdp
from connectors.intercept.replay import apply_events, read_events, since_last_baseline
from connectors.intercept.state import load_state
from schemas.events import EventKind

MiB = 1024 * 1024
KCDP = str(Path(sys.executable).with_name("kcdp"))


def test_baseline_command_copies_existing_volume(
    bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic, backing = f"test.capture.cli.{uuid.uuid4().hex[:8]}", tmp_path / "old.img"
    with open(backing, "wb") as f:
        f.truncate(5 * MiB)
        f.seek(MiB + 3)
        f.write(os.urandom(1_500_000))
    common = ["--bootstrap-servers", bootstrap, "--topic", topic, "--state-dir", str(tmp_path)]
    assert kcdp([*common, "baseline", "old", "--backing", str(backing)]) == 0
    end = int(capsys.readouterr().out.strip())
    records = read_events(bootstrap, topic, volume="old")
    assert next(r for r in records if r.offset == end).event.kind is EventKind.BASELINE_END
    assert {EventKind.BASELINE, EventKind.ZERO} <= {r.event.kind for r in records}
    apply_events(since_last_baseline(records), tmp_path / "replayed.img", 5 * MiB)
    assert filecmp.cmp(backing, tmp_path / "replayed.img", shallow=False)
    state = load_state(backing)
    assert state is not None and state.clean

    missing = tmp_path / "missing.img"
    assert kcdp([*common, "baseline", "x", "--backing", str(missing)]) == 9
    assert "no size was given" in capsys.readouterr().err


def test_intercept_nbd_command_with_bookmark(bootstrap: str, tmp_path: Path) -> None:
    topic, backing = f"test.capture.cli.{uuid.uuid4().hex[:8]}", tmp_path / "live.img"
    common = ["--bootstrap-servers", bootstrap, "--topic", topic, "--state-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [KCDP, *common, "intercept", "nbd", "live", "--backing", str(backing), "--size", "2M"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        uri = proc.stdout.readline().strip()
        assert uri.startswith("nbd+unix://"), proc.stderr.read() if proc.stderr else ""
        subprocess.run(
            ["qemu-io", "-f", "raw", "-c", "write -P 0x42 777 5000", uri],
            check=True,
            capture_output=True,
            timeout=60,
        )
        mark = subprocess.run(
            [KCDP, *common, "bookmark", "live", "after-write"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = read_events(bootstrap, topic, volume="live")
    by_offset = {r.offset: r.event for r in records}
    bookmark = by_offset[int(mark.stdout.strip())]
    assert bookmark.kind is EventKind.BOOKMARK and bookmark.name == "after-write"
    assert records[-1].event.kind is EventKind.SESSION_END
    apply_events(records, tmp_path / "replayed.img", 2 * MiB)
    assert filecmp.cmp(backing, tmp_path / "replayed.img", shallow=False)
    assert not (tmp_path / "run" / "live.sock").exists()


def test_intercept_nbd_bad_backing_is_a_clear_error(
    bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "no-such-dir" / "x.img"
    args = ["--bootstrap-servers", bootstrap, "--state-dir", str(tmp_path)]
    args += ["intercept", "nbd", "x", "--backing", str(bad), "--size", "1M"]
    assert kcdp(args) == 9
    err = capsys.readouterr().err
    assert "cannot open backing file" in err and "Traceback" not in err
