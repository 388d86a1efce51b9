"""Finding the helper processes a command started (nbdkit, nbdfuse) by their command lines."""

from __future__ import annotations

import os
from pathlib import Path


def processes(names: tuple[str, ...], needle: str | os.PathLike[str]) -> list[int]:
    """Pids of running processes whose program's base name is one of ``names`` and whose
    command line contains ``needle`` (a socket or a state directory)."""
    want = {n.encode() for n in names}
    text = os.fspath(needle).encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd[0].rsplit(b"/", 1)[-1] in want and text in b" ".join(cmd):
            found.append(int(pid))
    return found
