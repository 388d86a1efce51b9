"""The demo's story at a smaller size: every point restored and proven, nothing left behind."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from connectors.demo.mount import fuse_problem
from connectors.demo.story import DemoOptions, run_demo

MiB = 1024 * 1024


def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[1] == me:
                        out.add(int(entry))
            except (OSError, IndexError):
                pass
    return out


def _demo_mounts() -> list[str]:
    with open("/proc/mounts") as fh:
        return [line for line in fh if "kcdp-fs-" in line or "kcdp-ro-" in line]


@pytest.mark.parametrize("mode", ["filesystem", "api"])
def test_demo_story_proves_every_point(tmp_path: Path, mode: str) -> None:
    if mode == "filesystem":
        assert fuse_problem() is None, f"the filesystem story cannot run here: {fuse_problem()}"
    before = _children()
    out = io.StringIO()
    opts = DemoOptions(workdir=tmp_path / "demo", size=32 * MiB, scale=0.25, mode=mode, out=out)
    code = run_demo(opts)
    text = out.getvalue()
    assert code == 0, text
    assert "RESULT: every point proven" in text
    for label in ("install", "update", "cleanup"):
        assert label in text
    page = (tmp_path / "demo" / "timeline.html").read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert _children() <= before, "the demo left child processes running"
    assert not _demo_mounts(), "the demo left a mount behind"
