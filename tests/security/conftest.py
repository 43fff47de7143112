"""The world every access test runs in, built once a module inside a transaction that is rolled
back at the end; each test runs in a savepoint of it, so what one test changes the next does not
see. Clients for each of the six people of the access matrix."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import transaction
from django.test import Client, override_settings
from pytest_django import DjangoDbBlocker, Settings
from rest_framework.test import APIClient

from tests.security.world import World, build_world


@pytest.fixture(scope="module")
def world(
    django_db_setup: None,
    django_db_blocker: DjangoDbBlocker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    folder: Path = tmp_path_factory.mktemp("releases")
    unblocked = django_db_blocker.unblock()
    with unblocked, override_settings(NEW_LABELLER_GOLD=0), transaction.atomic():
        built = build_world(folder)
        yield built
        transaction.set_rollback(True)


@pytest.fixture(autouse=True)
def test_settings(settings: Settings, tmp_path: Path) -> None:
    """Plain static files (no collectstatic manifest), no gold warm-up, releases to a folder."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.NEW_LABELLER_GOLD = 0
    settings.EXPORT_STORAGE = tmp_path.as_uri()
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()  # the answer rate limit counts per user across tests otherwise


@pytest.fixture
def api_as(world: World, db: None) -> Callable[[str], APIClient]:
    """An API client authenticated by token as one of the six people (none: anonymous)."""

    def make(role: str) -> APIClient:
        client = APIClient()
        if role in world.tokens:
            client.credentials(HTTP_AUTHORIZATION=f"Token {world.tokens[role]}")
        return client

    return make


@pytest.fixture
def browser_as(world: World, db: None) -> Callable[[str], Client]:
    """A browser session logged in as one of the six people (none: anonymous)."""

    def make(role: str) -> Client:
        client = Client()
        user = world.people[role]
        if user is not None:
            client.force_login(user)
        return client

    return make
