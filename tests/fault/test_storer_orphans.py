"""Window-storing child processes never outlive the process that started them.

A process starts :class:`~streams.storing.WindowStorers` (deleting the spill file a
killed run left) and is killed with SIGKILL; its children must die at once
(``PR_SET_PDEATHSIG``), so no orphan goes on writing objects or an image that a
restarted worker is resuming. Before that, a SIGINT or SIGTERM sent to the children (a
Ctrl-C or a process-group TERM) must not stop them: shutting down is the parent's to do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.streams_support import wait_for
from tests.worker_process import alive, child_pids

ROOT = Path(__file__).resolve().parents[2]
PARENT = """
import sys, time
from pathlib import Path
from streams.storing import WindowStorers
pool = WindowStorers(2, Path(sys.argv[1]))
pool._pool.submit(time.sleep, 0.5).result()
pool._pool.submit(time.sleep, 0.5).result()
print("ready", flush=True)
time.sleep(120)
"""


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    stale = tmp_path / "7.data"
    stale.write_bytes(b"left by a killed worker")
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        assert not stale.exists()
        kids = child_pids(proc.pid)
        storers = [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
        assert len(storers) == 2, kids
        for kid in storers:
            os.kill(kid, signal.SIGINT)
            os.kill(kid, signal.SIGTERM)
        time.sleep(0.5)
        assert all(map(alive, storers))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not any(map(alive, storers)), "the children are gone", 10, 0.05)
    finally:
        proc.kill()
        proc.wait()
