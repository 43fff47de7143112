"""The outside-crowd workflow, publish → answers → consensus → pay, refuse, block → close, run the
same way over the in-memory Mechanical Turk and over the link-based platform (Prolific-style)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

import pytest

from core.exceptions import Conflict
from labelling.crowd import services
from labelling.crowd.models import CrowdAssignment, CrowdBatch, CrowdBlock, CrowdTask
from labelling.crowd.services import REFUSE_FEEDBACK, work
from labelling.models import Item, Label, Labeller, LabellerDecision, Project, QueueEntry
from labelling.services.consensus import consensus_compute
from labelling.services.labellers import labeller_approve, labeller_reject
from tests.labelling.crowd.fakes import FakeMTurk

pytestmark = pytest.mark.django_db

HONEST = ("w-ann", "w-bob", "w-cat")
SPAMMER = "w-spam"


def truth(task: CrowdTask) -> str:
    return "match" if int(task.item.external_id[1:]) % 2 == 0 else "no_match"


class Crowd(Protocol):
    platform: str

    def answer(self, batch: CrowdBatch, task: CrowdTask, worker: str, label: str) -> None: ...

    def carry_out(self, project: Project) -> None: ...


class MTurkCrowd:
    """Workers on Amazon: accept the HIT, answer on the framed page (saved in Quorum first),
    and the form goes on to Amazon, which reports it at the next synchronisation."""

    platform = "mturk"

    def __init__(self, fake: FakeMTurk) -> None:
        self.fake = fake

    def answer(self, batch: CrowdBatch, task: CrowdTask, worker: str, label: str) -> None:
        assignment_id = self.fake.work(task.remote_id, worker, label)
        services.crowd_mturk_answer(
            task=task,
            assignment_id=assignment_id,
            worker_id=worker,
            answer=label,
            duration_ms=1500,
        )

    def carry_out(self, project: Project) -> None:
        """Amazon carries decisions out through the API: nothing for the engineer to do."""


class LinkCrowd:
    """Workers sent by a link-based platform: they answer on Quorum's study page."""

    platform = "prolific"

    def answer(self, batch: CrowdBatch, task: CrowdTask, worker: str, label: str) -> None:
        services.crowd_link_answer(
            batch=batch,
            task_id=task.pk,
            worker_id=worker,
            session_id=f"S-{worker}",
            study_id="STUDY-1",
            answer=label,
            duration_ms=1500,
        )

    def carry_out(self, project: Project) -> None:
        """The engineer applies the decisions on the platform's site and says so."""
        for assignment in CrowdAssignment.objects.filter(
            batch__project=project, applied_at__isnull=True
        ).exclude(decision=""):
            services.crowd_decision_applied(assignment=assignment)
        for block in CrowdBlock.objects.filter(project=project, applied_at__isnull=True):
            services.crowd_block_applied(block=block)


@pytest.fixture(params=["mturk", "prolific"])
def crowd(request: pytest.FixtureRequest, fake_mturk: FakeMTurk) -> Crowd:
    return MTurkCrowd(fake_mturk) if request.param == "mturk" else LinkCrowd()


def publish(project: Project, platform: str, size: int = 24, **fields: Any) -> CrowdBatch:
    values = {"reward": "0.10", "assignments": 4, **fields}
    batch = services.crowd_batch_create(
        project=project, platform=platform, size=size, user=None, **values
    )
    return services.crowd_batch_publish(batch=batch)


def everyone_answers(crowd: Crowd, batch: CrowdBatch, workers: tuple[str, ...]) -> None:
    for task in batch.tasks.select_related("item").order_by("id"):
        for worker in workers:
            crowd.answer(batch, task, worker, "match" if worker == SPAMMER else truth(task))


def test_a_batch_goes_from_publish_to_paid_with_the_spammer_refused_and_blocked(
    crowd: Crowd, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(24)
    batch = publish(project, crowd.platform)
    assert batch.status == CrowdBatch.Status.OPEN and batch.tasks.count() == 24

    everyone_answers(crowd, batch, (*HONEST, SPAMMER))
    services.crowd_batch_sync(batch=batch)

    labels = Label.objects.filter(project=project, batch=batch.name, state="valid")
    assert labels.count() == 96 and set(labels.values_list("source", flat=True)) == {crowd.platform}
    entries = QueueEntry.objects.filter(project=project)
    assert set(entries.values_list("labels_count", flat=True)) == {4}, "the queue counts them"
    spam = Labeller.objects.get(project=project, platform=crowd.platform, worker_id=SPAMMER)
    consensus_compute(project=project)
    spam.refresh_from_db()
    assert "constant" in spam.flags and spam.status == Labeller.Status.PAUSED

    first = services.crowd_batch_settle(batch=batch)
    assert (first.paid, first.refused, first.waiting, first.errors) == (72, 0, 24, [])

    labeller_reject(labeller=spam, user=None, reason="always 'match'")
    second = services.crowd_batch_settle(batch=batch)
    assert (second.paid, second.refused, second.waiting, second.blocked) == (0, 24, 0, 1)
    crowd.carry_out(project)

    result = services.crowd_batch_close(batch=batch)
    assert result.errors == []
    batch.refresh_from_db()
    assert batch.status == CrowdBatch.Status.CLOSED
    by_status = {s: batch.assignments.filter(status=s).count() for s in ("approved", "rejected")}
    assert by_status == {"approved": 72, "rejected": 24}
    refused = batch.assignments.filter(worker_id=SPAMMER)
    assert set(refused.values_list("feedback", flat=True)) == {REFUSE_FEEDBACK["constant"]}
    spam.refresh_from_db()
    assert spam.status == Labeller.Status.BLOCKED
    assert not batch.assignments.filter(applied_at__isnull=True).exists()
    assert not batch.tasks.filter(deleted_at__isnull=True).exists()


def test_on_mechanical_turk_the_decisions_reach_amazon(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(24)
    batch = publish(project, "mturk")
    everyone_answers(MTurkCrowd(fake_mturk), batch, (*HONEST, SPAMMER))
    services.crowd_batch_sync(batch=batch)
    consensus_compute(project=project)
    labeller_reject(labeller=Labeller.objects.get(worker_id=SPAMMER), user=None, reason="constant")

    services.crowd_batch_close(batch=batch)

    statuses = [(a["WorkerId"], a["AssignmentStatus"]) for a in fake_mturk.assignments.values()]
    assert {s for w, s in statuses if w == SPAMMER} == {"Rejected"}
    assert {s for w, s in statuses if w != SPAMMER} == {"Approved"}
    assert set(fake_mturk.blocks) == {SPAMMER}
    assert all(hit["deleted"] for hit in fake_mturk.hits.values())
    assert len(fake_mturk.called("update_expiration_for_hit")) == 24
    hit = next(iter(fake_mturk.hits.values()))
    assert hit["MaxAssignments"] == 4 and hit["LifetimeInSeconds"] == 72 * 3600
    assert "https://quorum.example.org/ext/mturk/pet-match/" in hit["Question"]


def test_on_a_link_platform_decisions_wait_for_the_engineer_to_apply_them(
    make_queued: Callable[..., Project],
) -> None:
    project = make_queued(3)
    batch = publish(project, "prolific", assignments=1)
    LinkCrowd().answer(batch, batch.tasks.first(), "PID1", "match")  # type: ignore[arg-type]

    result = services.crowd_batch_settle(batch=batch)

    assignment = batch.assignments.get()
    assert result.paid == 1 and assignment.decision == "pay"
    assert assignment.applied_at is None and assignment.status == "submitted"
    services.crowd_decision_applied(assignment=assignment)
    assignment.refresh_from_db()
    assert assignment.status == "approved" and assignment.applied_at is not None


def test_a_paused_worker_is_paid_once_the_engineer_approves_them(
    crowd: Crowd, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(24)
    batch = publish(project, crowd.platform)
    everyone_answers(crowd, batch, (*HONEST, SPAMMER))
    services.crowd_batch_sync(batch=batch)
    consensus_compute(project=project)
    spam = Labeller.objects.get(worker_id=SPAMMER)
    assert services.crowd_batch_settle(batch=batch).waiting == 24

    labeller_approve(labeller=spam, user=None, reason="the items were all matches for them")

    assert services.crowd_batch_settle(batch=batch).paid == 24
    assert not CrowdBlock.objects.exists()


def test_rejecting_only_one_batch_of_a_worker_refuses_that_batch(
    crowd: Crowd, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(4)
    first = publish(project, crowd.platform, size=2, assignments=1)
    second = publish(project, crowd.platform, size=2, assignments=1)
    for batch in (first, second):
        everyone_answers(crowd, batch, ("w-ann",))
        services.crowd_batch_sync(batch=batch)
    ann = Labeller.objects.get(worker_id="w-ann")

    labeller_reject(labeller=ann, user=None, reason="careless", batch=first.name)

    assert services.crowd_batch_settle(batch=first).refused == 2
    assert services.crowd_batch_settle(batch=second).paid == 2
    ann.refresh_from_db()
    assert ann.status == Labeller.Status.ACTIVE and not CrowdBlock.objects.exists()


def test_the_same_assignment_seen_twice_is_recorded_once(
    crowd: Crowd, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(2)
    batch = publish(project, crowd.platform, assignments=2)
    everyone_answers(crowd, batch, ("w-ann",))
    services.crowd_batch_sync(batch=batch)
    first = batch.assignments.order_by("id").select_related("task").first()
    assert first is not None

    assert services.crowd_batch_sync(batch=batch) == 0
    # The worker's browser sends the same answer again (a reload, a double click).
    if crowd.platform == "mturk":
        services.crowd_mturk_answer(
            task=first.task,
            assignment_id=first.remote_id,
            worker_id="w-ann",
            answer=first.answer,
            duration_ms=None,
        )
    else:
        crowd.answer(batch, first.task, "w-ann", first.answer)

    assert batch.assignments.count() == 2
    assert Label.objects.filter(batch=batch.name).count() == 2
    assert Item.objects.filter(project=project, state="collecting").count() == 2


def test_a_rejected_workers_new_answers_are_refused_and_give_no_label(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(2)
    batch = publish(project, "mturk", assignments=2)
    task = batch.tasks.order_by("id").first()
    assert task is not None
    crowd = MTurkCrowd(fake_mturk)
    crowd.answer(batch, task, "w-ann", "match")
    services.crowd_batch_sync(batch=batch)
    labeller_reject(labeller=Labeller.objects.get(worker_id="w-ann"), user=None, reason="spam")
    # A HIT accepted before the rejection, submitted after it.
    other = batch.tasks.exclude(pk=task.pk).get()
    fake_mturk.work(other.remote_id, "w-ann", "match")

    services.crowd_batch_sync(batch=batch)
    result = services.crowd_batch_settle(batch=batch)

    assert result.refused == 2
    assert not Label.objects.filter(labeller__worker_id="w-ann", state="valid").exists()


def test_items_of_an_open_batch_are_not_published_twice_and_return_when_it_closes(
    crowd: Crowd, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(3)
    batch = publish(project, crowd.platform, size=2)

    second = publish(project, crowd.platform, size=5)
    assert second.tasks.count() == 1
    with pytest.raises(Exception, match="nothing to publish"):
        publish(project, crowd.platform, size=5)

    services.crowd_batch_close(batch=batch)
    assert services.crowd_items_available(project).count() == 2


def test_the_cost_estimate_adds_amazons_fee(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(12)

    small = services.crowd_estimate(
        project=project, platform="mturk", size=10, reward="0.10", assignments=3
    )
    large = services.crowd_estimate(
        project=project, platform="mturk", size=50, reward="0.10", assignments=10
    )
    tiny = services.crowd_estimate(
        project=project, platform="mturk", size=1, reward="0.01", assignments=1
    )

    assert (small.workers_pay, small.fees, small.total) == (
        Decimal("3.00"),
        Decimal("0.60"),
        Decimal("3.60"),
    )
    assert large.items == 12 and large.fee == Decimal("0.04") and large.total == Decimal("16.80")
    assert tiny.fee == Decimal("0.01"), "Amazon's fee is at least a cent"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"reward": "0"}, "reward"),
        ({"reward": "abc"}, "reward"),
        ({"assignments": 0}, "assignments"),
        ({"size": "-3"}, "size"),
        ({"platform": "toloka"}, "platform"),
    ],
)
def test_a_bad_batch_names_the_field_and_writes_nothing(
    make_queued: Callable[..., Project], fields: dict[str, Any], field: str
) -> None:
    project = make_queued(2)
    values = {"platform": "prolific", "size": 2, "reward": "0.1", "assignments": 2, **fields}

    with pytest.raises(Exception) as caught:
        services.crowd_batch_create(project=project, user=None, **values)

    assert [e.field for e in caught.value.errors] == [field]  # type: ignore[attr-defined]
    assert not CrowdBatch.objects.exists()


def test_mechanical_turk_needs_an_https_address(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project], settings: Any
) -> None:
    project = make_queued(2)
    settings.PUBLIC_URL = "http://quorum.example.org"

    with pytest.raises(Exception, match="cannot be used yet") as caught:
        publish(project, "mturk")

    assert "QUORUM_PUBLIC_URL" in caught.value.report()  # type: ignore[attr-defined]
    assert not CrowdBatch.objects.exists() and not fake_mturk.calls


def test_a_bonus_is_sent_once(fake_mturk: FakeMTurk, make_queued: Callable[..., Project]) -> None:
    project = make_queued(1)
    batch = publish(project, "mturk", assignments=1)
    everyone_answers(MTurkCrowd(fake_mturk), batch, ("w-ann",))
    services.crowd_batch_sync(batch=batch)
    assignment = batch.assignments.get()

    assert services.crowd_bonus_send(assignment=assignment, amount="0.25", reason="Careful work")
    with pytest.raises(Exception, match="already had a bonus"):
        services.crowd_bonus_send(assignment=assignment, amount="0.25", reason="Again")

    (sent,) = fake_mturk.called("send_bonus")
    assert sent["BonusAmount"] == "0.25" and sent["WorkerId"] == "w-ann"
    assert sent["UniqueRequestToken"] == f"quorum-bonus-{assignment.remote_id}"


def test_decisions_are_logged_for_the_blocked_spammer(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(24)
    batch = publish(project, "mturk")
    everyone_answers(MTurkCrowd(fake_mturk), batch, (*HONEST, SPAMMER))
    services.crowd_batch_sync(batch=batch)
    consensus_compute(project=project)
    spam = Labeller.objects.get(worker_id=SPAMMER)
    labeller_reject(labeller=spam, user=None, reason="constant")

    services.crowd_batch_settle(batch=batch)

    kinds = list(spam.decisions.order_by("id").values_list("kind", flat=True))
    assert kinds == [
        LabellerDecision.Kind.PAUSE,
        LabellerDecision.Kind.REJECT,
        LabellerDecision.Kind.BLOCK,
    ]


def test_a_returned_assignment_gives_way_to_the_next_one_of_the_same_worker(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(1)
    batch = publish(project, "mturk", assignments=2)
    task = batch.tasks.get()
    # Saved in Quorum, but the worker returned the HIT before it reached Amazon.
    services.crowd_mturk_answer(
        task=task, assignment_id="RETURNED", worker_id="w-ann", answer="match", duration_ms=None
    )
    MTurkCrowd(fake_mturk).answer(batch, task, "w-ann", "no_match")

    services.crowd_batch_sync(batch=batch)

    (assignment,) = batch.assignments.all()
    assert assignment.remote_id != "RETURNED" and assignment.answer == "no_match"
    assert assignment.status == "submitted"


def test_settled_hits_are_not_asked_again(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(2)
    batch = publish(project, "mturk", assignments=1)
    everyone_answers(MTurkCrowd(fake_mturk), batch, ("w-ann",))
    services.crowd_batch_sync(batch=batch)
    services.crowd_batch_settle(batch=batch)
    asked = len(fake_mturk.called("list_assignments_for_hit"))

    services.crowd_batch_sync(batch=batch)

    assert len(fake_mturk.called("list_assignments_for_hit")) == asked


def test_the_beat_task_syncs_open_batches_and_keeps_amazons_errors_on_them(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project], settings: Any
) -> None:
    from labelling.tasks import sync_crowd_batches
    from tests.labelling.crowd.fakes import request_error

    project = make_queued(2)
    batch = publish(project, "mturk", assignments=1)
    everyone_answers(MTurkCrowd(fake_mturk), batch, ("w-ann",))
    fake_mturk.failures["approve_assignment"] = [request_error("ApproveAssignment", "No funds")]

    assert sync_crowd_batches.apply().get() == 1

    batch.refresh_from_db()
    assert batch.assignments.filter(status="submitted").count() == 1
    assert batch.assignments.filter(status="approved").count() == 1
    assert "No funds" in batch.error
    schedule = settings.CELERY_BEAT_SCHEDULE["sync-crowd-batches"]
    assert schedule["task"] == "labelling.sync_crowd_batches"


def test_a_closed_batch_is_deleted_on_amazon_once_its_last_answer_is_settled(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(1)
    batch = publish(project, "mturk", assignments=2)
    task = batch.tasks.get()
    crowd = MTurkCrowd(fake_mturk)
    crowd.answer(batch, task, "w-ann", "match")
    services.crowd_batch_sync(batch=batch)
    consensus_compute(project=project)
    Labeller.objects.filter(worker_id="w-ann").update(status="paused")

    services.crowd_batch_close(batch=batch)
    assert fake_mturk.hits[task.remote_id]["deleted"] is False, "an answer waits for a decision"

    labeller_approve(labeller=Labeller.objects.get(worker_id="w-ann"), user=None)
    services.crowd_sync_all()

    assert fake_mturk.hits[task.remote_id]["deleted"] is True
    task.refresh_from_db()
    assert task.deleted_at is not None


def test_a_batch_is_settled_by_one_process_at_a_time(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    from django.core.cache import cache

    project = make_queued(1)
    batch = publish(project, "mturk", assignments=1)
    everyone_answers(MTurkCrowd(fake_mturk), batch, ("w-ann",))
    services.crowd_batch_sync(batch=batch)
    cache.add(f"quorum:crowd-settle:{batch.pk}", 1)

    with pytest.raises(Exception, match="being settled right now"):
        services.crowd_batch_settle(batch=batch)
    assert services.crowd_sync_all() == 0 and not fake_mturk.called("approve_assignment")

    cache.delete(f"quorum:crowd-settle:{batch.pk}")
    assert services.crowd_batch_settle(batch=batch).paid == 1


def test_an_answer_recorded_meanwhile_by_another_process_is_taken_as_is(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_queued(1)
    batch = publish(project, "mturk", assignments=2)
    task = batch.tasks.get()
    services.crowd_answer_record(
        task=task,
        remote_id="A1",
        worker_id="w-ann",
        answer="match",
        duration_ms=None,
        confirmed=True,
    )
    # The other process's row was not there when this one looked.
    monkeypatch.setattr(work, "_returned", lambda *args: None)
    real_filter = CrowdAssignment.objects.filter
    calls = {"n": 0}

    def first_lookup_misses(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        found = real_filter(*args, **kwargs)
        return found.none() if calls["n"] == 1 else found

    monkeypatch.setattr(CrowdAssignment.objects, "filter", first_lookup_misses)

    again = services.crowd_answer_record(
        task=task,
        remote_id="A1",
        worker_id="w-ann",
        answer="match",
        duration_ms=None,
        confirmed=True,
    )

    monkeypatch.undo()
    assert again.remote_id == "A1" and CrowdAssignment.objects.count() == 1
    assert Label.objects.filter(batch=batch.name).count() == 1


def test_a_synchronisation_asks_for_one_consensus_run_however_many_answers_it_brings(
    fake_mturk: FakeMTurk,
    make_queued: Callable[..., Project],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    project = make_queued(4)
    batch = publish(project, "mturk", size=3, assignments=2)
    for task in batch.tasks.all():
        fake_mturk.work(task.remote_id, "w-ann", "match")
        fake_mturk.work(task.remote_id, "w-bob", "match")
    asked: list[int] = []
    monkeypatch.setattr(work, "consensus_schedule", lambda *, project_id: asked.append(1))

    with django_capture_on_commit_callbacks(execute=True):
        assert services.crowd_batch_sync(batch=batch) == 6
        assert services.crowd_batch_sync(batch=batch) == 0

    assert asked == [1]
    link = publish(project, "prolific", size=1, assignments=1)
    with django_capture_on_commit_callbacks(execute=True):
        LinkCrowd().answer(link, link.tasks.first(), "PID", "match")  # type: ignore[arg-type]
    assert asked == [1, 1]


def test_a_sync_writes_only_news_such_as_amazons_automatic_approval(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_queued(2)
    batch = publish(project, "mturk", assignments=2)
    everyone_answers(MTurkCrowd(fake_mturk), batch, ("w-ann", "w-bob"))
    services.crowd_batch_sync(batch=batch)
    recorded: list[str] = []
    real = work._record
    monkeypatch.setattr(
        work,
        "_record",
        lambda t, sub, done: (recorded.append(sub.remote_id), real(t, sub, done)),
    )
    services.crowd_batch_sync(batch=batch)
    assert recorded == []

    # The auto-approval delay passes on Amazon's side before Quorum decides.
    auto = next(iter(fake_mturk.assignments.values()))
    auto["AssignmentStatus"] = "Approved"
    services.crowd_batch_sync(batch=batch)

    assert recorded == [auto["AssignmentId"]]
    approved = batch.assignments.get(remote_id=auto["AssignmentId"])
    assert approved.status == "approved" and approved.decision == "pay" and approved.applied_at
    assert services.crowd_batch_settle(batch=batch).paid == 3


def test_a_blocked_workers_later_answers_are_refused_not_paid(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(2)
    batch = publish(project, "mturk", assignments=2)
    task = batch.tasks.order_by("id").first()
    assert task is not None
    MTurkCrowd(fake_mturk).answer(batch, task, "w-ann", "match")
    services.crowd_batch_sync(batch=batch)
    Labeller.objects.filter(worker_id="w-ann").update(status=Labeller.Status.BLOCKED)
    # Accepted on Amazon before the block reached it, submitted after.
    other = batch.tasks.exclude(pk=task.pk).get()
    fake_mturk.work(other.remote_id, "w-ann", "match")

    services.crowd_batch_sync(batch=batch)
    result = services.crowd_batch_settle(batch=batch)

    # The answer given before the block stays a valid label and is paid; the later one is not.
    assert (result.paid, result.refused) == (1, 1)
    later = CrowdAssignment.objects.get(task=other)
    assert later.decision == CrowdAssignment.Decision.REFUSE


def test_an_answer_that_cannot_be_stored_does_not_stop_the_batch(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(2)
    batch = publish(project, "mturk", assignments=2)
    first, second = batch.tasks.order_by("id")
    bad = fake_mturk.work(first.remote_id, "w-odd", "match")
    # What a worker can post to Amazon: a duration in superscript digits, an overlong answer.
    fake_mturk.assignments[bad]["Answer"] = (
        fake_mturk.assignments[bad]["Answer"]
        .replace("1500", "²")
        .replace(">match<", ">" + "x" * 300 + "<")
    )
    fake_mturk.work(second.remote_id, "w-ann", "match")

    services.crowd_batch_sync(batch=batch)

    assert CrowdAssignment.objects.get(worker_id="w-ann").answer == "match"
    odd = CrowdAssignment.objects.get(worker_id="w-odd")
    assert (len(odd.answer), odd.duration_ms) == (100, None)


def test_a_shared_study_link_cannot_give_an_item_more_answers_than_its_quota(
    make_queued: Callable[..., Project],
) -> None:
    project = make_queued(1)
    batch = publish(project, "prolific", size=1, assignments=2)
    task = batch.tasks.get()
    for worker in ("P1", "P2"):
        LinkCrowd().answer(batch, task, worker, "match")

    with pytest.raises(Conflict):
        LinkCrowd().answer(batch, task, "P3-made-up", "match")
    assert task.assignments.count() == 2
