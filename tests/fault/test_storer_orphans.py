"""Window-storing child processes never outlive the process that started them.

A process starts :class:`~streams.windowstore.WindowStorers` and is killed with SIGKILL;
its children must die at once (``PR_SET_PDEATHSIG``), so no orphan goes on writing objects
or a replica image that a restarted worker is resuming.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.streams_support import wait_for
from tests.worker_process import alive, child_pids

ROOT = Path(__file__).resolve().parents[2]
PARENT = """
import sys, tempfile, time
from pathlib import Path
from streams.windowstore import WindowStorers
pool = WindowStorers(2, Path(tempfile.mkdtemp()))
pool._pool.submit(time.sleep, 0.5).result()
pool._pool.submit(time.sleep, 0.5).result()
print("ready", flush=True)
time.sleep(120)
"""


def test_children_die_with_a_killed_parent() -> None:
    proc = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        kids = child_pids(proc.pid)
        storers = [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
        assert len(storers) == 2, kids
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not any(map(alive, storers)), "the children are gone", 10, 0.05)
    finally:
        proc.kill()
        proc.wait()
