"""Directory-backed store for ``file://DIR`` URLs: one file per key, atomic and durable.

``put`` writes a temp file (name ending in :data:`~connectors.store.validate.TEMP_SUFFIX`)
in the key's directory, fsyncs it, renames it over the key and fsyncs the directory, so a
reader sees the old or the whole new object and a returned ``put`` survives a crash.
Leftover temp files from a crash are never listed. ``list`` walks only the directories
that can hold matching keys, in the byte order of full keys (``a-b`` < ``a.b`` < ``a/b``),
exactly as S3 does.

One limit S3 does not have: a key cannot also be a directory of other keys (``a/b`` and
``a/b/c`` cannot coexist); such a ``put`` raises a non-retriable ``StoreError``. The
layout in docs/FORMAT.md never does this.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from connectors.errors import ObjectNotFoundError, StoreError
from connectors.fsutil import fsync_dir
from connectors.store.base import ObjectInfo
from connectors.store.validate import TEMP_SUFFIX, check_key, check_prefix, check_range

#: How often ``put`` retries when a concurrent ``delete`` removes its directory.
_MKDIR_ATTEMPTS = 5


class FileStore:
    """:class:`~connectors.store.base.ObjectStore` in directory ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str], *, url: str | None = None) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = url or f"file://{self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.url}: cannot create store directory: {exc}") from None
        if not self.root.is_dir():
            raise StoreError(f"{self.url}: {self.root} is not a directory")

    # -- helpers -----------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _error(self, op: str, key: str, exc: OSError) -> StoreError:
        retriable = exc.errno in (errno.EIO, errno.EAGAIN, errno.EINTR, errno.ENOSPC)
        return StoreError(f"{self.url}: {op} {key!r} failed: {exc.strerror}", retriable=retriable)

    def _makedirs(self, directory: Path) -> None:
        """Create ``directory`` and its missing parents, fsyncing each new entry's parent."""
        missing: list[Path] = []
        d = directory
        while not d.is_dir():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                if not d.is_dir():
                    raise NotADirectoryError(errno.ENOTDIR, "a key is in the way", str(d)) from None
            fsync_dir(d.parent)

    # -- protocol ----------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        for attempt in range(_MKDIR_ATTEMPTS):
            try:
                self._makedirs(path.parent)
                self._write_atomic(path, data)
                return
            except FileNotFoundError:
                if attempt == _MKDIR_ATTEMPTS - 1:
                    raise StoreError(
                        f"{self.url}: put {key!r}: its directory keeps vanishing"
                    ) from None
            except (NotADirectoryError, IsADirectoryError):
                raise StoreError(
                    f"{self.url}: put {key!r}: conflicts with an existing key "
                    "(a key cannot also be a directory of keys in a file store)"
                ) from None
            except OSError as exc:
                raise self._error("put", key, exc) from None

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        check_range(start, length)
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                return fh.read(-1 if length is None else length)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(f"{self.url}: no object {key!r}") from None
        except OSError as exc:
            raise self._error("get", key, exc) from None

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"{self.url}: no object {key!r}") from None
        except OSError as exc:
            raise self._error("stat", key, exc) from None
        if not path.is_file():
            raise ObjectNotFoundError(f"{self.url}: no object {key!r}")
        return ObjectInfo(key, st.st_size, st.st_mtime_ns // 1000)

    def delete(self, key: str) -> None:
        """Remove ``key`` (missing is fine) and then its directories left empty. Not made
        durable (no directory fsync): docs/FORMAT.md "Ordering invariants (prune)" 6."""
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise self._error("delete", key, exc) from None
        d = path.parent
        while d != self.root:
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        check_prefix(prefix, start_after)
        return self._walk(self.root, "", prefix, start_after)

    def _walk(
        self, directory: Path, base: str, prefix: str, start_after: str | None
    ) -> Iterator[ObjectInfo]:
        """Yield the objects under ``directory`` (keys start with ``base``) in key order.

        Entries sort by name, with a directory's name followed by ``/``: every key under it
        starts with that string and no other entry's name extends it, so this is the byte
        order of full keys. Subtrees that cannot match prefix/start_after are skipped.
        """
        try:
            with os.scandir(directory) as it:
                entries = [(e.name + "/" if e.is_dir() else e.name, e) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._error("list", base, exc) from None
        entries.sort(key=lambda pair: pair[0])
        for name, entry in entries:
            full = base + name
            if name.endswith("/"):
                if not (full.startswith(prefix) or prefix.startswith(full)):
                    continue
                if (
                    start_after is not None
                    and full <= start_after
                    and not start_after.startswith(full)
                ):
                    continue
                yield from self._walk(Path(entry.path), full, prefix, start_after)
                continue
            if name.endswith(TEMP_SUFFIX) or not full.startswith(prefix):
                continue
            if start_after is not None and full <= start_after:
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            yield ObjectInfo(full, st.st_size, st.st_mtime_ns // 1000)

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""
