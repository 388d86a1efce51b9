"""S3 (AWS, MinIO, moto) store through the ``minio`` client.

Credentials come from the minio providers chain, in order: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``), ``MINIO_ACCESS_KEY`` /
``MINIO_SECRET_KEY``, the AWS shared credentials file (``~/.aws/credentials``,
``AWS_PROFILE``), the MinIO client config (``~/.mc/config.json``). They are never taken
from the URL, and the secret parts are registered for redaction as they are read.

With ``secure=True`` (HTTPS) the server's certificate is checked against, in order: the
PEM bundle ``ca`` (the URL's ``ca=PATH``: only that bundle is trusted), else the bundle
named by ``SSL_CERT_FILE``, else certifi's bundle plus the system's default CA store. The
host name is always checked. A bundle that cannot be read is a ``ConfigError``.

The HTTP client does no retries of its own (that is :mod:`connectors.store.retry`'s job):
connection errors, timeouts, 5xx and throttling become ``StoreError(retriable=True)``;
access denied, a missing bucket or bad credentials become ``StoreError(retriable=False)``,
and so do TLS failures no retry cures: a certificate not signed by a trusted CA (or not
for the endpoint's name), and a TLS handshake answered in plaintext (``secure=true``
against an HTTP endpoint).
"""

from __future__ import annotations

import datetime
import io
import os
import ssl
from collections.abc import Iterator
from typing import Any, NoReturn

import certifi
import urllib3
from minio import Minio
from minio.credentials.providers import (
    AWSConfigProvider,
    ChainedProvider,
    EnvAWSProvider,
    EnvMinioProvider,
    MinioClientConfigProvider,
)
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name
from urllib3.util.ssl_match_hostname import CertificateError

from connectors.config import register_secret
from connectors.errors import ConfigError, ObjectNotFoundError, StoreError
from connectors.store.base import ObjectInfo
from connectors.store.validate import check_key, check_prefix, check_range

#: S3's smallest multipart part (every part but the last must be at least this big).
MIN_PART_SIZE = 5 * 1024 * 1024
#: Default multipart threshold: larger objects are uploaded in parts of this size.
DEFAULT_MULTIPART_THRESHOLD = 16 * 1024 * 1024

_RETRIABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "NoSuchObject"})
#: OpenSSL reasons of a handshake the server answered with something that is not TLS.
_NOT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "HTTP_REQUEST",
    }
)


def credentials_chain() -> ChainedProvider:
    """The providers consulted, in order, for S3 credentials."""
    return ChainedProvider(
        [EnvAWSProvider(), EnvMinioProvider(), AWSConfigProvider(), MinioClientConfigProvider()]
    )


def tls_context(ca: str | None = None) -> ssl.SSLContext:
    """The client TLS context for an S3 endpoint: trusts ``ca`` (a PEM bundle) only, else
    ``SSL_CERT_FILE``, else certifi's bundle and the system's; checks the host name.
    An unreadable or empty bundle is a :class:`ConfigError`."""
    if ca:
        return _context_from(ca, "ca= of the store URL")
    env = os.environ.get("SSL_CERT_FILE")
    if env:
        return _context_from(env, "SSL_CERT_FILE")
    ctx = ssl.create_default_context(cafile=certifi.where())
    ctx.load_default_certs()
    return ctx


def _context_from(path: str, source: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"the CA bundle {path} ({source}) holds no PEM certificate: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the CA bundle {path} ({source}): {exc.strerror or exc}"
        ) from None


def tls_problem(exc: BaseException, endpoint: str) -> str | None:
    """Why a TLS handshake with ``endpoint`` failed for good (an untrusted certificate,
    a plaintext server), or None when ``exc`` is not such a failure."""
    if not isinstance(exc, urllib3.exceptions.SSLError):
        return None
    inner = exc.args[0] if exc.args else exc.__context__
    if isinstance(inner, ssl.SSLCertVerificationError | CertificateError):
        why = getattr(inner, "verify_message", None) or str(inner)
        return (
            f"the TLS certificate of {endpoint} is not trusted ({why}); check ca= in the "
            "store URL or SSL_CERT_FILE (the CA bundle that signed the endpoint's certificate)"
        )
    if isinstance(inner, ssl.SSLError) and inner.reason in _NOT_TLS_REASONS:
        return (
            f"{endpoint} does not answer TLS ({inner.reason}): a plaintext endpoint? "
            "use secure=false or the endpoint's HTTPS port"
        )
    return None


class S3Store:
    """:class:`~connectors.store.base.ObjectStore` in ``bucket`` under ``prefix``.

    Keyword configuration (defaults): ``endpoint`` (``s3.amazonaws.com``), ``secure``
    (True: HTTPS), ``region`` (None: asked from the server), ``multipart_threshold``
    (16 MiB, at least 5 MiB: objects up to it go in one PUT, larger ones as a multipart
    upload in parts of that size), ``connect_timeout`` (10 s), ``read_timeout`` (60 s),
    ``create_bucket`` (False: create the bucket if it does not exist), ``ca`` (None: the
    PEM CA bundle to trust for HTTPS; see :func:`tls_context` for the default order).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str = "s3.amazonaws.com",
        secure: bool = True,
        region: str | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        create_bucket: bool = False,
        ca: str | None = None,
        url: str | None = None,
    ) -> None:
        if ca and not secure:
            raise ConfigError("ca= names a CA bundle for HTTPS, but the store URL has secure=false")
        if multipart_threshold < MIN_PART_SIZE:
            raise ConfigError(
                f"multipart_threshold must be at least {MIN_PART_SIZE} bytes (S3's minimum "
                f"part size), got {multipart_threshold}"
            )
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as exc:
            raise ConfigError(f"invalid S3 bucket name {bucket!r}: {exc}") from None
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_key(prefix)
            except StoreError as exc:
                raise ConfigError(f"invalid S3 prefix: {exc}") from None
        self.bucket = bucket
        self.prefix = prefix + "/" if prefix else ""
        self.multipart_threshold = multipart_threshold
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        scheme = "https" if secure else "http"
        self.url = url or (
            f"s3://{bucket}/{prefix}?endpoint={endpoint}&secure={str(secure).lower()}"
            + (f"&ca={ca}" if ca else "")
        )
        provider = credentials_chain()
        try:
            creds = provider.retrieve()
        except ValueError:
            raise ConfigError(
                "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or MINIO_ACCESS_KEY/MINIO_SECRET_KEY, or ~/.aws/credentials)"
            ) from None
        register_secret(creds.secret_key)
        if creds.session_token:
            register_secret(creds.session_token)
        tls: dict[str, Any] = {"ssl_context": tls_context(ca)} if secure else {}
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=False,
            maxsize=16,
            **tls,
        )
        self._http = http
        self.endpoint = endpoint
        self.secure = secure
        try:
            self._client = Minio(
                endpoint, secure=secure, region=region, http_client=http, credentials=provider
            )
        except ValueError as exc:
            raise ConfigError(f"invalid S3 endpoint {scheme}://{endpoint}: {exc}") from None
        if create_bucket:
            self._ensure_bucket(region)

    def _ensure_bucket(self, region: str | None) -> None:
        try:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket, location=region)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                self._raise(exc, "create bucket", "")
        except Exception as exc:
            self._raise(exc, "create bucket", "")

    # -- helpers -----------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _raise(self, exc: BaseException, op: str, key: str) -> NoReturn:
        """Translate a minio/urllib3 failure into the project's errors."""
        where = f"{self.url}: {op} {key!r}" if key else f"{self.url}: {op}"
        problem = tls_problem(exc, self.endpoint)
        if problem is not None:
            raise StoreError(f"{where} failed: {problem}", retriable=False) from None
        if isinstance(exc, S3Error):
            if exc.code in _MISSING_KEY_CODES:
                raise ObjectNotFoundError(f"{self.url}: no object {key!r}") from None
            status = exc.response.status if exc.response is not None else 0
            retriable = exc.code in _RETRIABLE_CODES or status >= 500 or status == 429
            hint = ""
            if exc.code == "NoSuchBucket":
                hint = f" (bucket {self.bucket!r} does not exist)"
            elif exc.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                hint = " (check the S3 credentials and the bucket policy)"
            raise StoreError(f"{where} failed: {exc.code}{hint}", retriable=retriable) from None
        if isinstance(exc, ServerError):
            raise StoreError(
                f"{where} failed: server error HTTP {exc.status_code}", retriable=True
            ) from None
        if isinstance(exc, InvalidResponseError):
            status = getattr(exc, "_code", 0) or 0
            retriable = status >= 500 or status == 429 or status == 0
            raise StoreError(
                f"{where} failed: invalid response (HTTP {status})", retriable=retriable
            ) from None
        if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
            raise StoreError(
                f"{where} failed: cannot reach {self.endpoint}: {type(exc).__name__}",
                retriable=True,
            ) from None
        if isinstance(exc, MinioException | ValueError):
            raise StoreError(f"{where} failed: {exc}", retriable=False) from None
        raise exc

    # -- protocol ----------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        """One PUT up to ``multipart_threshold`` bytes, a multipart upload above."""
        name = self._name(key)
        size = len(data)
        part_size = (
            max(MIN_PART_SIZE, size)
            if size <= self.multipart_threshold
            else (self.multipart_threshold)
        )
        try:
            self._client.put_object(self.bucket, name, io.BytesIO(data), size, part_size=part_size)
        except Exception as exc:
            self._raise(exc, "put", key)

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        name = self._name(key)
        check_range(start, length)
        if length == 0:
            self.stat(key)
            return b""
        response: Any = None
        try:
            response = self._client.get_object(self.bucket, name, offset=start, length=length or 0)
            return bytes(response.read())
        except S3Error as exc:
            if exc.code == "InvalidRange":
                self.stat(key)
                return b""
            self._raise(exc, "get", key)
        except Exception as exc:
            self._raise(exc, "get", key)
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def stat(self, key: str) -> ObjectInfo:
        name = self._name(key)
        try:
            st = self._client.stat_object(self.bucket, name)
        except Exception as exc:
            self._raise(exc, "stat", key)
        return ObjectInfo(key, int(st.size or 0), _micros(st.last_modified))

    def delete(self, key: str) -> None:
        """Remove ``key``; S3 itself treats a missing key as success."""
        name = self._name(key)
        try:
            self._client.remove_object(self.bucket, name)
        except Exception as exc:
            self._raise(exc, "delete", key)

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        check_prefix(prefix, start_after)
        return self._list(prefix, start_after)

    def _list(self, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
        cut = len(self.prefix)
        after = self.prefix + start_after if start_after is not None else None
        try:
            for obj in self._client.list_objects(
                self.bucket, prefix=self.prefix + prefix, recursive=True, start_after=after
            ):
                name = obj.object_name or ""
                if obj.is_dir or not name.startswith(self.prefix):
                    continue
                yield ObjectInfo(name[cut:], int(obj.size or 0), _micros(obj.last_modified))
        except Exception as exc:
            self._raise(exc, "list", prefix)

    def close(self) -> None:
        """Release pooled HTTP connections."""
        self._http.clear()


def _micros(when: datetime.datetime | None) -> int:
    """µs since the epoch of an S3 ``LastModified`` (0 when the server gave none)."""
    return 0 if when is None else int(when.timestamp() * 1_000_000)
