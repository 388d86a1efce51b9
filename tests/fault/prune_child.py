"""A prune process for the crash test: ``python -m tests.fault.prune_child URL WORKDIR
NOW_US AT VOLUME…`` prunes the volumes with the crash test's policy and SIGKILLs itself
before its ``AT``-th change to the store (exit 0 if it finishes first)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from connectors.retention.prune import prune_volume
from connectors.store import open_store
from tests.fault.test_prune_crash import POLICY


def main(argv: list[str]) -> int:
    url, workdir, now_us, at, *volumes = argv
    steps = 0

    def step(name: str) -> None:
        nonlocal steps
        steps += 1
        if steps == int(at):
            print(f"killed before {name}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    store = open_store(url)
    for volume in volumes:
        prune_volume(store, volume, POLICY, workdir=Path(workdir), now_us=int(now_us), step=step)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
