"""Gold answers (import_gold) and the threshold chooser that uses them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from core.exceptions import InvalidInput
from core.permissions import Role
from labelling.models import Item, Project, ThresholdChange
from labelling.services.gold import GoldResult, gold_import
from labelling.services.imports import predictions_import
from labelling.services.labellers import labeller_create
from labelling.services.thresholds import project_threshold_set
from labelling.thresholding import Goals, threshold_report

pytestmark = pytest.mark.django_db

# A worked example: ten items, p(match) and the true answer. Sorted by score, the positives sit
# at 0.9, 0.8, 0.7, 0.55, 0.3 and the negatives at 0.6, 0.4, 0.35, 0.2, 0.1. Of the 25
# positive-negative pairs the positive scores higher in 21, so the ROC AUC is 21/25 = 0.84.
WORKED = [
    (0.9, "match"), (0.8, "match"), (0.7, "match"), (0.6, "no_match"), (0.55, "match"),
    (0.4, "no_match"), (0.35, "no_match"), (0.3, "match"), (0.2, "no_match"), (0.1, "no_match"),
]  # fmt: skip


def load(project: Project, rows: list[tuple[float, str]], gold: bool = True) -> None:
    lines = [
        json.dumps(
            {
                "external_id": f"g{n}",
                "payload": {"n": n},
                "model_version": "m1",
                "probabilities": {"match": p, "no_match": round(1 - p, 10)},
            }
        )
        for n, (p, _) in enumerate(rows)
    ]
    predictions_import(project=project, stream=io.BytesIO("\n".join(lines).encode()), fmt="jsonl")
    if gold:
        answers = "\n".join(
            json.dumps({"external_id": f"g{n}", "label": label})
            for n, (_, label) in enumerate(rows)
        )
        gold_import(project=project, stream=io.BytesIO(answers.encode()), fmt="jsonl")


def gold_errors(project: Project, content: str, fmt: str = "jsonl") -> list[tuple[int | None, str]]:
    before = list(Item.objects.values_list("gold_label", flat=True))
    with pytest.raises(InvalidInput) as caught:
        gold_import(project=project, stream=io.BytesIO(content.encode()), fmt=fmt)
    assert list(Item.objects.values_list("gold_label", flat=True)) == before
    return [(e.line, e.field) for e in caught.value.errors]


def test_gold_import_marks_items_and_a_repeat_changes_nothing(project: Project) -> None:
    load(project, WORKED[:3], gold=False)
    content = (
        b'{"external_id": "g0", "label": "match"}\n{"external_id": "g1", "label": "no_match"}\n'
    )

    first = gold_import(project=project, stream=io.BytesIO(content), fmt="jsonl")
    again = gold_import(project=project, stream=io.BytesIO(content), fmt="jsonl")

    assert first == GoldResult(rows=2, marked=2, changed=0, unchanged=0)
    assert again == GoldResult(rows=2, marked=0, changed=0, unchanged=2)
    assert Item.objects.get(external_id="g1").gold_label == "no_match"
    assert Item.objects.get(external_id="g2").gold_label == ""


def test_gold_import_reads_csv_and_reports_a_changed_answer(project: Project) -> None:
    load(project, WORKED[:2], gold=False)
    gold_import(project=project, stream=io.BytesIO(b"external_id,label\ng0,match\n"), fmt="csv")

    result = gold_import(
        project=project, stream=io.BytesIO(b"external_id,label\ng0,no_match\n"), fmt="csv"
    )

    assert result.changed == 1
    assert Item.objects.get(external_id="g0").gold_label == "no_match"


def test_bad_gold_rows_are_named_and_nothing_is_written(project: Project) -> None:
    load(project, WORKED[:2], gold=False)

    assert gold_errors(project, '{"external_id": "g0", "label": "maybe"}') == [(1, "label")]
    assert gold_errors(project, '{"external_id": "nope", "label": "match"}') == [(1, "external_id")]
    assert gold_errors(project, '{"label": "match"}') == [(1, "external_id")]
    repeated = '{"external_id": "g0", "label": "match"}\n{"external_id": "g0", "label": "no_match"}'
    assert gold_errors(project, repeated) == [(2, "label")]
    assert gold_errors(project, "external_id,answer\ng0,match\n", "csv") == [(1, "label")]


def test_the_import_gold_command_prints_counts_and_exits_1_on_errors(
    project: Project, tmp_path: Path
) -> None:
    load(project, WORKED[:1], gold=False)
    good, bad = tmp_path / "gold.jsonl", tmp_path / "bad.jsonl"
    good.write_text('{"external_id": "g0", "label": "match"}\n')
    bad.write_text('{"external_id": "g0", "label": "cat"}\n')
    out = io.StringIO()

    call_command("import_gold", "pet-match", str(good), stdout=out)
    with pytest.raises(CommandError) as caught:
        call_command("import_gold", "pet-match", str(bad))

    assert out.getvalue().strip() == "rows: 1, newly gold: 1, changed: 0, unchanged: 0"
    assert caught.value.returncode == 1
    assert "line 1, field label: 'cat' is not in the project's label set" in str(caught.value)


def test_the_report_matches_the_worked_roc_example(project: Project) -> None:
    load(project, WORKED)

    report = threshold_report(project, "m1", Goals(cost_fp=1, cost_fn=1, precision=1.0, recall=0.8))

    assert (report.n, report.positives) == (10, 5)
    assert report.auc == pytest.approx(0.84)
    # At 0.5: predicted positive 0.9, 0.8, 0.7, 0.6, 0.55 → 4 true, 1 false positive.
    assert (report.current.precision, report.current.recall) == pytest.approx((0.8, 0.8))
    # Precision 1 is reached only above 0.6: the top three, recall 3/5.
    assert report.suggestions["precision"].threshold == pytest.approx(0.7)
    assert report.suggestions["precision"].recall == pytest.approx(0.6)
    # Recall 0.8 is first reached at 0.55 (four of five positives).
    assert report.suggestions["recall"].threshold == pytest.approx(0.55)
    # Equal costs: errors are fewest (2: one FP, one FN) at 0.55.
    assert report.suggestions["cost"].cost == pytest.approx(2)


def test_expensive_false_negatives_lower_the_suggested_threshold(project: Project) -> None:
    load(project, WORKED)

    cheap = threshold_report(project, "m1", Goals(cost_fp=1, cost_fn=1)).suggestions["cost"]
    dear = threshold_report(project, "m1", Goals(cost_fp=1, cost_fn=10)).suggestions["cost"]

    assert dear.threshold < cheap.threshold
    assert dear.recall == 1.0


def test_without_trusted_labels_of_both_classes_the_report_says_so(project: Project) -> None:
    load(project, WORKED[:3])

    report = threshold_report(project, "m1", Goals())

    assert "both classes" in report.problem and report.auc is None


def test_applying_a_threshold_is_kept_in_the_project_history(project: Project) -> None:
    load(project, WORKED)

    change = project_threshold_set(
        project=project, threshold=0.7, model_version="m1", user=None, note="fewer false alarms"
    )

    project.refresh_from_db()
    assert project.threshold == 0.7
    assert (change.old_threshold, change.new_threshold, change.note) == (
        0.5,
        0.7,
        "fewer false alarms",
    )
    assert change.basis == {
        "model_version": "m1",
        "trusted_labels": 10,
        "precision": 1.0,
        "recall": 0.6,
        "fpr": 0.0,
    }


@pytest.mark.parametrize("bad", [0, 1.5, float("nan"), -1])
def test_an_out_of_range_threshold_is_refused(project: Project, bad: float) -> None:
    with pytest.raises(InvalidInput, match="invalid threshold"):
        project_threshold_set(project=project, threshold=bad, model_version=None, user=None)
    assert not ThresholdChange.objects.exists()


def logged_in(project: Project, username: str, role: Role) -> Client:
    labeller_create(project=project, username=username, role=role)
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return client


def test_the_threshold_page_shows_curves_and_applies_a_suggestion(project: Project) -> None:
    load(project, WORKED)
    client = logged_in(project, "erin", Role.ENGINEER)

    page = client.get("/projects/pet-match/threshold/?cost_fp=1&cost_fn=1&precision=1")
    applied = client.post(
        "/projects/pet-match/threshold/", {"threshold": "0.7", "model_version": "m1", "note": "x"}
    )

    assert page.status_code == 200
    body = page.content.decode()
    assert "ROC AUC <strong>0.840</strong>" in body
    assert "<polyline" in body and "Apply" in body
    assert applied.status_code == 302
    project.refresh_from_db()
    assert project.threshold == 0.7
    assert "0.5" in client.get(applied["Location"]).content.decode()


def test_the_threshold_page_names_a_bad_goal_and_a_bad_threshold(project: Project) -> None:
    load(project, WORKED)
    client = logged_in(project, "erin", Role.ENGINEER)

    page = client.get("/projects/pet-match/threshold/?cost_fp=-1&cost_fn=1")
    client.post("/projects/pet-match/threshold/", {"threshold": "7"})

    assert "Ensure this value is greater than or equal to 0" in page.content.decode()
    project.refresh_from_db()
    assert project.threshold == 0.5


def test_the_threshold_page_is_for_engineers_only(project: Project) -> None:
    crowd = logged_in(project, "cora", Role.CROWD)
    expert = logged_in(project, "ezra", Role.EXPERT)

    assert crowd.get("/projects/pet-match/threshold/").status_code == 403
    assert expert.post("/projects/pet-match/threshold/", {"threshold": "0.9"}).status_code == 403
    assert Client().get("/projects/pet-match/threshold/").status_code == 302
    project.refresh_from_db()
    assert project.threshold == 0.5
