"""A move for the in-place crash test: ``python -m tests.fault.inplace_child URL VOLUME
IMAGE TARGET AT`` moves IMAGE in place to point TARGET and SIGKILLs itself before its
``AT``-th range write (exit 0 if it finishes first)."""

from __future__ import annotations

import os
import signal
import sys

from connectors.restore.catalog import Catalog
from connectors.restore.inplace import move_in_place
from connectors.store import open_store


def main(argv: list[str]) -> int:
    url, volume, image, target, at = argv
    writes = 0

    def step() -> None:
        nonlocal writes
        writes += 1
        if writes == int(at):
            os.kill(os.getpid(), signal.SIGKILL)

    store = open_store(url)
    move_in_place(store, Catalog(store, volume), image, int(target), step=step)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
