"""Expert leases under real concurrency: several experts asking and resolving at once, each on
its own PostgreSQL connection, never hold or resolve the same escalation."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from core.permissions import Role
from labelling.models import Escalation, Item, Project
from labelling.services.labellers import labeller_create
from labelling.services.review import Decision, escalation_lease, escalation_resolve
from tests.labelling.test_review import crowd, predict

pytestmark = [pytest.mark.needs_postgres, pytest.mark.django_db(transaction=True)]

EXPERTS, ITEMS = 6, 30


def test_experts_working_at_once_resolve_every_escalation_exactly_once(
    make_project: Callable[..., Project],
) -> None:
    project = make_project(
        overlap={"min": 2, "max": 2, "target_confidence": 0.95},
        escalation={"below_confidence": 0.9, "audit_fraction": 0},
    )
    keys = {f"i{k}": 0.5 + k / 100 for k in range(ITEMS)}
    predict(project, keys)
    crowd(project, {k: ["match", "no_match"] for k in keys})
    experts = [
        labeller_create(project=project, username=f"x{k}", role=Role.EXPERT)[0].user
        for k in range(EXPERTS)
    ]
    resolved: dict[int, list[int]] = {}
    errors: list[str] = []
    start = threading.Barrier(EXPERTS)

    def work(user: Any) -> None:
        try:
            start.wait()
            while (escalation := escalation_lease(project=project, user=user)) is not None:
                escalation_resolve(
                    escalation_id=escalation.pk, user=user, decision=Decision("label", "match")
                )
                resolved.setdefault(escalation.pk, []).append(user.pk)
        except Exception:
            errors.append(traceback.format_exc())
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(user,)) for user in experts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors, errors[0]
    assert len(resolved) == ITEMS and all(len(by) == 1 for by in resolved.values())
    assert Escalation.objects.filter(resolved_at__isnull=True).count() == 0
    assert Item.objects.filter(state="resolved").count() == ITEMS
    assert len({by[0] for by in resolved.values()}) > 1
