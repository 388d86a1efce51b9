"""The one error hierarchy of kafka-cdp.

Every error the project raises on purpose is a :class:`KcdpError`. Each class carries
``retriable`` (may the same call succeed if tried again later?) and ``exit_code`` (what
``kcdp`` exits with when the error reaches the command line). The exit-code table in the
README is generated from :data:`EXIT_CODES`; keep the two in step.

Messages never contain secrets: code that builds a message from configuration must pass
values through :func:`connectors.config.redact` first.
"""

from __future__ import annotations

#: Prefix of the one stderr line a child process (the nbdkit plugin) writes to report a
#: KcdpError to its launcher: ``<prefix><class name>: <message>``.
ERROR_LINE_PREFIX = "kcdp-error: "


class KcdpError(Exception):
    """Base of every kafka-cdp error."""

    retriable: bool = False
    exit_code: int = 1

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class UsageError(KcdpError):
    """The command line or a configuration value is wrong."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file, environment variable or flag holds an invalid value."""


class DecodeError(KcdpError):
    """Bytes are not a valid kafka-cdp record (garbage, truncated, unknown schema)."""

    exit_code = 3


class InvalidEventError(KcdpError):
    """A decoded event breaks a rule (offset past the volume end, negative length, ...)."""

    exit_code = 3


class StaleEventError(InvalidEventError):
    """An event repeats a sequence the volume's line already passed (a duplicate)."""


class OutOfLineEventError(InvalidEventError):
    """An event was held in quarantine and judged not to belong to the volume's line
    (docs/FORMAT.md "Quarantine")."""


class FencedSessionError(InvalidEventError):
    """An event of a session fenced out of the volume's history (a stale second intercept,
    or a session a newer one superseded)."""


class StoreError(KcdpError):
    """The object store failed. Network and server faults are retriable."""

    exit_code = 4


class ObjectNotFoundError(StoreError):
    """The object store has no object under the key."""


class BrokerError(KcdpError):
    """Kafka failed or is unreachable."""

    exit_code = 5
    retriable = True


class DeliveryError(BrokerError):
    """Kafka did not acknowledge an event within the bounded time; it may not be durable."""


class RegistryError(BrokerError):
    """The schema registry could not answer (unreachable, timed out, a server error):
    retriable. A refusal that waiting does not cure (credentials, permissions) is raised
    with ``retriable=False``. Never a verdict on a record: an id the registry answers it
    does not know is a :class:`DecodeError` instead."""


class IntegrityError(KcdpError):
    """Stored data does not match its recorded digest or structure (corruption)."""

    exit_code = 6


class ExportReadError(IntegrityError):
    """An export could not serve a read: the object it needs is missing or corrupt (the
    client gets EIO)."""


class GapError(KcdpError):
    """The history has a hole (missing sequence, deleted offsets, missing object)."""

    exit_code = 7


class NotRestorableError(KcdpError):
    """The requested restore point does not exist or cannot be reached."""

    exit_code = 8


class VolumeError(KcdpError):
    """A protected volume or its backing file cannot be used as asked."""

    exit_code = 9


class ExternalToolError(KcdpError):
    """A required external program (nbdkit, qemu-img, ...) is missing or failed."""

    exit_code = 10


class EncryptionKeyError(KcdpError):
    """The store's encryption and the keys given do not match: a sealed store opened
    without a key, an object sealed by a key the keyring lacks, or a key given for a store
    created without encryption (docs/FORMAT.md "Encryption")."""

    exit_code = 11


class OwnershipError(KcdpError):
    """Another agent stored windows of a volume this agent was about to store: it lost the
    volume's partition (paused past its session timeout, say) and must not fork the chain
    (docs/FORMAT.md "Ordering invariants")."""

    exit_code = 12


#: exit code -> meaning, for ``kcdp`` and the README table. 0 is success, 130 is Ctrl-C.
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected internal error (a bug: please report it with the log)",
    2: "usage or configuration error",
    3: "undecodable or invalid event",
    4: "object store error",
    5: "Kafka broker error or delivery not acknowledged",
    6: "integrity error: stored data does not match its digest",
    7: "gap in the protected history",
    8: "restore point not found or not restorable",
    9: "volume or backing file error",
    10: "external tool missing or failed",
    11: "encryption key missing, unknown or not for this store",
    12: "another agent stores this volume's windows (this worker lost its partition)",
    130: "interrupted",
}
