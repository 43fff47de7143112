"""The demo that `make run` loads: real digits, a real model's probabilities, gold and a queue."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from labelling.models import Item, Prediction, Project, QueueEntry

pytestmark = pytest.mark.django_db


def test_the_demo_loads_once_with_its_logins(settings: object) -> None:
    settings.DEBUG = True  # type: ignore[attr-defined]
    first, second = io.StringIO(), io.StringIO()

    call_command("load_demo", stdout=first)
    call_command("load_demo", stdout=second)

    project = Project.objects.get(slug="digits")
    assert Item.objects.filter(project=project).count() == 1797
    assert Prediction.objects.filter(item__project=project).count() == 1797
    assert Item.objects.filter(project=project).exclude(gold_label="").count() == 90
    assert QueueEntry.objects.filter(project=project).exists()
    assert "demo login: engineer / quorum-demo" in first.getvalue()
    assert "already loaded" in second.getvalue()
    assert Item.objects.count() == 1797


def test_the_demo_dashboard_shows_the_least_sure_digits(settings: object) -> None:
    settings.DEBUG = True  # type: ignore[attr-defined]
    call_command("load_demo", stdout=io.StringIO())
    client = Client()
    assert client.login(username="engineer", password="quorum-demo")

    page = client.get("/projects/digits/").content.decode()

    assert "Handwritten digits" in page
    assert "data:image/png;base64," in page
    assert "near_threshold" in page or "uncertain" in page


def test_the_demo_refuses_to_load_with_debug_off() -> None:
    with pytest.raises(CommandError, match="only with DEBUG=1"):
        call_command("load_demo")
    assert not Project.objects.exists()
