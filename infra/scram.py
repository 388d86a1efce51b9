"""The server side of SASL/SCRAM (RFC 5802, RFC 7677) as Kafka speaks it.

Used by the embedded broker's secured front (:mod:`infra.gateway`): Tansu 0.6 accepts
``tansu user create`` but its storage engines keep no SCRAM credential, so an
authenticating broker of its own would know no user. Credentials are derived once per
user and mechanism; a password is never kept after :class:`ScramUsers` is built.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

#: Kafka mechanism name -> hashlib digest name.
MECHANISMS: dict[str, str] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
ITERATIONS = 4096


class ScramError(Exception):
    """The client's SCRAM messages are malformed or its proof is wrong."""


@dataclass(frozen=True, slots=True)
class Credential:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def derive(password: str, digest: str, salt: bytes, iterations: int = ITERATIONS) -> Credential:
    """StoredKey and ServerKey of ``password`` (RFC 5802 section 3)."""
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", digest)
    return Credential(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.new(digest, client_key).digest(),
        server_key=hmac.digest(salted, b"Server Key", digest),
    )


class ScramUsers:
    """Users' credentials for every mechanism of :data:`MECHANISMS`."""

    def __init__(self, passwords: Mapping[str, str]) -> None:
        self._creds = {
            (name, mech): derive(password, digest, secrets.token_bytes(16))
            for name, password in passwords.items()
            for mech, digest in MECHANISMS.items()
        }

    def get(self, name: str, mechanism: str) -> Credential | None:
        return self._creds.get((name, mechanism))


def _attrs(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise ScramError("malformed SCRAM message")
        out[key] = value
    return out


class ScramExchange:
    """One client's authentication: :meth:`first` answers client-first, :meth:`final`
    checks the proof and returns server-final; :attr:`user` is set once it succeeded."""

    def __init__(self, users: ScramUsers, mechanism: str) -> None:
        self._users = users
        self.mechanism = mechanism
        self._digest = MECHANISMS[mechanism]
        self._cred: Credential | None = None
        self._first_bare = self._server_first = self._nonce = ""
        self._gs2 = ""
        self.user: str | None = None

    def first(self, client_first: bytes) -> bytes:
        text = client_first.decode("utf-8", "strict")
        gs2_flag, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if gs2_flag not in ("n", "y") or not bare:
            raise ScramError("unsupported SCRAM channel binding")
        attrs = _attrs(bare)
        name = attrs.get("n", "").replace("=2C", ",").replace("=3D", "=")
        cnonce = attrs.get("r", "")
        if not cnonce:
            raise ScramError("SCRAM client-first has no nonce")
        self._gs2 = f"{gs2_flag},{authzid},"
        self._first_bare = bare
        self._nonce = cnonce + secrets.token_urlsafe(18)
        # An unknown user gets a made-up salt, so it cannot be told from a wrong password.
        self._cred = self._users.get(name, self.mechanism)
        self._name = name
        salt = self._cred.salt if self._cred else hashlib.sha256(name.encode()).digest()[:16]
        self._server_first = f"r={self._nonce},s={base64.b64encode(salt).decode()},i={ITERATIONS}"
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        text = client_final.decode("utf-8", "strict")
        without_proof, sep, proof_part = text.rpartition(",p=")
        attrs = _attrs(without_proof) if sep else {}
        binding = base64.b64encode(self._gs2.encode()).decode()
        if not sep or attrs.get("r") != self._nonce or attrs.get("c") != binding:
            raise ScramError("SCRAM client-final does not match the exchange")
        if self._cred is None:
            raise ScramError("invalid credentials")
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac.digest(self._cred.stored_key, auth_message, self._digest)
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise ScramError("SCRAM proof is not base64") from None
        if len(proof) != len(signature):
            raise ScramError("invalid credentials")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(
            hashlib.new(self._digest, client_key).digest(), self._cred.stored_key
        ):
            raise ScramError("invalid credentials")
        self.user = self._name
        server_sig = hmac.digest(self._cred.server_key, auth_message, self._digest)
        return b"v=" + base64.b64encode(server_sig)
