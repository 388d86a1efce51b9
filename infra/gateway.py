"""The SASL/SCRAM front of the embedded broker.

Tansu 0.6 authenticates SCRAM clients (``--authentication``) but none of its storage
engines keeps a credential (``tansu user create`` is accepted and forgotten, also on the
persistent ``s3://`` engine), so ``kcdp broker --sasl-users`` runs this gateway in front
of a loopback Tansu that advertises the public listener. TLS, when asked for, is
terminated before it by stunnel (:mod:`infra.stunnel`).

Per connection, the Kafka SASL exchange: ``ApiVersions`` is forwarded, ``SaslHandshake``
(v1) and ``SaslAuthenticate`` (v0-v2) are answered here with SCRAM-SHA-256/512, any
other request before a successful authentication closes the connection. After that the
bytes are piped both ways unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Mapping

from infra.scram import MECHANISMS, ScramError, ScramExchange, ScramUsers

log = logging.getLogger("kcdp.gateway")

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
#: Kafka error codes the gateway answers with.
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, UNSUPPORTED_VERSION = 33, 34, 35
SASL_AUTHENTICATION_FAILED = 58
#: Largest request accepted before authentication.
MAX_AUTH_FRAME = 1 << 20
PIPE_CHUNK = 1 << 18


class _RefusedError(Exception):
    """The client must be disconnected (bad or unauthenticated request)."""


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise _RefusedError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


class _Session:
    """One client connection's SASL state."""

    def __init__(self, users: ScramUsers) -> None:
        self.users = users
        self.exchange: ScramExchange | None = None
        self.step = 0

    def handshake(self, version: int, body: bytes) -> bytes:
        if version != 1:
            raise _RefusedError("only SaslHandshake v1 is served")
        (size,) = struct.unpack_from(">h", body)
        mechanism = body[2 : 2 + size].decode()
        names = list(MECHANISMS)
        error = 0 if mechanism in MECHANISMS else UNSUPPORTED_SASL_MECHANISM
        if not error:
            self.exchange = ScramExchange(self.users, mechanism)
        out = struct.pack(">hi", error, len(names)) + b"".join(_string(n) for n in names)
        if error:
            raise _RefusedError(out)
        return out

    def authenticate(self, version: int, body: bytes) -> tuple[bytes, bool]:
        """The response body and whether the exchange finished successfully."""
        if self.exchange is None or version > 2:
            raise _RefusedError("SaslAuthenticate before SaslHandshake")
        if version == 2:
            size, pos = _read_uvarint(body, 0)
            token = body[pos : pos + size - 1]
        else:
            (size,) = struct.unpack_from(">i", body)
            token = body[4 : 4 + size]
        try:
            reply = self.exchange.first(token) if self.step == 0 else self.exchange.final(token)
            error, message = 0, None
        except (ScramError, UnicodeDecodeError):
            reply, error = b"", SASL_AUTHENTICATION_FAILED
            message = (
                "Authentication failed during authentication due to invalid credentials "
                f"with SASL mechanism {self.exchange.mechanism}"
            )
        self.step += 1
        if version == 2:
            msg = b"\x00" if message is None else _uvarint(len(message) + 1) + message.encode()
            out = struct.pack(">h", error) + msg + _uvarint(len(reply) + 1) + reply
            out += struct.pack(">q", 0) + b"\x00"
        else:
            out = struct.pack(">h", error) + _string(message)
            out += struct.pack(">i", len(reply)) + reply
            if version == 1:
                out += struct.pack(">q", 0)
        if error:
            raise _RefusedError(out)
        return out, self.step == 2


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    if not 0 < size <= MAX_AUTH_FRAME:
        raise _RefusedError("request too large before authentication")
    return await reader.readexactly(size)


def _frame(correlation: int, body: bytes, *, flexible: bool = False) -> bytes:
    payload = struct.pack(">i", correlation) + (b"\x00" if flexible else b"") + body
    return struct.pack(">i", len(payload)) + payload


class Gateway:
    """Listens on ``host:port`` (0: a free port) and forwards to ``upstream``."""

    def __init__(
        self,
        *,
        upstream: tuple[str, int],
        host: str = "127.0.0.1",
        port: int = 0,
        users: Mapping[str, str] | None = None,
    ) -> None:
        self.upstream = upstream
        self.passwords = dict(users or {})  # for this process's own client only
        self.users = ScramUsers(self.passwords) if users else None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(128)
        self.host, self.port = host, int(self._sock.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="kcdp-gateway", daemon=True)
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(
                self._client,
                sock=self._sock,
            )
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    def stop(self) -> None:
        if self._thread.is_alive():

            async def close() -> None:
                if self._server is not None:
                    self._server.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._sock.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            if self.users is not None and not await self._authenticate(
                reader, writer, up_reader, up_writer
            ):
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (
            OSError,
            asyncio.IncompleteReadError,
            _RefusedError,
            struct.error,
        ) as exc:
            log.debug("gateway connection ended: %s", exc)
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        assert self.users is not None
        session = _Session(self.users)
        while True:
            frame = await _read_frame(reader)
            key, version, correlation = struct.unpack_from(">hhi", frame)
            (id_len,) = struct.unpack_from(">h", frame, 8)
            pos = 10 + max(id_len, 0)
            try:
                if key == API_VERSIONS:
                    up_writer.write(struct.pack(">i", len(frame)) + frame)
                    size = await up_reader.readexactly(4)
                    writer.write(size + await up_reader.readexactly(struct.unpack(">i", size)[0]))
                elif key == SASL_HANDSHAKE:
                    writer.write(_frame(correlation, session.handshake(version, frame[pos:])))
                elif key == SASL_AUTHENTICATE:
                    if version == 2:
                        _, pos = _read_uvarint(frame, pos)  # request header tagged fields
                    body, done = session.authenticate(version, frame[pos:])
                    writer.write(_frame(correlation, body, flexible=version == 2))
                    if done:
                        await writer.drain()
                        log.debug("authenticated %s", session.exchange and session.exchange.user)
                        return True
                else:
                    log.debug("request %d before authentication: disconnecting", key)
                    return False
                await writer.drain()
            except _RefusedError as closed:
                if closed.args and isinstance(closed.args[0], bytes):
                    flexible = key == SASL_AUTHENTICATE and version == 2
                    writer.write(_frame(correlation, closed.args[0], flexible=flexible))
                    with contextlib.suppress(OSError):
                        await writer.drain()
                log.debug("SASL exchange refused (api %d v%d)", key, version)
                return False


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(PIPE_CHUNK):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()
