"""The intercept's control socket: a unix stream socket at ``<backing>.kcdp.sock``.

Protocol (docs/FORMAT.md, "Control socket"): the client sends one UTF-8 line, the
intercept answers one line and closes the connection.

* ``bookmark NAME`` -> ``ok OFFSET`` (the Kafka offset of the BOOKMARK event)
* ``status`` -> ``ok {"volume":…, "group":…, "topic":…, "session":…, "sequence":…}``
* anything that fails -> ``error MESSAGE``
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from connectors.errors import KcdpError, VolumeError

log = logging.getLogger("kcdp.intercept")

#: Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107
MAX_LINE = 4096


def socket_path(backing: str | os.PathLike[str]) -> Path:
    """The control socket of the volume backed by ``backing``."""
    return Path(f"{os.fspath(backing)}.kcdp.sock")


def request(path: str | os.PathLike[str], line: str, *, timeout: float = 60.0) -> str:
    """Send one command line to the intercept at ``path``; its answer after ``ok``.

    Raises :class:`VolumeError` when no intercept listens there or it answers ``error``.
    """
    where = os.fspath(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(where)
            s.sendall(line.encode("utf-8") + b"\n")
            answer = _read_line(s)
        except (FileNotFoundError, ConnectionRefusedError):
            raise VolumeError(
                f"no intercept is running for this volume (no socket {where})"
            ) from None
        except OSError as exc:
            raise VolumeError(f"cannot talk to the intercept at {where}: {exc}") from None
    status, _, rest = answer.partition(" ")
    if status == "ok":
        return rest
    if status == "error":
        raise VolumeError(f"intercept refused {line.split(' ', 1)[0]!r}: {rest}")
    raise VolumeError(f"unexpected answer from the intercept at {where}: {answer[:200]!r}")


def _read_line(s: socket.socket) -> str:
    buf = b""
    while b"\n" not in buf and len(buf) < MAX_LINE:
        part = s.recv(MAX_LINE)
        if not part:
            break
        buf += part
    return buf.split(b"\n", 1)[0].decode("utf-8", "replace")


class ControlServer:
    """Serves ``handler(line) -> answer`` on a unix socket in a background thread.

    A live socket at ``path`` means another intercept owns the volume (VolumeError); a
    stale one is replaced. The handler's :class:`KcdpError` becomes ``error MESSAGE``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        handler: Callable[[str], str],
        *,
        link: Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.link = link
        self._handler = handler
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise VolumeError(f"control socket path too long for a unix socket: {self.path}")
        if self.path.exists():
            try:
                request(self.path, "status", timeout=2.0)
            except VolumeError:
                self.path.unlink()
            else:
                raise VolumeError(f"another intercept is serving {self.path}")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(os.fspath(self.path))
        except OSError as exc:
            self._sock.close()
            raise VolumeError(f"cannot create control socket {self.path}: {exc}") from None
        if link is not None:
            try:
                self._make_link(link)
            except BaseException:
                self._sock.close()
                self.path.unlink(missing_ok=True)
                raise
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kcdp-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving; remove the socket and the link."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    def _make_link(self, link: Path) -> None:
        """Point ``link`` at the socket, replacing a stale link, refusing a live one."""
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            try:
                request(link, "status", timeout=2.0)
            except VolumeError:
                link.unlink()
            else:
                raise VolumeError(f"another intercept already serves {link}")
        link.symlink_to(self.path.resolve())

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10.0)
                try:
                    line = _read_line(conn)
                    try:
                        answer = "ok " + self._handler(line)
                    except KcdpError as exc:
                        answer = "error " + exc.message.replace("\n", " ")
                    except Exception as exc:  # a bug in a handler must not hang the client
                        log.exception("control command %r failed", line)
                        answer = f"error internal error: {type(exc).__name__}"
                    conn.sendall(answer.encode("utf-8") + b"\n")
                except OSError as exc:
                    log.warning("control socket %s: %s", self.path, exc)
