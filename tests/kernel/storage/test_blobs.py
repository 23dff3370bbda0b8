"""The blob stores: files under the data directory and an S3 bucket (moto's server),
behind the same protocol and the same tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from veche.kernel.storage import (
    BlobConfigError,
    BlobNotFound,
    BlobStore,
    InvalidBlobKey,
    LocalBlobStore,
    S3BlobStore,
    blob_store_from_settings,
    etag_of,
)
from veche.settings import Settings, StorageSettings


def s3_settings(tmp_path: Path, endpoint: str, bucket: str, **storage: object) -> Settings:
    return Settings(
        _env_file=None,
        env="test",
        data_dir=tmp_path,
        secret_key="x" * 40,
        blob_url=f"s3://{bucket}/media/prefix",
        storage=StorageSettings(
            s3_endpoint_url=endpoint,
            s3_access_key_id="testing",
            s3_secret_access_key="testing-secret",
            **storage,  # type: ignore[arg-type]
        ),
    )


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        settings = Settings(_env_file=None, env="test", data_dir=tmp_path, secret_key="x" * 40)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        settings = s3_settings(tmp_path, endpoint, bucket)
    blobs = blob_store_from_settings(settings)
    assert blobs.name == request.param
    yield blobs
    await blobs.close()


async def test_put_get_delete(store: BlobStore) -> None:
    stored = await store.put("blog/media/1/large.webp", b"RIFF-bytes", "image/webp")
    assert (stored.size, stored.etag) == (10, etag_of(b"RIFF-bytes"))
    assert await store.get("blog/media/1/large.webp") == b"RIFF-bytes"
    assert await store.exists("blog/media/1/large.webp")
    await store.put("blog/media/1/large.webp", b"new", "image/webp")
    assert await store.get("blog/media/1/large.webp") == b"new"
    await store.delete("blog/media/1/large.webp")
    assert not await store.exists("blog/media/1/large.webp")
    with pytest.raises(BlobNotFound):
        await store.get("blog/media/1/large.webp")
    await store.delete("blog/media/1/large.webp")  # deleting twice is fine
    await store.check()
    assert store.url("a/b.webp") is None  # served through the API


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "../up", "a/../b", "a//b", "a/./b", ".hidden", "a b", "a\x00b", "ü", "a/" * 300],
)
async def test_unsafe_keys_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidBlobKey):
        await store.put(key, b"x", "text/plain")
    with pytest.raises(InvalidBlobKey):
        await store.get(key)


async def test_local_files_stay_under_the_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.put("a/b/c.bin", b"x", "application/octet-stream")
    written = tmp_path / "blobs" / "a" / "b" / "c.bin"
    assert await asyncio.to_thread(written.read_bytes) == b"x"
    await store.delete("a/b/c.bin")
    # Empty directories go too, and no temporary file is left behind.
    assert await asyncio.to_thread(lambda: list((tmp_path / "blobs").iterdir())) == []


async def test_s3_objects_live_under_the_prefix(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    store = blob_store_from_settings(
        s3_settings(tmp_path, s3_endpoint, s3_bucket, public_url="https://cdn.example/")
    )
    assert isinstance(store, S3BlobStore)
    await store.put("x/y.webp", b"data", "image/webp")
    head = store.client.head_object(Bucket=s3_bucket, Key="media/prefix/x/y.webp")
    assert head["ContentType"] == "image/webp"
    assert store.url("x/y.webp") == "https://cdn.example/media/prefix/x/y.webp"
    await store.close()


async def test_s3_unreachable_bucket_fails_the_check(tmp_path: Path, s3_endpoint: str) -> None:
    store = blob_store_from_settings(s3_settings(tmp_path, s3_endpoint, "no-such-bucket"))
    with pytest.raises(Exception, match=r"404|Not Found|NoSuchBucket"):
        await store.check()
    await store.close()


@pytest.mark.parametrize(
    "url", ["ftp://host/x", "s3:///no-bucket", "file://relative/path", "redis://x"]
)
def test_bad_blob_urls_are_refused(tmp_path: Path, url: str) -> None:
    settings = Settings(
        _env_file=None, env="test", data_dir=tmp_path, secret_key="x" * 40, blob_url=url
    )
    with pytest.raises(BlobConfigError):
        blob_store_from_settings(settings)


def test_secrets_never_show_in_settings_output(tmp_path: Path) -> None:
    settings = s3_settings(tmp_path, "http://127.0.0.1:1", "bucket")
    assert "testing-secret" not in repr(settings)
    assert "testing-secret" not in str(settings.model_dump())
