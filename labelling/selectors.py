"""Selectors: reads of the labelling domain, including who may see what."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.db.models import Avg, Case, Count, F, Max, Q, When
from django.db.models.functions import TruncDate
from rest_framework.authtoken.models import Token

from core import rows
from core.exceptions import NotFound
from core.permissions import ENGINEERS, Role, check_role
from labelling.models import (
    Item,
    Job,
    Label,
    Labeller,
    LabellerDecision,
    Prediction,
    Project,
    QueueEntry,
    Release,
)

User = AuthUser | AnonymousUser


def project_role(user: User, project: Project) -> Role | None:
    """The user's role in the project (superusers act as engineers), or None."""
    if not user.is_authenticated or not user.is_active:
        return None
    if getattr(user, "is_superuser", False):
        return Role.ENGINEER
    return _member_role(Labeller.objects.filter(project=project, user=user).first())


def _member_role(member: Labeller | None) -> Role | None:
    """A project member's role; a blocked labeller holds none."""
    if member is None or member.status == Labeller.Status.BLOCKED:
        return None
    return Role(member.role)


def project_for_user(*, user: User, slug: str, roles: Collection[Role]) -> Project:
    """The project with this slug, if the user holds one of `roles` in it."""
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise NotFound("project not found")
    check_role(project_role(user, project), roles, "project")
    return project


def labeller_for(*, user: User, slug: str, roles: Collection[Role]) -> tuple[Project, Labeller]:
    """The project and the user's labeller record in it, if they hold one of `roles`."""
    if user.is_authenticated and user.is_active and not getattr(user, "is_superuser", False):
        # One read for the project, the role and the record: this runs before every lease.
        member = (
            Labeller.objects.select_related("project")
            .filter(project__slug=slug, user_id=int(user.pk or 0))
            .first()
        )
        role = _member_role(member)
        check_role(role, roles, "project")
        assert member is not None  # a role implies a member
        return member.project, member
    project = project_for_user(user=user, slug=slug, roles=roles)
    labeller = Labeller.objects.filter(project=project, user_id=int(user.pk or 0)).first()
    if labeller is None:
        # A superuser acting as an engineer labels under a labeller record of their own.
        labeller = Labeller.objects.create(project=project, user=user, role=Role.ENGINEER)  # type: ignore[misc]
    return project, labeller


def member_by_token_sql(extra: str = "", *, by_id: bool = False) -> str:
    """One read for an API token's holder and their membership of a project (parameters: the
    slug, or with `by_id` the project's id, then the key) with its project: it runs before every
    lease. `extra` adds columns after the member's and the project's, which may refer to the
    member as `m` (their parameters come before the project's and the key).

    The project and the token's user are found first, each by its unique key, so the membership
    is one index lookup whatever the project's size or the tables' statistics."""
    project = "%s" if by_id else f"(SELECT id FROM {Project._meta.db_table} WHERE slug = %s)"
    return (
        f"SELECT {rows.columns(Labeller, 'm')}, {rows.columns(Project, 'p')}{extra} "
        f"FROM {Labeller._meta.db_table} m JOIN {Project._meta.db_table} p ON p.id = m.project_id "
        f"WHERE m.project_id = {project} "
        f"AND m.user_id = (SELECT t.user_id FROM {Token._meta.db_table} t "
        f"JOIN {AuthUser._meta.db_table} u ON u.id = t.user_id "
        "WHERE t.key = %s AND u.is_active AND NOT u.is_superuser)"
    )


def member_and_project(row: Sequence[Any]) -> Labeller:
    """The member, with their project, whose columns open `row` (`rows.columns` of Labeller,
    then of Project, as member_by_token_sql reads them)."""
    end = rows.width(Labeller) + rows.width(Project)
    member = rows.instance(Labeller, row[: rows.width(Labeller)])
    member.project = rows.instance(Project, row[rows.width(Labeller) : end])
    return member


def member_from_row(row: Sequence[Any], roles: Collection[Role]) -> Labeller | None:
    """The member (with their project) of a row read by member_by_token_sql, if their role is
    one of `roles`."""
    member = member_and_project(row)
    return member if _member_role(member) in roles else None


def user_id_by_token(*, key: str) -> int | None:
    """The id of the active user holding this API token, or None."""
    with rows.cursor() as cursor:
        cursor.execute(_USER_BY_TOKEN, [key])
        row = cursor.fetchone()
    return int(row[0]) if row else None


_USER_BY_TOKEN = (
    f"SELECT u.id FROM {Token._meta.db_table} t JOIN {AuthUser._meta.db_table} u "
    "ON u.id = t.user_id WHERE t.key = %s AND u.is_active"
)


def labeller_managed_by(*, user: User, labeller_id: int) -> Labeller:
    """A labeller, if the user is an engineer of the labeller's project."""
    labeller = Labeller.objects.select_related("project", "user").filter(pk=labeller_id).first()
    if labeller is None:
        raise NotFound("labeller not found")
    check_role(project_role(user, labeller.project), ENGINEERS, "labeller")
    return labeller


def projects_for_user(user: User) -> list[tuple[Project, Role]]:
    """Every project the user works on, with their role in it."""
    if not user.is_authenticated:
        return []
    if getattr(user, "is_superuser", False):
        return [(project, Role.ENGINEER) for project in Project.objects.all()]
    memberships = Labeller.objects.filter(user=user).exclude(status=Labeller.Status.BLOCKED)
    return [(m.project, Role(m.role)) for m in memberships.select_related("project")]


def job_for_user(*, user: User, job_id: int, roles: Collection[Role]) -> Job:
    """A job, if the user holds one of `roles` in its project."""
    job = Job.objects.select_related("project").filter(pk=job_id).first()
    if job is None:
        raise NotFound("job not found")
    check_role(project_role(user, job.project), roles, "job")
    return job


def project_overview(project: Project) -> dict[str, Any]:
    """Counts for the dashboard: items, predictions by model version, splits and sources."""
    items = Item.objects.filter(project=project)
    versions = (
        Prediction.objects.filter(item__project=project)
        .values("model_version")
        .annotate(
            predictions=Count("id"),
            mean_confidence=Avg("confidence"),
            last_import=Max("created_at"),
            below_target=Count("id", filter=Q(confidence__lt=project.target_confidence)),
        )
        .order_by("-last_import")
    )
    return {
        "items": items.count(),
        "versions": list(versions),
        "splits": list(items.values("split").annotate(n=Count("id")).order_by("-n")),
        "sources": list(items.values("source").annotate(n=Count("id")).order_by("-n")),
    }


def latest_model_version(project: Project) -> str | None:
    """The model version whose predictions arrived last."""
    return (
        Prediction.objects.filter(item__project=project)
        .order_by("-created_at", "-id")
        .values_list("model_version", flat=True)
        .first()
    )


def confidence_histogram(
    project: Project, model_version: str, *, queued_only: bool = False, bins: int = 20
) -> list[int]:
    """How many of a model version's predictions fall in each confidence bin of [0, 1]."""
    values = Prediction.objects.filter(item__project=project, model_version=model_version)
    if queued_only:
        values = values.filter(item__queue_entry__isnull=False)
    confidences = np.fromiter(values.values_list("confidence", flat=True), dtype=float)
    counts, _ = np.histogram(confidences, bins=bins, range=(0.0, 1.0))
    return [int(c) for c in counts]


def queue_overview(project: Project) -> dict[str, Any]:
    """The queue for the dashboard: size by rule and the policy in force."""
    by_rule = (
        QueueEntry.objects.filter(project=project)
        .values("rule")
        .annotate(n=Count("id"), mean_score=Avg("score"))
        .order_by("-n")
    )
    return {
        "by_rule": list(by_rule),
        "size": sum(row["n"] for row in by_rule),
        "policy": project.queue_policies.order_by("-version").first(),
    }


def least_confident_predictions(
    project: Project, model_version: str, limit: int = 12
) -> list[Prediction]:
    """The predictions the model was least sure of: what the crowd should see first."""
    return list(
        Prediction.objects.filter(item__project=project, model_version=model_version)
        .select_related("item")
        .order_by("confidence", "id")[:limit]
    )


def labellers_overview(project: Project) -> list[Labeller]:
    """The project's labellers with their figures, the ones needing a decision first."""
    order = Case(
        When(status=Labeller.Status.PAUSED, then=0),
        When(status=Labeller.Status.ACTIVE, then=1),
        default=2,
    )
    return list(
        Labeller.objects.filter(project=project)
        .select_related("user")
        .order_by(order, "-n_labels", "pk")
    )


def labeller_confusion(labeller: Labeller) -> list[list[int]]:
    """Counts of (consensus label, this labeller's label) over their valid labels: rows are the
    consensus, columns the labeller's answer, both in the project's label order."""
    labels = labeller.project.labels
    index = {label: k for k, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    pairs = (
        labeller.labels.filter(state="valid", item__consensus__isnull=False)
        .values_list("item__consensus__label", "value")
        .annotate(n=Count("id"))
    )
    for truth, given, n in pairs:
        matrix[index[truth]][index[given]] += n
    return matrix


def agreement_by_day(project: Project, days: int = 60) -> list[tuple[Any, float, int]]:
    """(day, share of labels that agree with the item's consensus, labels) for recent days."""
    rows = (
        Label.objects.filter(project=project, state="valid", item__consensus__isnull=False)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(
            n=Count("id"),
            agree=Count("id", filter=Q(value=F("item__consensus__label"))),
        )
        .order_by("-day")[:days]
    )
    return [(row["day"], row["agree"] / row["n"], row["n"]) for row in reversed(list(rows))]


def decisions_log(project: Project, limit: int = 50) -> list[LabellerDecision]:
    """The latest decisions about the project's labellers."""
    return list(
        LabellerDecision.objects.filter(labeller__project=project).select_related(
            "labeller", "labeller__user", "decided_by"
        )[:limit]
    )


def labeller_batches(labeller: Labeller) -> list[dict[str, Any]]:
    """The labeller's batches of labels with how many are valid and voided, newest first."""
    batches = (
        labeller.labels.values("batch")
        .annotate(
            valid=Count("id", filter=Q(state="valid")),
            voided=Count("id", filter=Q(state="voided")),
            last=Max("created_at"),
        )
        .order_by("-last")
    )
    return [dict(batch) for batch in batches]


def release_for_user(*, user: User, release_id: int, roles: Collection[Role]) -> Release:
    """A release, if the user holds one of `roles` in its project."""
    release = Release.objects.select_related("project", "created_by").filter(pk=release_id).first()
    if release is None:
        raise NotFound("release not found")
    check_role(project_role(user, release.project), roles, "release")
    return release


def releases_of(project: Project) -> list[Release]:
    """The project's releases, newest first."""
    return list(project.releases.select_related("created_by").order_by("-version"))


def release_jobs(project: Project, limit: int = 10) -> list[Job]:
    """The project's latest release jobs, newest first: running, failed or done."""
    jobs = Job.objects.filter(project=project, kind=Job.Kind.RELEASE).select_related("created_by")
    return list(jobs.order_by("-created_at", "-id")[:limit])
