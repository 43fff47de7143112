"""Creating and updating projects from their spec."""

from __future__ import annotations

from django.db import transaction

from core.exceptions import InputError, InvalidInput
from labelling.models import Project
from labelling.spec import ProjectSpec


@transaction.atomic
def project_create_or_update(*, spec: ProjectSpec) -> tuple[Project, bool]:
    """Create the project a spec describes, or update it in place; say whether it is new."""
    project = Project.objects.select_for_update(no_key=True).filter(slug=spec.slug).first()
    if project is None:
        return Project.objects.create(**spec.model_fields()), True
    if list(spec.labels) != project.labels and project.items.exists():
        # Stored probabilities are lists in label order: a changed label set would misread them.
        raise InvalidInput(
            "the project spec is invalid",
            errors=[
                InputError(
                    f"cannot change once items exist (the project has {project.labels})",
                    field="labels",
                )
            ],
        )
    for name, value in spec.model_fields().items():
        setattr(project, name, value)
    project.save()
    return project, False
