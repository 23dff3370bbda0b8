"""Blob stores: named byte strings in files under the data directory or in an S3 bucket.

A key is a relative path of safe characters (`blog/media/<id>/large.webp`); both stores
refuse anything that could climb out of their root. Every call that touches a disk or the
network runs in a worker thread, so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from veche.settings import Settings

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
MAX_KEY_LENGTH = 512


class BlobError(Exception):
    """A blob operation failed or was asked something it must refuse."""


class BlobNotFound(BlobError):
    """No bytes are stored under the key."""


class InvalidBlobKey(BlobError, ValueError):
    """The key is not a safe relative path."""


class BlobConfigError(BlobError, ValueError):
    """`VECHE_BLOB_URL` or the storage settings do not describe a usable store."""


def check_key(key: str) -> str:
    """The key itself if it is a safe relative path; `InvalidBlobKey` otherwise."""
    if len(key) > MAX_KEY_LENGTH or not _KEY.match(key) or ".." in key.split("/"):
        raise InvalidBlobKey(f"{key!r} is not a blob key")
    return key


def etag_of(data: bytes) -> str:
    """A strong ETag (quoted) for these bytes."""
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    size: int
    etag: str
    content_type: str


class BlobStore(Protocol):
    """What every blob backend offers."""

    name: str

    async def put(self, key: str, data: bytes, content_type: str) -> StoredBlob:
        """Store the bytes under the key, replacing any earlier ones."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes under the key; `BlobNotFound` if there are none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the key; a missing key is not an error."""
        ...

    async def exists(self, key: str) -> bool: ...

    def url(self, key: str) -> str | None:
        """Where clients fetch the blob directly, or None when it is served by the API."""
        ...

    async def check(self) -> None:
        """Raise if the store cannot be reached (readiness)."""
        ...

    async def close(self) -> None: ...


def _public_url(base: str | None, key: str) -> str | None:
    if base is None:
        return None
    return f"{base.rstrip('/')}/{quote(key)}"


class LocalBlobStore:
    """Files under one directory: written to a private temporary name, then renamed, so a
    reader sees the old bytes or the new ones, never a partial file."""

    name = "local"

    def __init__(self, root: Path, public_url: str | None = None) -> None:
        self.root = root
        self.public_url = public_url

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, draft = tempfile.mkstemp(dir=path.parent, prefix=".upload.")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            os.replace(draft, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(draft)
            raise

    async def put(self, key: str, data: bytes, content_type: str) -> StoredBlob:
        path = self._path(key)
        await asyncio.to_thread(self._write, path, data)
        return StoredBlob(key=key, size=len(data), etag=etag_of(data), content_type=content_type)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise BlobNotFound(key) from exc

    def _remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # Empty parents go too, up to the root, so deleted media leave no directories.
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._remove, self._path(key))

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    def url(self, key: str) -> str | None:
        return _public_url(self.public_url, check_key(key))

    async def check(self) -> None:
        def probe() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise BlobError(f"{self.root} is not writable")

        await asyncio.to_thread(probe)

    async def close(self) -> None:
        return None


class S3BlobStore:
    """An S3-compatible bucket (AWS, MinIO) through boto3, each call in a worker thread.

    The client is thread-safe and reused; objects live under `prefix/`.
    """

    name = "s3"

    def __init__(
        self, client: Any, bucket: str, prefix: str = "", public_url: str | None = None
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.public_url = public_url

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def put(self, key: str, data: bytes, content_type: str) -> StoredBlob:
        await asyncio.to_thread(
            self.client.put_object,
            Bucket=self.bucket,
            Key=self._object(key),
            Body=data,
            ContentType=content_type,
        )
        return StoredBlob(key=key, size=len(data), etag=etag_of(data), content_type=content_type)

    async def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        name = self._object(key)

        def read() -> bytes:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
                    raise BlobNotFound(key) from exc
                raise
            body: bytes = response["Body"].read()
            return body

        return await asyncio.to_thread(read)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(
            self.client.delete_object, Bucket=self.bucket, Key=self._object(key)
        )

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        name = self._object(key)

        def head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
                    return False
                raise
            return True

        return await asyncio.to_thread(head)

    def url(self, key: str) -> str | None:
        return _public_url(self.public_url, self._object(key))

    async def check(self) -> None:
        await asyncio.to_thread(self.client.head_bucket, Bucket=self.bucket)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def blob_store_from_settings(settings: Settings) -> BlobStore:
    """The store `VECHE_BLOB_URL` names: files under the data directory when unset."""
    storage = settings.storage
    url = settings.blob_url
    if not url:
        return LocalBlobStore(settings.data_dir / "blobs", storage.public_url)
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise BlobConfigError("VECHE_BLOB_URL file:// URLs need an absolute path")
        return LocalBlobStore(Path(parts.path), storage.public_url)
    if parts.scheme != "s3":
        raise BlobConfigError(
            f"VECHE_BLOB_URL must be s3://bucket/prefix or file:///path, not {parts.scheme}://"
        )
    if not parts.netloc:
        raise BlobConfigError("VECHE_BLOB_URL s3:// URLs need a bucket name")
    import boto3
    from botocore.config import Config

    secret = storage.s3_secret_access_key
    client = boto3.client(
        "s3",
        endpoint_url=storage.s3_endpoint_url,
        region_name=storage.s3_region,
        aws_access_key_id=storage.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(
            connect_timeout=storage.s3_timeout_seconds,
            read_timeout=storage.s3_timeout_seconds,
            retries={"max_attempts": 3, "mode": "standard"},
            # Path-style works with MinIO and every S3-compatible server.
            s3={"addressing_style": "path"},
        ),
    )
    return S3BlobStore(client, parts.netloc, parts.path, storage.public_url)
