"""Logging for kafka-cdp: to stderr, secrets scrubbed from every record."""

from __future__ import annotations

import logging
import sys

from connectors.config import redact_text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with :func:`connectors.config.redact_text`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # its stream varies
    """Writes to whatever ``sys.stderr`` is at emit time (tests swap it per test)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(level: str = "INFO") -> None:
    """Send log lines to stderr with secrets redacted; idempotent."""
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "_kcdp", False):
            root.setLevel(level.upper())
            return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    handler._kcdp = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
