"""Shared fixtures: personas (crowd, expert, engineer), projects, API clients, service checks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

from core import celery_app
from core.permissions import Role
from labelling.models import Project
from labelling.services.labellers import labeller_create
from labelling.services.projects import project_create_or_update
from labelling.spec import parse_spec

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# In CI's service run a missing service is a failure, not a skip.
REQUIRE_SERVICES = os.environ.get("QUORUM_REQUIRE_SERVICES") == "1"

# Property tests: bounded and the same on every run in CI ("ci", the default); "deep" explores
# far more, with fresh randomness, for a run by hand: HYPOTHESIS_PROFILE=deep make test.
hypothesis_settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    # Database fixtures are set up once per test, not per example: each property test keeps to
    # what one example leaves behind (it counts rows before and after).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
hypothesis_settings.register_profile(
    "deep", parent=hypothesis_settings.get_profile("ci"), max_examples=1000, derandomize=False
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests whose service is not configured, saying which service and how to set it."""
    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    on_redis = bool(settings.REDIS_URL)
    for item in items:
        if "needs_postgres" in item.keywords and not on_postgres and not REQUIRE_SERVICES:
            item.add_marker(
                pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://…")
            )
        if "needs_redis" in item.keywords and not on_redis and not REQUIRE_SERVICES:
            item.add_marker(pytest.mark.skip(reason="needs Redis: set REDIS_URL=redis://…"))


@pytest.fixture
def eager_jobs() -> Iterator[None]:
    """Run jobs in-process, as the default test setup does, even when REDIS_URL is set."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


@pytest.fixture
def shared_dir() -> Path:
    """../shared beside the repository, or a skip saying it is absent."""
    if not SHARED.is_dir():
        pytest.skip(
            "../shared/ is not present: the published reference data is not on this machine"
        )
    return SHARED


@pytest.fixture
def make_project(db: None) -> Callable[..., Project]:
    """Create a project from spec fields (binary match/no_match by default)."""

    def make(**fields: object) -> Project:
        spec = {"slug": "pet-match", "labels": ["match", "no_match"], **fields}
        project, _ = project_create_or_update(spec=parse_spec(spec))
        return project

    return make


@pytest.fixture
def project(make_project: Callable[..., Project]) -> Project:
    return make_project()


@pytest.fixture
def client_for(db: None) -> Callable[[Project, str, Role], APIClient]:
    """An API client authenticated by token as a user with a role in a project."""

    def make(project: Project, username: str, role: Role) -> APIClient:
        _, token = labeller_create(project=project, username=username, role=role)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return client

    return make


@pytest.fixture
def engineer_api(project: Project, client_for: Callable[..., APIClient]) -> APIClient:
    return client_for(project, "erin-engineer", Role.ENGINEER)


@pytest.fixture
def expert_api(project: Project, client_for: Callable[..., APIClient]) -> APIClient:
    return client_for(project, "ezra-expert", Role.EXPERT)


@pytest.fixture
def crowd_api(project: Project, client_for: Callable[..., APIClient]) -> APIClient:
    return client_for(project, "cora-crowd", Role.CROWD)
