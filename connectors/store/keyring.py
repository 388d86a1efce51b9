"""Encryption keys of a sealed store (docs/FORMAT.md "Encryption"): the key file, the keys
derived from each master key, and a new key file.

A key file holds one ``kcdp-key-1 <base64 of 32 bytes>`` line per key; the first is the
current key (it seals new objects), every key opens what it sealed. From each master key
HKDF-SHA256 derives its id, its AES-256-GCM object key and its chunk-name MAC key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.errors import ConfigError, EncryptionKeyError

if TYPE_CHECKING:  # cryptography is imported when a key is loaded: unsealed stores skip it
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

KEY_TAG = "kcdp-key-1"
KEY_BYTES = 32
KEY_ID_BYTES = 8
_INFO_ID = b"kcdp key id v1"
_INFO_OBJECT = b"kcdp object key v1"
_INFO_NAME = b"kcdp chunk name v1"


def _derive(master: bytes, info: bytes, length: int) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)


@dataclass(frozen=True)
class Key:
    """One master key and what is derived from it. ``id`` is 16 hex digits."""

    id: str
    aead: AESGCM = field(repr=False)
    name_key: bytes = field(repr=False)

    @classmethod
    def from_master(cls, master: bytes) -> Key:
        if len(master) != KEY_BYTES:
            raise ConfigError(f"an encryption key is {KEY_BYTES} bytes, got {len(master)}")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return cls(
            id=_derive(master, _INFO_ID, KEY_ID_BYTES).hex(),
            aead=AESGCM(_derive(master, _INFO_OBJECT, KEY_BYTES)),
            name_key=_derive(master, _INFO_NAME, KEY_BYTES),
        )

    def chunk_name(self, data: bytes | memoryview) -> str:
        """The content-addressed name of ``data`` under this key: HMAC-SHA256, 64 hex."""
        return hmac.new(self.name_key, data, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Keyring:
    """The keys of a key file: ``current`` seals, every key of ``keys`` opens."""

    keys: tuple[Key, ...]
    path: str = ""

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError(f"encryption key file {self.path} holds no key")

    @property
    def current(self) -> Key:
        return self.keys[0]

    def get(self, key_id: str, *, what: str) -> Key:
        """The key with ``key_id``; :class:`EncryptionKeyError` naming ``what`` if absent."""
        for k in self.keys:
            if k.id == key_id:
                return k
        raise EncryptionKeyError(
            f"{what} is sealed by key {key_id}, which the key file "
            f"{self.path or '(given)'} does not hold (it has {', '.join(self.ids())})"
        )

    def ids(self) -> list[str]:
        return [k.id for k in self.keys]


def parse_key_file(text: str, path: str = "") -> Keyring:
    """The keyring of a key file's text; :class:`ConfigError` names the bad line (not its
    content: it may be a key)."""
    keys: list[Key] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tag, _, value = line.partition(" ")
        if tag != KEY_TAG:
            raise ConfigError(f"{path}:{n}: expected '{KEY_TAG} <base64 key>'")
        try:
            master = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{path}:{n}: the key is not valid base64") from None
        keys.append(Key.from_master(master))
    ids = [k.id for k in keys]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: the same key is listed twice")
    return Keyring(tuple(keys), path)


def load_key_file(path: str | os.PathLike[str]) -> Keyring:
    """Read a key file; warns once if others can read it; ConfigError if unusable."""
    p = Path(path)
    try:
        text = p.read_text("utf-8")
        mode = p.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read encryption key file {p}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("encryption key file %s is readable by others: chmod 600 it", p)
    return parse_key_file(text, str(p))


def generate_key_file(path: str | os.PathLike[str]) -> Key:
    """Write a new key file holding one fresh key (mode 0600); refuses to overwrite."""
    p = Path(path)
    master = secrets.token_bytes(KEY_BYTES)
    line = f"{KEY_TAG} {base64.b64encode(master).decode()}\n"
    header = "# kcdp encryption keys: the first key seals new objects, every key opens objects\n"
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{p} exists: a key file is never overwritten") from None
    except OSError as exc:
        raise ConfigError(f"cannot create key file {p}: {exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(header + line)
        f.flush()
        os.fsync(f.fileno())
    return Key.from_master(master)
