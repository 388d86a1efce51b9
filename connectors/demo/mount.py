"""Put a real filesystem on an intercepted NBD export without a kernel NBD client:
``nbdfuse`` exposes the export as a file, a loop device turns it into a block device.

:func:`fuse_problem` says, in one sentence, why this machine cannot do it (or None).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from connectors.demo.proof import run_tool
from connectors.errors import ExternalToolError

TOOLS = ("nbdfuse", "fusermount3", "losetup", "mkfs.ext4", "mount", "umount", "fsfreeze")


def fuse_problem() -> str | None:
    """Why a filesystem cannot be mounted on the export here, or None when it can."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return (
            f"missing programs: {', '.join(missing)} (Debian: nbdfuse fuse3 util-linux e2fsprogs)"
        )
    if os.geteuid() != 0:
        return "loop devices and mounts need root"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE in this kernel or container)"
    if not os.path.exists("/dev/loop-control"):
        return "/dev/loop-control does not exist (no loop devices in this container)"
    return None


@dataclass
class MountedVolume:
    """An ext4 filesystem mounted on an NBD export; ``mountpoint`` is where to write."""

    mountpoint: Path
    loop: str

    def freeze(self) -> None:
        """Flush and block writes: every write so far has reached the export (and Kafka)."""
        run_tool(["fsfreeze", "--freeze", str(self.mountpoint)])

    def thaw(self) -> None:
        run_tool(["fsfreeze", "--unfreeze", str(self.mountpoint)])


@contextlib.contextmanager
def ext4_on_export(uri: str, *, label: str = "kcdp-demo") -> Iterator[MountedVolume]:
    """Format the export with ext4 and mount it; always unmounts, detaches and unmaps."""
    work = Path(tempfile.mkdtemp(prefix="kcdp-fs-"))
    fuse_dir, mnt, pidfile = work / "fuse", work / "mnt", work / "nbdfuse.pid"
    fuse_dir.mkdir()
    mnt.mkdir()
    fuse = subprocess.Popen(
        ["nbdfuse", "-P", str(pidfile), str(fuse_dir), uri],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    loop, mounted = "", False
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists():
            if fuse.poll() is not None or time.monotonic() > deadline:
                out = fuse.stdout.read().decode(errors="replace") if fuse.stdout else ""
                raise ExternalToolError(f"nbdfuse did not start: {out.strip()[-300:]}")
            time.sleep(0.05)
        loop = run_tool(["losetup", "--find", "--show", str(fuse_dir / "nbd")]).strip()
        run_tool(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                label,
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                loop,
            ]
        )
        run_tool(["mount", "-t", "ext4", loop, str(mnt)])
        mounted = True
        yield MountedVolume(mnt, loop)
    finally:
        problems = []
        if mounted:
            subprocess.run(["fsfreeze", "--unfreeze", str(mnt)], capture_output=True, check=False)
            problems.append(_undo(["umount", str(mnt)], ["umount", "--lazy", str(mnt)]))
        if loop:
            problems.append(_undo(["losetup", "-d", loop]))
        problems.append(
            _undo(["fusermount3", "-u", str(fuse_dir)], ["fusermount3", "-uz", str(fuse_dir)])
        )
        try:
            fuse.wait(30)
        except subprocess.TimeoutExpired:
            fuse.kill()
            fuse.wait()
        if not any(problems):
            shutil.rmtree(work, ignore_errors=True)
    if any(problems):
        raise ExternalToolError("; ".join(p for p in problems if p))


def _undo(cmd: list[str], fallback: list[str] | None = None) -> str:
    """Run a clean-up command (then ``fallback`` if it fails); '' or what went wrong."""
    first = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if first.returncode == 0:
        return ""
    if fallback is not None:
        second = subprocess.run(fallback, capture_output=True, text=True, check=False)
        if second.returncode == 0:
            return ""
    return f"{' '.join(cmd)} failed: {first.stderr.strip()}"
