"""One translation of the Kafka security properties for every client kafka-cdp runs.

The properties are librdkafka's, as given by ``-X key=value`` or the ``[kafka]`` table:
``security.protocol``, ``sasl.mechanism``, ``sasl.username``, ``sasl.password``,
``ssl.ca.location``, ``ssl.ca.pem``, ``ssl.certificate.location``, ``ssl.key.location``,
``ssl.key.password``, ``enable.ssl.certificate.verification``,
``ssl.endpoint.identification.algorithm``, ``ssl.cipher.suites``. The librdkafka clients
(producers, consumers, admin) take them unchanged; :func:`KafkaSecurity.from_properties`
turns the same mapping into what the worker's Faust/aiokafka group client needs
(:meth:`KafkaSecurity.faust_credentials`: an ``ssl.SSLContext`` and SASL credentials).
A property aiokafka cannot honour is a :class:`~connectors.errors.ConfigError`, never
silently dropped.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.config import redact_text
from connectors.errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: SASL mechanisms the worker's group client (aiokafka) speaks with a username/password.
PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: ``ssl.*`` / ``sasl.*`` properties read here, or harmless for aiokafka.
TRANSLATED = frozenset(
    {
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
        "ssl.ca.pem",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
        "ssl.cipher.suites",
        "ssl.providers",
        "ssl.engine.id",
    }
)


def _flag(conf: Mapping[str, Any], key: str, default: bool) -> bool:
    value = str(conf.get(key, default)).strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key} must be true or false, got {redact_text(value)!r}")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """The security settings of a Kafka property mapping (defaults: PLAINTEXT)."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "PLAIN"
    username: str | None = None
    password: str | None = None
    ca_location: str | None = None
    ca_pem: str | None = None
    cert_location: str | None = None
    key_location: str | None = None
    key_password: str | None = None
    verify_certificate: bool = True
    verify_hostname: bool = True
    ciphers: str | None = None

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @classmethod
    def from_properties(cls, conf: Mapping[str, Any]) -> KafkaSecurity:
        """Read and check the security properties of ``conf`` (librdkafka names)."""
        protocol = str(conf.get("security.protocol", "PLAINTEXT")).strip().upper()
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"security.protocol must be one of {', '.join(PROTOCOLS)}, "
                f"got {redact_text(protocol)!r}"
            )
        mechanism = str(conf.get("sasl.mechanism", conf.get("sasl.mechanisms", "PLAIN")))
        mechanism = mechanism.strip().upper()
        algorithm = str(conf.get("ssl.endpoint.identification.algorithm", "https")).lower()
        if algorithm not in ("https", "none", ""):
            raise ConfigError(
                f"ssl.endpoint.identification.algorithm must be https or none, got {algorithm!r}"
            )
        sec = cls(
            protocol=protocol,
            mechanism=mechanism,
            username=_opt(conf, "sasl.username"),
            password=_opt(conf, "sasl.password"),
            ca_location=_opt(conf, "ssl.ca.location"),
            ca_pem=_opt(conf, "ssl.ca.pem"),
            cert_location=_opt(conf, "ssl.certificate.location"),
            key_location=_opt(conf, "ssl.key.location"),
            key_password=_opt(conf, "ssl.key.password"),
            verify_certificate=_flag(conf, "enable.ssl.certificate.verification", True),
            verify_hostname=algorithm == "https",
            ciphers=_opt(conf, "ssl.cipher.suites"),
        )
        sec._check(conf)
        return sec

    def _check(self, conf: Mapping[str, Any]) -> None:
        if self.sasl and self.mechanism not in PASSWORD_MECHANISMS:
            raise ConfigError(
                f"sasl.mechanism {self.mechanism} is not supported by kafka-cdp's worker "
                f"(aiokafka): use one of {', '.join(PASSWORD_MECHANISMS)}"
            )
        if self.sasl and (not self.username or self.password is None):
            raise ConfigError(
                f"security.protocol={self.protocol} needs sasl.username and sasl.password"
            )
        if bool(self.cert_location) != bool(self.key_location):
            raise ConfigError("ssl.certificate.location and ssl.key.location go together")
        unknown = sorted(k for k in conf if k.startswith(("ssl.", "sasl.")) and k not in TRANSLATED)
        if unknown:
            raise ConfigError(
                f"Kafka propert{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
                "cannot be given to the worker's group client (aiokafka); supported: "
                f"{', '.join(sorted(TRANSLATED))}"
            )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context for this setting (None without TLS)."""
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            ca = None if self.ca_location == "probe" else self.ca_location
            if ca and os.path.isdir(ca):
                ctx.load_verify_locations(capath=ca)
            elif ca:
                ctx.load_verify_locations(cafile=ca)
            if self.ca_pem:
                ctx.load_verify_locations(cadata=self.ca_pem)
            if self.cert_location and self.key_location:
                ctx.load_cert_chain(self.cert_location, self.key_location, self.key_password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the Kafka TLS files: {redact_text(str(exc))}") from None
        ctx.check_hostname = self.verify_certificate and self.verify_hostname
        if not self.verify_certificate:
            ctx.verify_mode = ssl.CERT_NONE
        if self.ciphers:
            ctx.set_ciphers(self.ciphers)
        return ctx

    def faust_credentials(self) -> Any:
        """``broker_credentials`` for a Faust app: SASL or SSL credentials, or None."""
        import faust

        ctx = self.ssl_context()
        if self.sasl:
            return faust.SASLCredentials(
                username=self.username,
                password=self.password,
                ssl_context=ctx,
                mechanism=self.mechanism,
            )
        if ctx is not None:
            return faust.SSLCredentials(ctx)
        return None


def _opt(conf: Mapping[str, Any], key: str) -> str | None:
    value = conf.get(key)
    return None if value is None or value == "" else str(value)
