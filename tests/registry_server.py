"""A small schema registry speaking the Confluent REST API, for tests.

No Confluent Schema Registry (a JVM service) or Karapace can be installed on these
machines, and confluent-kafka's ``mock://`` registry lives inside one process's client, so
a ``kcdp worker`` child process could not share it with the test that produces events.
:class:`RegistryServer` serves the part of the API the project's clients use over real
HTTP on 127.0.0.1, so the registry client's own code path (requests, its id cache, its
retries, its errors) runs as against a real registry:

* ``POST /subjects/{subject}/versions`` registers a schema (the same text under the same
  subject gets its existing id; ids are global, as in Confluent's registry);
* ``GET /schemas/ids/{id}`` answers the schema, or 404 with error code 40403.

:meth:`RegistryServer.stop` and :meth:`RegistryServer.start` take it down and bring it back
on the same port (an outage), keeping what it registered.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from infra.broker import free_port


class RegistryServer:
    """The registry on ``http://127.0.0.1:<port>`` (:attr:`url`); a context manager."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.schemas: dict[int, dict[str, Any]] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RegistryServer:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                registry._answer(self, "GET", None)

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                registry._answer(self, "POST", json.loads(self.rfile.read(n) or b"{}"))

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` (Avro JSON text) under ``subject``; its id."""
        body = {"schema": schema}
        with self._lock:
            known = [i for i, b in self.schemas.items() if b == body]
            schema_id = known[0] if known else len(self.schemas) + 1
            self.schemas[schema_id] = body
            ids = self.subjects.setdefault(subject, [])
            if schema_id not in ids:
                ids.append(schema_id)
            return schema_id

    def _answer(self, h: BaseHTTPRequestHandler, method: str, body: Any) -> None:
        path = urlsplit(h.path).path.strip("/").split("/")
        self.requests.append(f"{method} /{'/'.join(path)}")
        status, doc = 404, {"error_code": 404, "message": "HTTP 404 Not Found"}
        if method == "POST" and len(path) == 3 and path[0] == "subjects" and path[2] == "versions":
            if body.get("schemaType", "AVRO") != "AVRO":
                status, doc = 422, {"error_code": 42201, "message": "only Avro here"}
            else:
                status, doc = 200, {"id": self.register(unquote(path[1]), body["schema"])}
        elif method == "GET" and len(path) == 3 and path[:2] == ["schemas", "ids"]:
            with self._lock:
                found = self.schemas.get(int(path[2]))
            if found is None:
                doc = {"error_code": 40403, "message": f"Schema {path[2]} not found"}
            else:
                status, doc = 200, found
        data = json.dumps(doc).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
