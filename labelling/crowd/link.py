"""Link-based platforms (Prolific-style): workers arrive at a Quorum link with their ids in the
query string, label, and take a completion code back to the platform.

Such platforms are driven from their own website: Quorum cannot pay, refuse or block there, so
those decisions are kept for the engineer to apply on the platform (and to mark as done).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.urls import reverse

from labelling.crowd.platforms import Submission

if TYPE_CHECKING:
    from labelling.crowd.models import CrowdAssignment, CrowdBatch, CrowdTask


@dataclass(frozen=True)
class LinkParams:
    """A link-based platform: its name and the query parameters it adds to the link."""

    name: str
    title: str
    worker: str
    study: str
    session: str
    # The platform's service fee as a share of the reward (for the cost estimate only).
    fee_rate: Decimal
    # Where workers return to with their completion code ({code} is filled in).
    return_url: str = ""


PROLIFIC = LinkParams(
    name="prolific",
    title="Prolific",
    worker="PROLIFIC_PID",
    study="STUDY_ID",
    session="SESSION_ID",
    fee_rate=Decimal("0.333"),
    return_url="https://app.prolific.com/submissions/complete?cc={code}",
)


class LinkPlatform:
    """A platform that sends workers to a link: nothing to call, decisions kept for the engineer."""

    reports_work = False

    def __init__(self, params: LinkParams) -> None:
        self.params = params
        self.name = params.name
        self.title = params.title

    def link(self, batch: CrowdBatch) -> str:
        """The study link to give the platform, with its placeholders for the worker's ids."""
        path = reverse("ext-link", kwargs={"slug": batch.project.slug, "token": batch.token})
        p = self.params
        query = "&".join(f"{name}={{{{%{name}%}}}}" for name in (p.worker, p.study, p.session))
        return f"{settings.PUBLIC_URL}{path}?{query}"

    def problem(self) -> str | None:
        """The study link needs the address workers reach Quorum at."""
        if not settings.PUBLIC_URL:
            return "set QUORUM_PUBLIC_URL to the address workers reach Quorum at"
        return None

    def fee(self, *, reward: Decimal, assignments: int) -> Decimal:
        """The platform's fee for one assignment, as configured."""
        return (reward * self.params.fee_rate).quantize(Decimal("0.01"))

    def publish_batch(self, *, batch: CrowdBatch) -> str:
        """Nothing to create: the engineer makes the study with the link."""
        return ""

    def publish_task(self, *, batch: CrowdBatch, task: CrowdTask) -> str:
        """Items are served from the link; they have no remote id."""
        return ""

    def submissions(self, *, task: CrowdTask) -> Iterator[Submission]:
        """Work arrives only through Quorum's page."""
        return iter(())

    def pay(self, *, assignment: CrowdAssignment) -> bool:
        """Kept for the engineer to approve on the platform."""
        return False

    def refuse(self, *, assignment: CrowdAssignment) -> bool:
        """Kept for the engineer to reject on the platform."""
        return False

    def bonus(self, *, assignment: CrowdAssignment, amount: Decimal, reason: str) -> bool:
        """Kept for the engineer to pay on the platform."""
        return False

    def block(self, *, worker_id: str, reason: str) -> bool:
        """Kept for the engineer to block on the platform."""
        return False

    def expire_task(self, *, task: CrowdTask) -> bool:
        """A closed batch's link shows that the study has ended."""
        return True

    def delete_task(self, *, task: CrowdTask) -> bool:
        """Nothing to delete."""
        return True

    def balance(self) -> Decimal | None:
        """Not available through a link."""
        return None
