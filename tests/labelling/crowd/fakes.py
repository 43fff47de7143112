"""An in-memory Mechanical Turk behind the real adapter: every call's parameters are checked
against botocore's service model, as the real service would, and nothing touches the network."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import botocore.session
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.validate import validate_parameters

MODEL = botocore.session.get_session().get_service_model("mturk")


def answer_xml(label: str, duration_ms: int | None = 1500) -> str:
    """The QuestionFormAnswers Amazon keeps for an ExternalQuestion's posted form."""
    fields = [("label", label)] + ([("duration_ms", str(duration_ms))] if duration_ms else [])
    answers = "".join(
        f"<Answer><QuestionIdentifier>{name}</QuestionIdentifier><FreeText>{value}</FreeText>"
        "</Answer>"
        for name, value in fields
    )
    return (
        '<?xml version="1.0" encoding="ASCII"?><QuestionFormAnswers xmlns="http://mechanical'
        'turk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd">'
        f"{answers}</QuestionFormAnswers>"
    )


def request_error(operation: str, message: str, turk_code: str = "") -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": "RequestError", "Message": message}}
    if turk_code:
        response["TurkErrorCode"] = turk_code
    return ClientError(response, operation)  # type: ignore[arg-type]


class FakeMTurk:
    """Just enough of Mechanical Turk for the workflow: HIT types, HITs, assignments, money."""

    def __init__(self, page_size: int = 2) -> None:
        self.page_size = page_size
        self.ids = itertools.count(1)
        self.hit_types: dict[str, dict[str, Any]] = {}
        self.hits: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, str] = {}
        self.assignments: dict[str, dict[str, Any]] = {}
        self.blocks: dict[str, str] = {}
        self.bonuses: dict[str, dict[str, Any]] = {}
        self.balance = Decimal("250.00")
        self.calls: list[tuple[str, dict[str, Any]]] = []
        # Operation name → errors to raise on its next calls, in order.
        self.failures: dict[str, list[Exception]] = {}
        # Create the HIT, then lose the answer (a timeout): the caller must retry safely.
        self.lose_next_answer = False

    def _call(self, python_name: str, params: dict[str, Any]) -> None:
        operation = MODEL.operation_model(
            next(n for n in MODEL.operation_names if _snake(n) == python_name)
        )
        validate_parameters(params, operation.input_shape)
        self.calls.append((python_name, params))
        if self.failures.get(python_name):
            raise self.failures[python_name].pop(0)

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids):0>{30 - len(prefix)}}"

    def called(self, name: str) -> list[dict[str, Any]]:
        return [params for op, params in self.calls if op == name]

    # ---- the service ----

    def create_hit_type(self, **params: Any) -> dict[str, Any]:
        self._call("create_hit_type", params)
        key = repr(sorted(params.items()))
        for hit_type_id, known in self.hit_types.items():
            if repr(sorted(known.items())) == key:
                return {"HITTypeId": hit_type_id}
        hit_type_id = self._id("HT")
        self.hit_types[hit_type_id] = params
        return {"HITTypeId": hit_type_id}

    def create_hit_with_hit_type(self, **params: Any) -> dict[str, Any]:
        self._call("create_hit_with_hit_type", params)
        token = params.get("UniqueRequestToken")
        if token in self.tokens:
            raise request_error(
                "CreateHITWithHITType",
                f"The HIT with ID {self.tokens[token]} already exists.",
                "AWS.MechanicalTurk.HitAlreadyExists",
            )
        hit_id = self._id("H")
        self.hits[hit_id] = {**params, "status": "Assignable", "deleted": False}
        if token:
            self.tokens[token] = hit_id
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise ReadTimeoutError(endpoint_url="https://mturk-requester-sandbox.invalid")
        return {"HIT": {"HITId": hit_id, "HITTypeId": params["HITTypeId"]}}

    def work(self, hit_id: str, worker_id: str, label: str) -> str:
        """A worker accepts the HIT and submits an answer (what Amazon's site does)."""
        hit = self.hits[hit_id]
        taken = [a for a in self.assignments.values() if a["HITId"] == hit_id]
        assert len(taken) < hit["MaxAssignments"], "the HIT has no assignment left"
        assert worker_id not in self.blocks, "a blocked worker cannot work"
        assignment_id = self._id("A")
        self.assignments[assignment_id] = {
            "AssignmentId": assignment_id,
            "WorkerId": worker_id,
            "HITId": hit_id,
            "AssignmentStatus": "Submitted",
            "Answer": answer_xml(label),
            "SubmitTime": datetime.now(UTC),
        }
        return assignment_id

    def list_assignments_for_hit(self, **params: Any) -> dict[str, Any]:
        self._call("list_assignments_for_hit", params)
        wanted = params.get("AssignmentStatuses") or ["Submitted", "Approved", "Rejected"]
        found = [
            dict(a)
            for a in self.assignments.values()
            if a["HITId"] == params["HITId"] and a["AssignmentStatus"] in wanted
        ]
        start = int(params.get("NextToken") or 0)
        page = found[start : start + self.page_size]
        response: dict[str, Any] = {"NumResults": len(page), "Assignments": page}
        if start + self.page_size < len(found):
            response["NextToken"] = str(start + self.page_size)
        return response

    def _decide(self, name: str, params: dict[str, Any], status: str) -> dict[str, Any]:
        self._call(name, params)
        assignment = self.assignments[params["AssignmentId"]]
        if assignment["AssignmentStatus"] != "Submitted":
            raise request_error(name, "This operation can be called with a status of: Submitted")
        assignment["AssignmentStatus"] = status
        assignment["RequesterFeedback"] = params.get("RequesterFeedback", "")
        return {}

    def approve_assignment(self, **params: Any) -> dict[str, Any]:
        return self._decide("approve_assignment", params, "Approved")

    def reject_assignment(self, **params: Any) -> dict[str, Any]:
        return self._decide("reject_assignment", params, "Rejected")

    def create_worker_block(self, **params: Any) -> dict[str, Any]:
        self._call("create_worker_block", params)
        self.blocks[params["WorkerId"]] = params["Reason"]
        return {}

    def send_bonus(self, **params: Any) -> dict[str, Any]:
        self._call("send_bonus", params)
        self.bonuses.setdefault(params.get("UniqueRequestToken") or params["AssignmentId"], params)
        return {}

    def update_expiration_for_hit(self, **params: Any) -> dict[str, Any]:
        self._call("update_expiration_for_hit", params)
        self.hits[params["HITId"]]["status"] = "Unassignable"
        return {}

    def delete_hit(self, **params: Any) -> dict[str, Any]:
        self._call("delete_hit", params)
        waiting = [
            a
            for a in self.assignments.values()
            if a["HITId"] == params["HITId"] and a["AssignmentStatus"] == "Submitted"
        ]
        if waiting:
            raise request_error("DeleteHIT", "This HIT is currently in the state 'Reviewable'.")
        self.hits[params["HITId"]]["deleted"] = True
        return {}

    def get_account_balance(self, **params: Any) -> dict[str, Any]:
        self._call("get_account_balance", params)
        return {"AvailableBalance": str(self.balance)}


def _snake(name: str) -> str:
    return botocore.xform_name(name)
