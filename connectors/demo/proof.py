"""Proofs that a restored image is the volume it claims to be: byte equality with a model,
a clean ext4 check, and file checksums read through a read-only loop mount."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from connectors.errors import ExternalToolError

CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def first_difference(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> int | None:
    """Offset of the first differing byte of two files (length counts), or None if equal."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        pos = 0
        while True:
            ba, bb = fa.read(CHUNK), fb.read(CHUNK)
            if ba != bb:
                n = min(len(ba), len(bb))
                for i in range(n):
                    if ba[i] != bb[i]:
                        return pos + i
                return pos + n
            if not ba:
                return None
            pos += len(ba)


def run_tool(args: list[str], *, check: bool = True, timeout: float = 120) -> str:
    """Run an external program; a missing program or failure is an ExternalToolError."""
    if shutil.which(args[0]) is None:
        raise ExternalToolError(f"{args[0]} is not installed (needed for: {' '.join(args)})")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise ExternalToolError(
            f"{' '.join(args)} exited with {proc.returncode}: {proc.stderr.strip()[-500:]}"
        )
    return proc.stdout


def fsck_clean(image: str | os.PathLike[str]) -> tuple[bool, str]:
    """``e2fsck -fn`` on an image: (clean?, last lines of its report). Never modifies it."""
    if shutil.which("e2fsck") is None:
        raise ExternalToolError("e2fsck is not installed (package e2fsprogs)")
    proc = subprocess.run(
        ["e2fsck", "-fn", str(image)], capture_output=True, text=True, timeout=300, check=False
    )
    out = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, "\n".join(out[-3:])


@contextlib.contextmanager
def mounted_readonly(image: str | os.PathLike[str]) -> Iterator[Path]:
    """Mount an ext4 image read-only through a loop device; always unmounts and detaches."""
    mnt = Path(tempfile.mkdtemp(prefix="kcdp-ro-"))
    loop = run_tool(["losetup", "--find", "--show", "--read-only", str(image)]).strip()
    try:
        run_tool(["mount", "-t", "ext4", "-o", "ro,noload", loop, str(mnt)])
        try:
            yield mnt
        finally:
            run_tool(["umount", str(mnt)], check=False)
    finally:
        run_tool(["losetup", "-d", loop], check=False)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def tree_checksums(root: str | os.PathLike[str]) -> dict[str, str]:
    """sha256 of every regular file below ``root``, keyed by relative path."""
    base = Path(root)
    out: dict[str, str] = {}
    for path in sorted(base.rglob("*")):
        if path.is_file() and not path.is_symlink() and "lost+found" not in path.parts:
            out[str(path.relative_to(base))] = file_sha256(path)
    return out


@dataclass
class Proof:
    """What was checked about one restored point, and how it came out."""

    label: str
    bytes_equal: bool = False
    first_diff: int | None = None
    fsck_ok: bool | None = None
    fsck_report: str = ""
    files_ok: bool | None = None
    files_checked: int = 0
    mismatched: list[str] = field(default_factory=list)

    @property
    def proven(self) -> bool:
        return self.bytes_equal and self.fsck_ok is not False and self.files_ok is not False


def prove_image(
    label: str,
    restored: str | os.PathLike[str],
    model: str | os.PathLike[str],
    *,
    expected_files: dict[str, str] | None = None,
) -> Proof:
    """Compare ``restored`` with ``model`` byte for byte; with ``expected_files`` also run
    fsck and compare file checksums through a read-only mount."""
    proof = Proof(label)
    proof.first_diff = first_difference(restored, model)
    proof.bytes_equal = proof.first_diff is None
    if expected_files is not None:
        proof.fsck_ok, proof.fsck_report = fsck_clean(restored)
        with mounted_readonly(restored) as mnt:
            found = tree_checksums(mnt)
        proof.files_checked = len(expected_files)
        proof.mismatched = sorted(
            p for p in set(expected_files) | set(found) if expected_files.get(p) != found.get(p)
        )
        proof.files_ok = not proof.mismatched
    return proof
