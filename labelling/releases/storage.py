"""Where release folders live: a local folder or an S3 prefix, both published all at once.

A release is built in a staging folder on local disk, then published: a local folder is renamed
into place (atomic on one file system); on S3 the data file is uploaded first and `manifest.json`
last, and a failed upload deletes what it wrote. Nothing half-written is ever under a version.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from django.conf import settings

from core.exceptions import NotFound, StorageError

logger = logging.getLogger("quorum.releases")
CHUNK = 1024 * 1024
STAGING = ".staging"
# A staging folder this old belongs to no running release (a day: far above the task time limit).
STALE_STAGING_SECONDS = 24 * 3600


class ReleaseStorage(Protocol):
    """A place release folders are published to and read from."""

    def staging(self) -> Path:
        """A fresh, empty local folder to build a release in."""
        ...

    def publish(self, *, staging: Path, folder: str) -> str:
        """Move a built release to `folder` (slug/vN); return the folder's URL."""
        ...

    def remove(self, location: str) -> None:
        """Delete a published folder (only ever one no release row points to)."""
        ...

    def chunks(self, location: str, name: str) -> Iterator[bytes]:
        """The bytes of one file of a published folder."""
        ...

    def presigned_url(self, location: str, name: str) -> str | None:
        """A time-limited link to the file, where the store has them."""
        ...


def discard(staging: Path) -> None:
    """Delete a staging folder and whatever was written to it."""
    shutil.rmtree(staging, ignore_errors=True)


def _sweep(folder: Path, *, keep: Path) -> None:
    """Delete the staging folders of releases whose process died (a killed worker cleans up
    nothing) once they are older than any release could run."""
    cutoff = time.time() - STALE_STAGING_SECONDS
    for stale in folder.iterdir():
        with contextlib.suppress(OSError):
            if stale != keep and stale.stat().st_mtime < cutoff:
                logger.warning("deleting %s, left by a release that did not finish", stale)
                discard(stale)


class LocalStorage:
    """Release folders under a local directory (`file:///abs/dir`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def staging(self) -> Path:
        # Inside the root, so that publishing is a rename on the same file system.
        path = self.root / STAGING / uuid.uuid4().hex
        path.mkdir(parents=True)
        _sweep(self.root / STAGING, keep=path)
        return path

    def publish(self, *, staging: Path, folder: str) -> str:
        final = self.root / folder
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            # Left by a crash between publishing and recording: no release row claims it.
            shutil.rmtree(final)
        staging.rename(final)
        return final.as_uri()

    def remove(self, location: str) -> None:
        shutil.rmtree(_local_path(location), ignore_errors=True)

    def chunks(self, location: str, name: str) -> Iterator[bytes]:
        path = _local_path(location) / name
        if not path.is_file():
            raise NotFound(f"the release file {name} is missing from {location}")
        with open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                yield chunk

    def presigned_url(self, location: str, name: str) -> str | None:
        return None


def _local_path(location: str) -> Path:
    return Path(urlparse(location).path)


class S3Storage:
    """Release folders under an S3 prefix (`s3://bucket/prefix`), through boto3."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=settings.AWS_ENDPOINT_URL or None)

    def staging(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="quorum-release-"))

    def _key(self, folder: str, name: str) -> str:
        return "/".join(part for part in (self.prefix, folder, name) if part)

    def publish(self, *, staging: Path, folder: str) -> str:
        client, written = self.client(), []
        # The manifest goes last: a folder with a manifest is complete.
        names = sorted(p.name for p in staging.iterdir() if p.name != "manifest.json")
        try:
            for name in [*names, "manifest.json"]:
                key = self._key(folder, name)
                written.append(key)
                client.upload_file(str(staging / name), self.bucket, key)
        except Exception as exc:
            for key in written:
                _delete_quietly(client, self.bucket, key)
            if _boto_error(exc):
                raise StorageError(
                    f"could not write the release to s3://{self.bucket}: {exc}"
                ) from exc
            raise
        discard(staging)
        return f"s3://{self.bucket}/{self._key(folder, '')}".rstrip("/")

    def _split(self, location: str, name: str) -> tuple[str, str]:
        parsed = urlparse(location)
        return parsed.netloc, f"{parsed.path.strip('/')}/{name}"

    def remove(self, location: str) -> None:
        bucket, prefix = self._split(location, "")
        client = self.client()
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        for entry in listed.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=entry["Key"])

    def chunks(self, location: str, name: str) -> Iterator[bytes]:
        bucket, key = self._split(location, name)
        client = self.client()
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
        except client.exceptions.NoSuchKey:
            raise NotFound(f"the release file {name} is missing from {location}") from None
        yield from body.iter_chunks(CHUNK)

    def presigned_url(self, location: str, name: str) -> str | None:
        bucket, key = self._split(location, name)
        url: str = self.client().generate_presigned_url(
            "get_object",
            Params={"Bucket": bucket, "Key": key},
            ExpiresIn=settings.RELEASE_URL_SECONDS,
        )
        return url


def _delete_quietly(client: Any, bucket: str, key: str) -> None:
    # Best effort after a failed upload: the store may be the thing that failed.
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except Exception:
        logger.warning("could not delete s3://%s/%s after a failed release upload", bucket, key)


def _boto_error(exc: Exception) -> bool:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, Boto3Error | BotoCoreError | ClientError)


def storage_for(url: str) -> ReleaseStorage:
    """The storage a `file:///abs/dir` or `s3://bucket/prefix` URL names."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        return S3Storage(parsed.netloc, parsed.path)
    return LocalStorage(Path(parsed.path))


def default_storage_url() -> str:
    """The configured EXPORT_STORAGE."""
    return str(settings.EXPORT_STORAGE)
