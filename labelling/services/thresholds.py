"""Changing a project's decision threshold, kept in the project's history."""

from __future__ import annotations

import math
from typing import Any

from django.db import transaction

from core.exceptions import InputError, InvalidInput
from labelling.models import Project, ThresholdChange
from labelling.services.evaluation import evaluation_schedule_after_commit
from labelling.thresholding import operating_point_basis


@transaction.atomic
def project_threshold_set(
    *, project: Project, threshold: float, model_version: str | None, user: Any, note: str = ""
) -> ThresholdChange:
    """Set the project's decision threshold and record the change with its figures."""
    if (
        not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
        or not 0 < threshold <= 1
    ):
        raise InvalidInput(
            "invalid threshold",
            errors=[InputError(f"must be in (0, 1], got {threshold!r}", field="threshold")],
        )
    locked = Project.objects.select_for_update(no_key=True).get(pk=project.pk)
    basis = operating_point_basis(locked, model_version, threshold) if model_version else {}
    change = ThresholdChange.objects.create(
        project=locked,
        old_threshold=locked.threshold,
        new_threshold=float(threshold),
        basis=basis,
        note=note[:2000],
        changed_by=user if getattr(user, "is_authenticated", False) else None,
    )
    locked.threshold = float(threshold)
    locked.save(update_fields=["threshold", "updated_at"])
    project.threshold = locked.threshold
    # Errors are counted at the project threshold: every figure changes with it.
    evaluation_schedule_after_commit(project.pk)
    return change
