"""The adapter interface an outside crowd platform implements, and the registry of platforms.

A platform only talks to the outside world; every decision (what to publish, whom to pay,
whom to block) is taken in labelling/crowd/services/, the same way for every platform. A new
platform is one class with these methods and one line in PLATFORMS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from core.exceptions import InputError, InvalidInput

if TYPE_CHECKING:
    from labelling.crowd.models import CrowdAssignment, CrowdBatch, CrowdTask

CENT = Decimal("0.01")


@dataclass(frozen=True)
class Submission:
    """A piece of work the platform reports: which worker answered which task, and what."""

    remote_id: str
    worker_id: str
    # None when the platform's answer could not be read as a label.
    answer: str | None
    # The platform's view: submitted (waiting for a decision), approved or rejected.
    status: str
    duration_ms: int | None = None


class CrowdPlatform(Protocol):
    """What Quorum asks of an outside crowd platform.

    Methods that change something on the platform return True when the platform carried it
    out, False when it cannot be done through an API and the engineer must do it on the
    platform (the decision is kept as pending until they say it is done). They raise
    core.exceptions.PlatformError, with a message for the engineer, when the platform refuses.
    """

    name: str
    title: str
    # Whether the platform has an API: work arrives by `submissions` and decisions are carried
    # out by `pay`, `refuse`… (True), or work comes only through Quorum's page and the engineer
    # carries decisions out on the platform's site (False).
    reports_work: bool

    def problem(self) -> str | None:
        """Why the platform cannot be used with this configuration, or None."""
        ...

    def fee(self, *, reward: Decimal, assignments: int) -> Decimal:
        """The platform's fee for one assignment at this reward."""
        ...

    def publish_batch(self, *, batch: CrowdBatch) -> str:
        """Prepare the batch on the platform; return its remote id ("" when there is none)."""
        ...

    def publish_task(self, *, batch: CrowdBatch, task: CrowdTask) -> str:
        """Publish one item of the batch; return its remote id. Safe to call again."""
        ...

    def submissions(self, *, task: CrowdTask) -> Iterator[Submission]:
        """Every piece of work the platform holds for the task."""
        ...

    def pay(self, *, assignment: CrowdAssignment) -> bool:
        """Approve and pay the assignment, with its feedback."""
        ...

    def refuse(self, *, assignment: CrowdAssignment) -> bool:
        """Reject the assignment, with its feedback (required: the worker reads it)."""
        ...

    def bonus(self, *, assignment: CrowdAssignment, amount: Decimal, reason: str) -> bool:
        """Pay the worker a bonus for the assignment."""
        ...

    def block(self, *, worker_id: str, reason: str) -> bool:
        """Keep the worker from any further work of this requester."""
        ...

    def expire_task(self, *, task: CrowdTask) -> bool:
        """Stop offering the task to workers."""
        ...

    def delete_task(self, *, task: CrowdTask) -> bool:
        """Remove the task from the platform (after every assignment is decided)."""
        ...

    def balance(self) -> Decimal | None:
        """The money available on the account, or None where the platform does not say."""
        ...


def _mturk() -> CrowdPlatform:
    from labelling.crowd.mturk import MTurkPlatform

    return MTurkPlatform()


def _prolific() -> CrowdPlatform:
    from labelling.crowd.link import PROLIFIC, LinkPlatform

    return LinkPlatform(PROLIFIC)


PLATFORMS: dict[str, Callable[[], CrowdPlatform]] = {"mturk": _mturk, "prolific": _prolific}


def platform_for(name: str) -> CrowdPlatform:
    """The adapter of a registered platform; an unknown name is an input error."""
    if name not in PLATFORMS:
        raise InvalidInput(
            "unknown crowd platform",
            errors=[InputError(f"must be one of {', '.join(sorted(PLATFORMS))}", field="platform")],
        )
    return PLATFORMS[name]()
