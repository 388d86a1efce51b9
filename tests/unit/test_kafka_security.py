"""The one translation of Kafka security properties (connectors/kafka_security.py)."""

from __future__ import annotations

import ssl

import faust
import pytest

from connectors.errors import ConfigError
from connectors.kafka_security import KafkaSecurity


def test_plaintext_gives_no_credentials() -> None:
    sec = KafkaSecurity.from_properties({"bootstrap.servers": "b:9092", "linger.ms": "5"})
    assert sec.protocol == "PLAINTEXT" and sec.ssl_context() is None
    assert sec.faust_credentials() is None


def test_sasl_scram_becomes_faust_sasl_credentials() -> None:
    creds = KafkaSecurity.from_properties(
        {
            "security.protocol": "sasl_plaintext",
            "sasl.mechanisms": "SCRAM-SHA-256",
            "sasl.username": "u",
            "sasl.password": "p",
        }
    ).faust_credentials()
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.mechanism.value == "SCRAM-SHA-256" and creds.protocol.value == "SASL_PLAINTEXT"
    assert (creds.username, creds.password, creds.ssl_context) == ("u", "p", None)


def test_sasl_ssl_carries_a_verifying_context() -> None:
    creds = KafkaSecurity.from_properties(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "u",
            "sasl.password": "p",
        }
    ).faust_credentials()
    assert creds.protocol.value == "SASL_SSL"
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED and creds.ssl_context.check_hostname


def test_ssl_without_verification_when_asked() -> None:
    sec = KafkaSecurity.from_properties(
        {"security.protocol": "SSL", "enable.ssl.certificate.verification": "false"}
    )
    creds = sec.faust_credentials()
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.context.verify_mode == ssl.CERT_NONE and not creds.context.check_hostname


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"security.protocol": "TLS"}, "security.protocol must be one of"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI"}, "not supported"),
        ({"security.protocol": "SASL_PLAINTEXT"}, "needs sasl.username"),
        ({"ssl.certificate.location": "c.pem"}, "go together"),
        ({"ssl.keystore.location": "k.p12"}, "ssl.keystore.location"),
        ({"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"}, "TLS files"),
    ],
)
def test_what_the_worker_cannot_honour_is_a_config_error(
    props: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        KafkaSecurity.from_properties(props).ssl_context()
