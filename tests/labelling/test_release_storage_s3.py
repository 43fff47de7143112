"""Releases on S3, against a real S3 API server (moto's standalone server on loopback): boto3
speaks HTTP to it exactly as it would to AWS or MinIO; nothing in boto3 is patched."""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings
from rest_framework.test import APIClient

from core.exceptions import StorageError
from labelling.models import Job, Project, Release
from labelling.releases.storage import S3Storage
from labelling.services.releases import ReleaseRequest, release_create
from tests.labelling.release_world import World, fail_after_first_chunk

moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (requirements-dev.txt)")
BUCKET = "quorum-releases"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port for this module."""
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """EXPORT_STORAGE on an empty bucket of the server; the boto3 client to look at it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings.AWS_ENDPOINT_URL = s3_endpoint
    settings.EXPORT_STORAGE = f"s3://{BUCKET}/exports"
    settings.SECRET_KEY = "release-test-secret"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield client
    for entry in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=entry["Key"])
    client.delete_bucket(Bucket=BUCKET)


def keys(client: Any) -> list[str]:
    return sorted(e["Key"] for e in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


@pytest.fixture
def world(project: Project) -> World:
    return World(project)


def test_a_release_is_published_to_s3_with_its_manifest(s3: Any, world: World) -> None:
    for n in range(3):
        world.item(f"a{n}")
    release = release_create(project=world.project)

    assert release.location == f"s3://{BUCKET}/exports/pet-match/v1"
    assert keys(s3) == ["exports/pet-match/v1/data.jsonl", "exports/pet-match/v1/manifest.json"]
    data = s3.get_object(Bucket=BUCKET, Key="exports/pet-match/v1/data.jsonl")["Body"].read()
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key="exports/pet-match/v1/manifest.json")["Body"].read()
    )
    assert hashlib.sha256(data).hexdigest() == release.sha256 == manifest["sha256"]
    assert manifest["row_count"] == 3 and len(data.splitlines()) == 3


def test_the_api_gives_a_presigned_url_and_streams_the_file(
    s3: Any, world: World, engineer_api: APIClient, crowd_api: APIClient
) -> None:
    world.item("a1")
    release = release_create(project=world.project, request=ReleaseRequest(fmt="csv"))
    detail = engineer_api.get(f"/api/v1/releases/{release.pk}").json()

    assert detail["download_url"].startswith(f"{s3.meta.endpoint_url}/{BUCKET}/exports/")
    assert "Signature" in detail["download_url"] or "X-Amz-Signature" in detail["download_url"]
    with urllib.request.urlopen(detail["download_url"], timeout=10) as fetched:
        body = fetched.read()
    assert hashlib.sha256(body).hexdigest() == release.sha256

    streamed = engineer_api.get(f"/api/v1/releases/{release.pk}/download")
    assert b"".join(streamed.streaming_content) == body
    assert crowd_api.get(f"/api/v1/releases/{release.pk}/download").status_code == 403


def test_a_job_that_fails_midway_leaves_nothing_on_s3(
    s3: Any,
    world: World,
    engineer_api: APIClient,
    eager_jobs: None,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for n in range(4):
        world.item(f"a{n}")
    fail_after_first_chunk(monkeypatch, RuntimeError("worker lost"), lambda: None)
    with django_capture_on_commit_callbacks(execute=True):
        response = engineer_api.post("/api/v1/projects/pet-match/releases", {}, format="json")

    assert Job.objects.get(pk=response.json()["id"]).status == "failed"
    assert keys(s3) == [] and not Release.objects.exists()


def test_an_upload_that_fails_after_the_data_file_removes_it(
    s3: Any, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.item("a1")
    real_client = S3Storage.client

    class ManifestRefused:
        """The real client, except that the manifest upload fails (the store went away)."""

        def __init__(self, client: Any) -> None:
            self.client = client

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

        def upload_file(self, path: str, bucket: str, key: str) -> None:
            if key.endswith("manifest.json"):
                raise ConnectionError("connection reset")
            self.client.upload_file(path, bucket, key)

    monkeypatch.setattr(S3Storage, "client", lambda self: ManifestRefused(real_client(self)))
    with pytest.raises(ConnectionError):
        release_create(project=world.project)
    assert keys(s3) == [] and not Release.objects.exists()


def test_a_missing_bucket_fails_the_release_and_records_nothing(
    s3: Any, world: World, settings: Settings, tmp_path: Path
) -> None:
    world.item("a1")
    settings.EXPORT_STORAGE = "s3://no-such-bucket/x"
    with pytest.raises(StorageError, match="could not write the release to s3://no-such-bucket"):
        release_create(project=world.project)
    assert not Release.objects.exists()
