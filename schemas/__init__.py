"""Avro schemas of kafka-cdp (the wire contract) and their codec.

Schemas are the ``*.avsc`` files beside this module, shipped as package data. Every schema
carries ``format_version`` and lives in the ``io.kcdp.v1`` namespace; see docs/FORMAT.md.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import fastavro

FORMAT_VERSION = 1

#: short name -> file name of every schema the project writes.
SCHEMA_FILES: dict[str, str] = {
    "WriteEvent": "write_event.avsc",
    "WindowCommitted": "window_committed.avsc",
    "DeadLetter": "dead_letter.avsc",
    "Extent": "extent.avsc",
    "WriteLogRecord": "write_log_record.avsc",
}


def schema_json(name: str) -> dict[str, Any]:
    """The schema ``name`` (a key of :data:`SCHEMA_FILES`) as a JSON object."""
    text = resources.files(__name__).joinpath(SCHEMA_FILES[name]).read_text("utf-8")
    parsed: dict[str, Any] = json.loads(text)
    return parsed


@functools.cache
def load_schema(name: str) -> Any:
    """The parsed (fastavro) schema ``name``; cached."""
    return fastavro.parse_schema(schema_json(name))
