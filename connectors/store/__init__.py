"""Object stores: ``open_store(url)`` picks the backend by the URL's scheme.

URLs:

* ``file://DIR`` — a directory (absolute, ``~``-relative or relative to the working
  directory); created if missing. See :mod:`connectors.store.file`.
* ``s3://BUCKET[/PREFIX][?endpoint=HOST:PORT&secure=false&region=R&create_bucket=true
  &multipart_threshold=BYTES&ca=PATH]`` — S3 or MinIO; without ``endpoint`` AWS
  (``s3.amazonaws.com``, TLS). ``ca`` is a PEM CA bundle to trust for the endpoint's
  certificate (default: ``SSL_CERT_FILE``, else certifi's and the system's CAs).
  Credentials never go in the URL. See :mod:`connectors.store.s3`.
* ``memory://NAME`` — an in-process store. Within one :class:`StoreRegistry` (by default
  the process-wide :data:`MEMORY_STORES`) the same NAME gives the same store, so a CLI call
  and a test in one process can share it; ``memory://`` alone gives a new private store.

``key_file`` names the encryption key file of a sealed store (docs/FORMAT.md
"Encryption", :mod:`connectors.store.sealed`): opening is free (no request), a sealed
store applies the marker rules before its first operation, and ``keys_now=True`` applies
them at once, refusing with :class:`connectors.errors.EncryptionKeyError` a sealed store
opened without a key or a key for a store created without encryption.
``retry=True`` (the default) wraps the backend in :class:`RetryingStore`; ``timeout``
bounds each network connect and read of a remote backend, in seconds (None: the backend's
defaults, 10 s connect and 60 s read for S3); local backends ignore it.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from connectors.errors import ConfigError
from connectors.store.base import ObjectInfo, ObjectStore
from connectors.store.file import FileStore
from connectors.store.keyring import load_key_file
from connectors.store.memory import MemoryStore
from connectors.store.retry import RetryingStore
from connectors.store.sealed import SealedStore, check_keys

if TYPE_CHECKING:  # imported when an s3:// store is opened (the minio client is heavy)
    from connectors.store.s3 import S3Store

__all__ = [
    "MEMORY_STORES",
    "FileStore",
    "MemoryStore",
    "ObjectInfo",
    "ObjectStore",
    "RetryingStore",
    "StoreRegistry",
    "open_store",
    "store_key_file",
]

_S3_PARAMS = ("endpoint", "secure", "region", "create_bucket", "multipart_threshold", "ca")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class StoreRegistry:
    """Named :class:`MemoryStore` instances: one store per name, created on first use."""

    def __init__(self) -> None:
        self._stores: dict[str, MemoryStore] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> MemoryStore:
        with self._lock:
            store = self._stores.get(name)
            if store is None:
                store = self._stores[name] = MemoryStore(f"memory://{name}")
            return store


#: The process-wide registry behind ``memory://NAME`` URLs.
MEMORY_STORES = StoreRegistry()


def open_store(
    url: str,
    *,
    retry: bool = True,
    timeout: float | None = None,
    memory_stores: StoreRegistry | None = None,
    key_file: str | None = None,
    keys_now: bool = False,
) -> ObjectStore:
    """Open the store named by ``url``, sealed by ``key_file`` if given; raises
    :class:`ConfigError` for a bad URL or key file. With ``keys_now`` the encryption
    marker rules are applied at once (a request to the store; EncryptionKeyError when the
    keys do not fit it): commands do, before they write any output."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"invalid store URL {url!r}: expected file://DIR, s3://BUCKET[/PREFIX] or memory://NAME"
        )
    scheme = url.split("://", 1)[0].lower()
    store: ObjectStore
    if scheme == "file":
        store = _open_file(url)
    elif scheme == "s3":
        store = _open_s3(url, timeout)
    elif scheme == "memory":
        name = url.split("://", 1)[1]
        if "/" in name or "?" in name:
            raise ConfigError(f"invalid store URL {url!r}: memory://NAME takes a plain name")
        store = (memory_stores or MEMORY_STORES).get(name) if name else MemoryStore()
    else:
        raise ConfigError(
            f"unknown store URL scheme {scheme!r} in {url!r}: use file://, s3:// or memory://"
        )
    store = RetryingStore(store) if retry else store
    if key_file:
        store = SealedStore(store, load_key_file(key_file))
    if keys_now:
        try:
            check_keys(store)
        except BaseException:
            store.close()
            raise
    return store


def store_key_file(store: ObjectStore) -> str | None:
    """The key file a store was opened with (None: unsealed), to open it again elsewhere."""
    keyring = getattr(store, "keyring", None)
    return str(keyring.path) if keyring is not None else None


def _open_file(url: str) -> FileStore:
    path = url.split("://", 1)[1]
    if not path:
        raise ConfigError(f"invalid store URL {url!r}: file:// needs a directory")
    if "?" in path or "#" in path:
        raise ConfigError(f"invalid store URL {url!r}: file:// takes no query or fragment")
    return FileStore(path, url=url)


def _flag(url: str, name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"invalid store URL {url!r}: {name} must be true or false, got {value!r}")


def _ca_path(url: str, value: str | None) -> str | None:
    """The URL's ``ca=`` (``~`` expanded); given empty, an error."""
    if value is None:
        return None
    if not value:
        raise ConfigError(f"invalid store URL {url!r}: ca must be the path of a PEM CA bundle")
    return os.path.expanduser(value)


def _open_s3(url: str, timeout: float | None) -> S3Store:
    from connectors.store.s3 import S3Store

    try:
        parts = urlsplit(url)
        params = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ConfigError(f"invalid store URL {url!r}: {exc}") from None
    if "@" in parts.netloc:
        raise ConfigError(
            "invalid store URL: credentials must not be in an s3:// URL; set "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or use ~/.aws/credentials"
        )
    bucket = parts.netloc
    if not bucket:
        raise ConfigError(f"invalid store URL {url!r}: s3:// needs a bucket")
    if parts.fragment:
        raise ConfigError(f"invalid store URL {url!r}: s3:// takes no fragment")
    opts: dict[str, str] = {}
    for key, value in params:
        if key not in _S3_PARAMS:
            raise ConfigError(
                f"invalid store URL {url!r}: unknown parameter {key!r} "
                f"(known: {', '.join(_S3_PARAMS)})"
            )
        if key in opts:
            raise ConfigError(f"invalid store URL {url!r}: parameter {key!r} given twice")
        opts[key] = value
    endpoint = opts.get("endpoint", "s3.amazonaws.com")
    if not endpoint or "/" in endpoint:
        raise ConfigError(f"invalid store URL {url!r}: endpoint must be HOST[:PORT]")
    threshold = opts.get("multipart_threshold")
    if threshold is not None and not threshold.isdigit():
        raise ConfigError(f"invalid store URL {url!r}: multipart_threshold must be bytes")
    prefix = parts.path.strip("/")
    if "//" in prefix:
        raise ConfigError(f"invalid store URL {url!r}: prefix has an empty segment")
    extra: dict[str, Any] = {}
    if threshold is not None:
        extra["multipart_threshold"] = int(threshold)
    if timeout is not None:
        if timeout <= 0:
            raise ConfigError(f"store timeout must be positive, got {timeout}")
        extra["connect_timeout"] = extra["read_timeout"] = timeout
    return S3Store(
        bucket,
        prefix,
        endpoint=endpoint,
        secure=_flag(url, "secure", opts.get("secure", "true")),
        region=opts.get("region") or None,
        create_bucket=_flag(url, "create_bucket", opts.get("create_bucket", "false")),
        ca=_ca_path(url, opts.get("ca")),
        url=url,
        **extra,
    )
