"""Amazon Mechanical Turk through boto3: HITs that frame Quorum's page, assignments, payments.

Amazon's documentation states that Mechanical Turk closed permanently on 30 September 2026; the
adapter stays for its archives and for compatible endpoints (MTURK_ENDPOINT takes any URL).
Nothing here reaches the network until a method is called: the client is made on first use.
"""

from __future__ import annotations

import logging
import re
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from django.conf import settings
from django.urls import reverse

from core.exceptions import PlatformError
from labelling.crowd.platforms import CENT, Submission

if TYPE_CHECKING:
    from labelling.crowd.models import CrowdAssignment, CrowdBatch, CrowdTask

logger = logging.getLogger("quorum.crowd")

ENDPOINTS = {
    "sandbox": "https://mturk-requester-sandbox.us-east-1.amazonaws.com",
    "production": "https://mturk-requester.us-east-1.amazonaws.com",
}
# Amazon's system qualifications: share of a worker's past assignments approved, and how many.
APPROVAL_RATE = "000000000000000000L0"
APPROVED_HITS = "00000000000000000040"
EXTERNAL_QUESTION = (
    '<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/'
    'AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd">'
    "<ExternalURL>{url}</ExternalURL><FrameHeight>0</FrameHeight></ExternalQuestion>"
)
# The answer fields the framed page posts to Amazon (and that come back in Answer XML).
ANSWER_FIELD, DURATION_FIELD = "label", "duration_ms"
# A worker writes the duration themselves: a day at most, as the labelling API allows.
MAX_DURATION_MS = 86_400_000
STATUSES = {"Submitted": "submitted", "Approved": "approved", "Rejected": "rejected"}
# ServiceFault: Amazon's side failed; tried again after 1, 2, 4, 8 s.
ATTEMPTS, FIRST_WAIT = 5, 1.0
HIT_ID = re.compile(r"\b[A-Z0-9]{30}\b")
# A time long past: expires a HIT at once.
LONG_AGO = datetime(2015, 1, 1, tzinfo=UTC)


def endpoint_url(setting: str) -> str:
    """The requester API's address for MTURK_ENDPOINT (sandbox, production or a URL)."""
    return ENDPOINTS.get(setting, setting)


def make_client() -> Any:
    """A boto3 Mechanical Turk client for MTURK_ENDPOINT, with the usual AWS_* credentials."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "mturk",
        region_name="us-east-1",
        endpoint_url=endpoint_url(settings.MTURK_ENDPOINT),
        # Retries are ours (ServiceFault with backoff); a request error must not be repeated.
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


def money(amount: Decimal) -> str:
    """Amazon's money format: dollars with two decimals, as a string."""
    return str(amount.quantize(CENT, rounding=ROUND_HALF_UP))


def amazon_fee(*, reward: Decimal, assignments: int) -> Decimal:
    """Amazon's fee per assignment: 20 % of the reward, 40 % for HITs of 10 or more
    assignments, at least $0.01."""
    rate = Decimal("0.4") if assignments >= 10 else Decimal("0.2")
    return max((reward * rate).quantize(CENT, rounding=ROUND_HALF_UP), CENT)


def request_token(batch: CrowdBatch, task: CrowdTask) -> str:
    """The HIT's UniqueRequestToken (at most 64 characters): the same for every retry."""
    return f"quorum-{batch.token}-{task.item_id}"[:64]


def parse_answer(xml: str) -> tuple[str | None, int | None]:
    """The label and duration in a QuestionFormAnswers document (None where absent)."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None, None
    found: dict[str, str] = {}
    for answer in root.iter():
        if not answer.tag.endswith("Answer") or answer.tag.endswith("QuestionFormAnswers"):
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "") for child in answer}
        if "QuestionIdentifier" in fields:
            found[fields["QuestionIdentifier"]] = fields.get("FreeText", "")
    duration = found.get(DURATION_FIELD, "")
    return found.get(ANSWER_FIELD), min(
        int(duration), MAX_DURATION_MS
    ) if duration.isascii() and duration.isdigit() else None


class MTurkPlatform:
    """Mechanical Turk: a HIT type per batch, a HIT per item, an assignment per worker answer."""

    name = "mturk"
    title = "Amazon Mechanical Turk"
    reports_work = True

    def __init__(self, client: Any = None, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self._sleep = sleep

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client()
        return self._client

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One API call; ServiceFault is tried again with backoff, RequestError raised."""
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(ATTEMPTS):
            try:
                return dict(getattr(self.client, operation)(**params))
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code, message = error.get("Code", ""), error.get("Message", str(exc))
                if code == "ServiceFault" and attempt + 1 < ATTEMPTS:
                    logger.warning("mturk %s: ServiceFault, trying again (%s)", operation, message)
                    self._sleep(FIRST_WAIT * 2**attempt)
                    continue
                raise self._error(operation, code, message, exc.response, attempt) from exc
            except BotoCoreError as exc:
                message = f"Mechanical Turk could not be reached ({operation}): {exc}"
                raise PlatformError(message) from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _error(
        operation: str, code: str, message: str, response: dict[str, Any], attempt: int
    ) -> PlatformError:
        turk_code = response.get("TurkErrorCode") or ""
        if code == "ServiceFault":
            return PlatformError(
                f"Mechanical Turk failed on its side {attempt + 1} times ({operation}): {message}. "
                "Nothing was lost; try again later."
            )
        error = PlatformError(
            f"Mechanical Turk refused {operation}: {message}"
            + (f" ({turk_code})" if turk_code else "")
        )
        error.turk_code = turk_code  # type: ignore[attr-defined]
        return error

    def problem(self) -> str | None:
        """Amazon frames only https pages: QUORUM_PUBLIC_URL must be one."""
        if not settings.PUBLIC_URL.startswith("https://"):
            return "set QUORUM_PUBLIC_URL to the https:// address workers reach Quorum at"
        return None

    def fee(self, *, reward: Decimal, assignments: int) -> Decimal:
        """Amazon's fee for one assignment."""
        return amazon_fee(reward=reward, assignments=assignments)

    def _qualifications(self, options: dict[str, Any]) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = []
        if options["min_approval_rate"] > 0:
            rules.append({
                "QualificationTypeId": APPROVAL_RATE, "Comparator": "GreaterThanOrEqualTo",
                "IntegerValues": [int(options["min_approval_rate"])], "ActionsGuarded": "Accept",
            })  # fmt: skip
        if options["min_approved_hits"] > 0:
            rules.append({
                "QualificationTypeId": APPROVED_HITS, "Comparator": "GreaterThanOrEqualTo",
                "IntegerValues": [int(options["min_approved_hits"])], "ActionsGuarded": "Accept",
            })  # fmt: skip
        return rules

    def publish_batch(self, *, batch: CrowdBatch) -> str:
        """Create the HIT type (Amazon returns the same id for the same settings)."""
        options = batch.options
        response = self.call(
            "create_hit_type",
            AutoApprovalDelayInSeconds=int(options["auto_approve_hours"]) * 3600,
            AssignmentDurationInSeconds=int(options["assignment_minutes"]) * 60,
            Reward=money(batch.reward),
            Title=options["title"],
            Keywords=options["keywords"],
            Description=options["description"],
            QualificationRequirements=self._qualifications(options),
        )
        return str(response["HITTypeId"])

    def question(self, batch: CrowdBatch) -> str:
        """The ExternalQuestion that frames /ext/mturk/{slug}/ from QUORUM_PUBLIC_URL."""
        path = reverse("ext-mturk", kwargs={"slug": batch.project.slug})
        return EXTERNAL_QUESTION.format(url=escape(settings.PUBLIC_URL + path))

    def publish_task(self, *, batch: CrowdBatch, task: CrowdTask) -> str:
        """Create the item's HIT; a retry with the same token finds the HIT made before."""
        try:
            response = self.call(
                "create_hit_with_hit_type",
                HITTypeId=batch.remote_id,
                MaxAssignments=batch.assignments_per_item,
                LifetimeInSeconds=int(batch.options["lifetime_hours"]) * 3600,
                Question=self.question(batch),
                RequesterAnnotation=f"quorum {batch.name} item {task.item_id}"[:255],
                UniqueRequestToken=request_token(batch, task),
            )
        except PlatformError as exc:
            # Amazon answers a repeated token with the id of the HIT it already made.
            if "AlreadyExists" not in getattr(exc, "turk_code", "") + exc.message:
                raise
            found = HIT_ID.search(exc.message)
            if found is None:
                raise
            return found.group(0)
        return str(response["HIT"]["HITId"])

    def submissions(self, *, task: CrowdTask) -> Iterator[Submission]:
        """Every assignment of the task's HIT, page by page."""
        params: dict[str, Any] = {
            "HITId": task.remote_id,
            "MaxResults": 100,
            "AssignmentStatuses": list(STATUSES),
        }
        while True:
            page = self.call("list_assignments_for_hit", **params)
            for assignment in page.get("Assignments", []):
                answer, duration = parse_answer(assignment.get("Answer", ""))
                yield Submission(
                    remote_id=assignment["AssignmentId"],
                    worker_id=assignment["WorkerId"],
                    answer=answer,
                    status=STATUSES.get(assignment.get("AssignmentStatus", ""), "submitted"),
                    duration_ms=duration,
                )
            if not page.get("NextToken") or not page.get("Assignments"):
                return
            params["NextToken"] = page["NextToken"]

    def pay(self, *, assignment: CrowdAssignment) -> bool:
        """approve_assignment, with the feedback for the worker."""
        self.call(
            "approve_assignment",
            AssignmentId=assignment.remote_id,
            RequesterFeedback=assignment.feedback[:1024],
        )
        return True

    def refuse(self, *, assignment: CrowdAssignment) -> bool:
        """reject_assignment, with the (required) feedback for the worker."""
        self.call(
            "reject_assignment",
            AssignmentId=assignment.remote_id,
            RequesterFeedback=assignment.feedback[:1024],
        )
        return True

    def bonus(self, *, assignment: CrowdAssignment, amount: Decimal, reason: str) -> bool:
        """send_bonus, once per assignment (the token makes a retry harmless)."""
        self.call(
            "send_bonus",
            WorkerId=assignment.worker_id,
            BonusAmount=money(amount),
            AssignmentId=assignment.remote_id,
            Reason=reason,
            UniqueRequestToken=f"quorum-bonus-{assignment.remote_id}"[:64],
        )
        return True

    def block(self, *, worker_id: str, reason: str) -> bool:
        """create_worker_block: the worker takes no more of this requester's HITs."""
        self.call("create_worker_block", WorkerId=worker_id, Reason=reason)
        return True

    def expire_task(self, *, task: CrowdTask) -> bool:
        """Expire the HIT now: no new worker can take it."""
        self.call("update_expiration_for_hit", HITId=task.remote_id, ExpireAt=LONG_AGO)
        return True

    def delete_task(self, *, task: CrowdTask) -> bool:
        """Delete the expired HIT (Amazon refuses while an assignment waits for a decision)."""
        self.call("delete_hit", HITId=task.remote_id)
        return True

    def balance(self) -> Decimal | None:
        """get_account_balance: the available balance in dollars."""
        return Decimal(self.call("get_account_balance")["AvailableBalance"])
