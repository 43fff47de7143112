"""The wire contract with Mechanical Turk: every call the adapter makes, checked by botocore's
Stubber against the real service model (parameters and responses); no request leaves the
machine. Also: ServiceFault retried with backoff, RequestError surfaced, retries never
double-post."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from core.exceptions import PlatformError
from labelling.crowd import services
from labelling.crowd.models import CrowdAssignment, CrowdBatch, CrowdTask
from labelling.crowd.mturk import (
    APPROVAL_RATE,
    LONG_AGO,
    MTurkPlatform,
    endpoint_url,
    parse_answer,
    request_token,
)
from labelling.models import Project
from tests.labelling.crowd.fakes import FakeMTurk, answer_xml

pytestmark = pytest.mark.django_db

HIT_TYPE = "3Z8UKH6A9Z0TZ6JRDMDUJ3QZ5XNZ9A"
HIT = "3KA7IJSNW9X7J6JQNRPCYTV0M9QCBZ"
ASSIGNMENT = "3ZAZR5XV01HVON700G97V57KP6KCZ"


@pytest.fixture
def stubbed() -> Iterator[tuple[MTurkPlatform, Stubber, list[float]]]:
    client = boto3.client(
        "mturk",
        region_name="us-east-1",
        endpoint_url=endpoint_url("sandbox"),
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    sleeps: list[float] = []
    with Stubber(client) as stubber:
        yield MTurkPlatform(client, sleep=sleeps.append), stubber, sleeps
        stubber.assert_no_pending_responses()


@pytest.fixture
def batch(make_queued: Callable[..., Project]) -> CrowdBatch:
    project = make_queued(2)
    project.crowd = {"reward": 0.12, "min_approved_hits": 500}
    project.save()
    return services.crowd_batch_create(
        project=project, platform="mturk", size=1, reward="0.12", assignments=3, user=None
    )


def test_endpoints_are_the_sandbox_by_default_production_or_a_url() -> None:
    assert endpoint_url("sandbox") == "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
    assert endpoint_url("production") == "https://mturk-requester.us-east-1.amazonaws.com"
    assert endpoint_url("https://mturk.example.net") == "https://mturk.example.net"


def test_the_hit_type_carries_reward_durations_and_qualifications(
    stubbed: tuple[MTurkPlatform, Stubber, list[float]], batch: CrowdBatch
) -> None:
    adapter, stubber, _ = stubbed
    stubber.add_response(
        "create_hit_type",
        {"HITTypeId": HIT_TYPE},
        {
            "AutoApprovalDelayInSeconds": 72 * 3600,
            "AssignmentDurationInSeconds": 600,
            "Reward": "0.12",
            "Title": "Label: pet-match",
            "Keywords": "labelling, classification",
            "Description": "Choose the right label (match, no_match) for one item.",
            "QualificationRequirements": [
                {
                    "QualificationTypeId": APPROVAL_RATE,
                    "Comparator": "GreaterThanOrEqualTo",
                    "IntegerValues": [95],
                    "ActionsGuarded": "Accept",
                },
                {
                    "QualificationTypeId": "00000000000000000040",
                    "Comparator": "GreaterThanOrEqualTo",
                    "IntegerValues": [500],
                    "ActionsGuarded": "Accept",
                },
            ],
        },
    )

    assert adapter.publish_batch(batch=batch) == HIT_TYPE


def test_a_hit_frames_the_page_with_overlap_lifetime_and_a_retry_token(
    stubbed: tuple[MTurkPlatform, Stubber, list[float]], batch: CrowdBatch
) -> None:
    adapter, stubber, _ = stubbed
    batch.remote_id = HIT_TYPE
    task = batch.tasks.get()
    token = request_token(batch, task)
    stubber.add_response(
        "create_hit_with_hit_type",
        {"HIT": {"HITId": HIT, "HITTypeId": HIT_TYPE, "MaxAssignments": 3}},
        {
            "HITTypeId": HIT_TYPE,
            "MaxAssignments": 3,
            "LifetimeInSeconds": 72 * 3600,
            "Question": ANY,
            "RequesterAnnotation": f"quorum mturk-{batch.pk} item {task.item_id}",
            "UniqueRequestToken": token,
        },
    )

    assert adapter.publish_task(batch=batch, task=task) == HIT
    assert len(token) <= 64 and token == request_token(batch, task)
    question = adapter.question(batch)
    assert "<ExternalURL>https://quorum.example.org/ext/mturk/pet-match/</ExternalURL>" in question
    assert "ExternalQuestion.xsd" in question


def test_a_repeated_token_returns_the_hit_made_before(
    stubbed: tuple[MTurkPlatform, Stubber, list[float]], batch: CrowdBatch
) -> None:
    adapter, stubber, _ = stubbed
    batch.remote_id = HIT_TYPE
    stubber.add_client_error(
        "create_hit_with_hit_type",
        service_error_code="RequestError",
        service_message=f"The HIT with ID {HIT} already exists.",
        modeled_fields={"TurkErrorCode": "AWS.MechanicalTurk.HitAlreadyExists"},
    )

    assert adapter.publish_task(batch=batch, task=batch.tasks.get()) == HIT


def test_assignments_are_read_page_by_page(
    stubbed: tuple[MTurkPlatform, Stubber, list[float]], batch: CrowdBatch
) -> None:
    adapter, stubber, _ = stubbed
    task = CrowdTask(batch=batch, item_id=1, remote_id=HIT)
    statuses = ["Submitted", "Approved", "Rejected"]
    now = datetime.now(UTC)

    def assignment(n: int, label: str, status: str) -> dict[str, Any]:
        return {
            "AssignmentId": f"A{n}",
            "WorkerId": f"W{n}",
            "HITId": HIT,
            "AssignmentStatus": status,
            "Answer": answer_xml(label),
            "SubmitTime": now,
        }

    stubber.add_response(
        "list_assignments_for_hit",
        {"NextToken": "p2", "NumResults": 1, "Assignments": [assignment(1, "match", "Submitted")]},
        {"HITId": HIT, "MaxResults": 100, "AssignmentStatuses": statuses},
    )
    stubber.add_response(
        "list_assignments_for_hit",
        {"NumResults": 1, "Assignments": [assignment(2, "no_match", "Approved")]},
        {"HITId": HIT, "MaxResults": 100, "AssignmentStatuses": statuses, "NextToken": "p2"},
    )

    found = list(adapter.submissions(task=task))

    assert [(s.remote_id, s.worker_id, s.answer, s.status, s.duration_ms) for s in found] == [
        ("A1", "W1", "match", "submitted", 1500),
        ("A2", "W2", "no_match", "approved", 1500),
    ]


@pytest.mark.parametrize(
    ("operation", "method", "params"),
    [
        ("approve_assignment", "pay", {"AssignmentId": ASSIGNMENT, "RequesterFeedback": "Thanks"}),
        (
            "reject_assignment",
            "refuse",
            {"AssignmentId": ASSIGNMENT, "RequesterFeedback": "Thanks"},
        ),
    ],
)
def test_pay_and_refuse_carry_feedback_for_the_worker(
    stubbed: tuple[MTurkPlatform, Stubber, list[float]],
    operation: str,
    method: str,
    params: dict[str, Any],
) -> None:
    adapter, stubber, _ = stubbed
    stubber.add_response(operation, {}, params)
    assignment = CrowdAssignment(remote_id=ASSIGNMENT, worker_id="W1", feedback="Thanks")

    assert getattr(adapter, method)(assignment=assignment) is True


def test_block_bonus_expire_delete_and_balance(
    stubbed: tuple[MTurkPlatform, Stubber, list[float]],
) -> None:
    adapter, stubber, _ = stubbed
    stubber.add_response("create_worker_block", {}, {"WorkerId": "W1", "Reason": "spam"})
    stubber.add_response(
        "send_bonus",
        {},
        {
            "WorkerId": "W1",
            "BonusAmount": "0.50",
            "AssignmentId": ASSIGNMENT,
            "Reason": "Great work",
            "UniqueRequestToken": f"quorum-bonus-{ASSIGNMENT}",
        },
    )
    stubber.add_response("update_expiration_for_hit", {}, {"HITId": HIT, "ExpireAt": LONG_AGO})
    stubber.add_response("delete_hit", {}, {"HITId": HIT})
    stubber.add_response(
        "get_account_balance", {"AvailableBalance": "10000.00", "OnHoldBalance": "0.00"}, {}
    )
    assignment = CrowdAssignment(remote_id=ASSIGNMENT, worker_id="W1")
    task = CrowdTask(remote_id=HIT)

    assert adapter.block(worker_id="W1", reason="spam")
    assert adapter.bonus(assignment=assignment, amount=Decimal("0.5"), reason="Great work")
    assert adapter.expire_task(task=task) and adapter.delete_task(task=task)
    assert adapter.balance() == Decimal("10000.00")


def test_a_service_fault_is_tried_again_with_growing_waits(
    stubbed: tuple[MTurkPlatform, Stubber, list[float]],
) -> None:
    adapter, stubber, sleeps = stubbed
    for _ in range(2):
        stubber.add_client_error("get_account_balance", "ServiceFault", "Amazon is unwell", 500)
    stubber.add_response("get_account_balance", {"AvailableBalance": "5.00"}, {})

    assert adapter.balance() == Decimal("5.00")
    assert sleeps == [1.0, 2.0]


def test_a_lasting_service_fault_becomes_a_clear_error(
    stubbed: tuple[MTurkPlatform, Stubber, list[float]],
) -> None:
    adapter, stubber, sleeps = stubbed
    for _ in range(5):
        stubber.add_client_error("delete_hit", "ServiceFault", "Amazon is unwell", 500)

    with pytest.raises(PlatformError, match="failed on its side 5 times"):
        adapter.delete_task(task=CrowdTask(remote_id=HIT))
    assert sleeps == [1.0, 2.0, 4.0, 8.0]


def test_a_request_error_is_surfaced_at_once(
    stubbed: tuple[MTurkPlatform, Stubber, list[float]],
) -> None:
    adapter, stubber, sleeps = stubbed
    stubber.add_client_error(
        "reject_assignment", "RequestError", "Assignment is not in the Submitted status", 400
    )

    with pytest.raises(PlatformError) as caught:
        adapter.refuse(assignment=CrowdAssignment(remote_id=ASSIGNMENT, feedback="No"))

    assert caught.value.message == (
        "Mechanical Turk refused reject_assignment: Assignment is not in the Submitted status"
    )
    assert sleeps == []


def test_an_answer_document_is_read_leniently() -> None:
    assert parse_answer(answer_xml("no_match", None)) == ("no_match", None)
    assert parse_answer("<not xml") == (None, None)
    assert parse_answer("<QuestionFormAnswers/>") == (None, None)


def test_a_publication_cut_short_resumes_without_posting_twice(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(3)
    batch = services.crowd_batch_create(
        project=project, platform="mturk", size=3, reward="0.05", assignments=2, user=None
    )
    # The first HIT: Amazon fails on its side once (tried again). The second: made, but the
    # answer is lost on the way back.
    fault = {"Error": {"Code": "ServiceFault", "Message": "unwell"}}
    fake_mturk.failures["create_hit_with_hit_type"] = [ClientError(fault, "CreateHITWithHITType")]  # type: ignore[arg-type]
    calls = 0
    original = fake_mturk.create_hit_with_hit_type

    def flaky(**params: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 3:
            fake_mturk.lose_next_answer = True
        return original(**params)

    fake_mturk.create_hit_with_hit_type = flaky  # type: ignore[method-assign]

    with pytest.raises(PlatformError, match="could not be reached"):
        services.crowd_batch_publish(batch=batch)
    batch.refresh_from_db()
    assert batch.status == CrowdBatch.Status.FAILED and "could not be reached" in batch.error

    services.crowd_batch_publish(batch=batch)

    batch.refresh_from_db()
    assert batch.status == CrowdBatch.Status.OPEN and batch.error == ""
    assert len(fake_mturk.hits) == 3, "the HIT whose answer was lost is not posted again"
    assert fake_mturk.sleeps == [1.0]  # type: ignore[attr-defined]
    assert sorted(batch.tasks.values_list("remote_id", flat=True)) == sorted(fake_mturk.hits)


def test_a_request_error_while_settling_is_kept_for_the_engineer(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    from tests.labelling.crowd.fakes import request_error

    project = make_queued(1)
    batch = services.crowd_batch_create(
        project=project, platform="mturk", size=1, reward="0.05", assignments=1, user=None
    )
    services.crowd_batch_publish(batch=batch)
    fake_mturk.work(batch.tasks.get().remote_id, "W1", "match")
    services.crowd_batch_sync(batch=batch)
    fake_mturk.failures["approve_assignment"] = [
        request_error("ApproveAssignment", "Insufficient funds")
    ]

    result = services.crowd_batch_settle(batch=batch)

    assert result.errors == [
        f"assignment {batch.assignments.get().remote_id}: "
        "Mechanical Turk refused approve_assignment: Insufficient funds"
    ]
    assert batch.assignments.get().error.endswith("Insufficient funds")
    assert services.crowd_batch_settle(batch=batch).errors == []
    assert batch.assignments.get().status == "approved"
