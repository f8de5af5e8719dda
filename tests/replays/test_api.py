"""The replay API through its real URLs: requesting dry runs and executes, the preflight matrix answered 409, reading
replays and downloading their report and evidence, visibility, and every refusal of a bad body."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from approvals.models import ApprovalRequest, ApprovalStatus, SubjectKind
from approvals.services import approval_decide, approval_request
from approvals.tokens import user_token_create
from incidents.models import Command
from incidents.services import environment_set_posture
from replays.engine.formats import format_timestamp
from replays.models import ReplayExecution
from replays.services import execute_digest, execute_summary, replay_request_approval, replay_request_dry_run
from traceflux.audit.models import AuditEvent

from .conftest import WINDOW_START, World, approve_execute, run_dry_run

pytestmark = pytest.mark.django_db

LIST = reverse("replays-api:replay-list")


def detail(pk: int) -> str:
    return reverse("replays-api:replay-detail", args=[pk])


def report(pk: int) -> str:
    return reverse("replays-api:replay-report", args=[pk])


def evidence(pk: int) -> str:
    return reverse("replays-api:replay-evidence", args=[pk])


def client_for(user) -> APIClient:
    _, plaintext = user_token_create(user=user, name="terminal", actor=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    return client


def dry_run_body(world: World, **extra: Any) -> dict[str, Any]:
    return {"mode": "dry_run", "incident": world.incident.ref, "artifact": world.bundle.pk, **extra}


def post(client: APIClient, body: Any):
    return client.post(LIST, body, format="json")


def api_dry_run(client: APIClient, world: World, capture, **extra: Any) -> ReplayExecution:
    """A dry run requested through the API and run by the worker (the eager task, once the request commits)."""
    with capture(execute=True):
        response = post(client, dry_run_body(world, **extra))
    assert response.status_code == 202, response.json()
    execution = ReplayExecution.objects.get(pk=response.json()["id"])
    assert execution.status == "succeeded", (execution.error, execution.checks)
    return execution


# --- requesting a dry run ------------------------------------------------------------------------------------------


def test_it_accepts_a_dry_run_with_a_personal_token(prod, operator):
    response = post(client_for(operator), dry_run_body(prod))

    assert response.status_code == 202, response.json()
    body = response.json()
    execution = ReplayExecution.objects.get()
    assert body == {
        "id": execution.pk,
        "status": "queued",
        "url": f"http://testserver/api/v1/replays/{execution.pk}/",
        "html_url": f"http://testserver/replays/{execution.pk}/",
    }
    assert response["Location"] == body["url"]
    assert execution.mode == "dry_run"
    assert execution.status == "queued"
    assert execution.triggered_by == operator
    assert execution.incident == prod.incident and execution.artifact == prod.bundle
    assert execution.pipeline_version == prod.baseline  # resolved from the artifact's spec hash
    assert execution.enqueue_count == 1
    assert AuditEvent.objects.filter(action="replay.requested", target_id=str(execution.pk)).exists()


def test_it_accepts_a_dry_run_with_a_session_and_every_input(prod, operator):
    client = APIClient()
    client.force_login(operator)
    start, end = WINDOW_START + timedelta(minutes=1), WINDOW_START + timedelta(minutes=3)

    response = post(client, {
        "mode": "dry_run",
        "incident": prod.incident.pk,
        "artifact": prod.bundle.pk,
        "pipeline_version": prod.baseline.label,
        "compare_version": prod.tightened.pk,
        "scope": {"pop": "POP-12", "service": "edge-gw"},
        "window": {"start": format_timestamp(start), "end": "2026-02-26T15:03:00+01:00"},
        "controls": {"disabled_actions": ["page_oncall"], "max_pops": 1},
    })

    assert response.status_code == 202, response.json()
    execution = ReplayExecution.objects.get(pk=response.json()["id"])
    assert execution.triggered_by == operator
    assert execution.compare_version == prod.tightened
    assert execution.scope == {"pop": "POP-12", "service": "edge-gw"}
    assert (execution.window_start, execution.window_end) == (start, end)
    assert execution.controls == {"disabled_actions": ["page_oncall"], "max_pops": 1}


def test_it_runs_the_dry_run_once_the_request_commits_and_shows_it(
    prod, operator, django_capture_on_commit_callbacks
):
    client = client_for(operator)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, dry_run_body(prod))
    assert response.status_code == 202
    assert response.json()["status"] == "queued"  # the answer is given before the worker takes it

    shown = client.get(detail(response.json()["id"]))

    assert shown.status_code == 200
    body = shown.json()
    execution = ReplayExecution.objects.get(pk=body["id"])
    assert body["status"] == execution.status == "succeeded"
    assert [body["stages"][name]["status"] for name in ("ingest", "correlate", "aggregate", "report")] == ["done"] * 4
    assert body["stages"]["ingest"]["counts"]["signals_in"] == 600
    assert body["checks"] == [{"name": "posture", "ok": True, "detail": execution.checks[0]["detail"]}]
    assert body["summary"]["parity_score"] == execution.summary["parity_score"]
    assert body["audit_record"]["audit_v"] == 1
    assert body["inputs"] == {
        "incident": prod.incident.ref,
        "environment": "prod",
        "artifact": {"id": prod.bundle.pk, "sha256": prod.bundle.sha256, "size": prod.bundle.size,
                     "window_start": "2026-02-26T14:00:00Z", "window_end": body["inputs"]["artifact"]["window_end"]},
        "pipeline_version": {"id": prod.baseline.pk, "label": "v1-baseline", "spec_hash": prod.baseline.spec_hash},
        "compare_version": None,
        "mode": "dry_run",
        "dry_run": None,
        "scope": {},
        "window": None,
        "controls": {},
    }
    assert body["triggered_by"] == "operator"
    assert body["task_id"] == execution.task_id
    assert body["approval"] is None
    assert body["error"] == ""
    assert body["report_sha256"] == execution.report_sha256 and len(body["report_sha256"]) == 64
    assert body["evidence_sha256"] == execution.evidence_sha256
    assert body["report_url"] == f"http://testserver{report(execution.pk)}"
    assert body["evidence_url"] == f"http://testserver{evidence(execution.pk)}"
    assert body["commands"] is None  # a dry run sends nothing
    assert body["created_at"] and body["started_at"] and body["finished_at"]


def test_it_serves_the_report_and_the_evidence_as_stored(prod, operator, django_capture_on_commit_callbacks):
    execution = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    client = client_for(operator)

    got_report = client.get(report(execution.pk))
    got_evidence = client.get(evidence(execution.pk), HTTP_ACCEPT="application/gzip")

    assert got_report.status_code == 200
    assert got_report["Content-Type"] == "application/json"
    document = json.loads(b"".join(got_report.streaming_content))
    assert document["report_sha256"] == execution.report_sha256
    assert got_evidence.status_code == 200
    assert got_evidence["Content-Type"] == "application/gzip"
    assert got_evidence["Content-Disposition"] == f'attachment; filename="replay-{execution.pk}-evidence.tar.gz"'
    bundle = b"".join(got_evidence.streaming_content)
    assert bundle[:2] == b"\x1f\x8b"
    assert hashlib.sha256(bundle).hexdigest() == execution.evidence_sha256


def test_it_answers_404_for_the_report_and_evidence_while_there_are_none(prod, operator):
    client = client_for(operator)
    pk = post(client, dry_run_body(prod)).json()["id"]  # queued: the worker never ran

    for url, what in ((report(pk), "report"), (evidence(pk), "evidence bundle")):
        response = client.get(url, HTTP_ACCEPT="application/gzip")
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json() == {"detail": f"replay #{pk} has no {what} yet (it is queued)"}


# --- requesting an execute -----------------------------------------------------------------------------------------


def test_it_refuses_an_execute_before_approval_with_409(prod, operator, django_capture_on_commit_callbacks):
    dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    pending = replay_request_approval(dry_run=dry_run, user=operator, reason="drain POP-12")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = post(client_for(operator), {"mode": "execute", "dry_run": dry_run.pk})

    assert response.status_code == 409, response.json()
    body = response.json()
    execution = ReplayExecution.objects.get(pk=body["id"])
    assert body["status"] == "rejected" == execution.status
    assert [(c["name"], c["ok"]) for c in body["checks"]] == [
        ("dry_run", True), ("posture", True), ("pipeline_version", True), ("approval", False),
    ]
    assert f"#{pending.pk}" in body["checks"][3]["detail"] and "pending" in body["checks"][3]["detail"]
    assert body["detail"].startswith(f"replay #{execution.pk} was rejected: approval:")
    assert body["url"] == f"http://testserver/api/v1/replays/{execution.pk}/"
    assert execution.mode == "execute" and execution.dry_run == dry_run and execution.approval is None
    assert callbacks == []  # nothing queued
    assert not Command.objects.exists()
    pending.refresh_from_db()
    assert pending.status == ApprovalStatus.PENDING and pending.consumed_by_id is None
    assert AuditEvent.objects.filter(action="replay.rejected", target_id=str(execution.pk)).exists()


def test_it_executes_an_approved_dry_run_and_consumes_the_approval(
    prod, operator, approver1, approver2, django_capture_on_commit_callbacks
):
    dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    approval = approve_execute(dry_run, operator, approver1, approver2)
    client = client_for(operator)

    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, {"mode": "execute", "dry_run": str(dry_run.pk)})

    assert response.status_code == 202, response.json()
    execution = ReplayExecution.objects.get(pk=response.json()["id"])
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.CONSUMED and approval.consumed_by_id == execution.pk
    assert execution.approval == approval
    assert execution.status == "dispatching", (execution.error, execution.checks)
    body = client.get(detail(execution.pk)).json()
    assert body["mode"] == "execute" and body["dry_run"] == dry_run.pk and body["approval"] == approval.pk
    assert body["inputs"]["dry_run"] == dry_run.pk
    assert [c["name"] for c in body["checks"]] == ["dry_run", "posture", "pipeline_version", "approval"]
    commands = list(Command.objects.order_by("pk"))
    assert commands
    assert [(c["id"], c["agent"], c["status"], c["acknowledged_at"]) for c in body["commands"]] == [
        (c.pk, c.agent.name, "pending", None) for c in commands
    ]
    assert {c["action"] for c in body["commands"]} <= {a["action"] for a in execution.audit_record["actions"]}
    assert "payload" not in body["commands"][0]  # the signed credential is the agent's, not the reader's


# --- the preflight matrix: each check failing alone ----------------------------------------------------------------


def _an_unfinished_dry_run(world: World, operator, approvers, admin_user, client, capture) -> ReplayExecution:
    """A dry run the worker has not run yet, under an approval for exactly its digest."""
    dry_run = replay_request_dry_run(incident=world.incident, artifact=world.bundle, user=operator)
    request = approval_request(subject=dry_run, subject_kind=SubjectKind.REPLAY_EXECUTE, digest=execute_digest(dry_run),
                               summary={}, environment=world.environment, requested_by=operator, reason="early")
    for approver in approvers:
        approval_decide(request=request, approver=approver, decision="approve", comment="ok")
    return dry_run


def _a_locked_environment(world: World, operator, approvers, admin_user, client, capture) -> ReplayExecution:
    dry_run = api_dry_run(client, world, capture)
    approve_execute(dry_run, operator, *approvers)
    environment_set_posture(environment=world.environment, actor=admin_user, reason="freeze",
                            replay_policy="dry_run_only", execute_policy="deny")
    return dry_run


def _another_pipeline_version(world: World, operator, approvers, admin_user, client, capture) -> ReplayExecution:
    dry_run = api_dry_run(client, world, capture, pipeline_version=world.tightened.label)
    assert dry_run.pipeline_version == world.tightened
    # replay_request_approval refuses this dry run (its execute could never run), so the approval covering it is made
    # through the approvals service itself: preflight must still reject on the version alone.
    request = approval_request(
        subject=dry_run, subject_kind=SubjectKind.REPLAY_EXECUTE, digest=execute_digest(dry_run),
        summary=execute_summary(dry_run), environment=dry_run.environment, requested_by=operator, reason="drain",
    )
    for approver in approvers:
        approval_decide(request=request, approver=approver, decision="approve", comment="parity is high")
    return dry_run


def _no_approval(world: World, operator, approvers, admin_user, client, capture) -> ReplayExecution:
    return api_dry_run(client, world, capture)


@pytest.mark.parametrize(
    ("failing", "arrange", "says"),
    [
        ("dry_run", _an_unfinished_dry_run, "is queued; only a succeeded dry run can be promoted"),
        ("posture", _a_locked_environment, "execute is"),
        ("pipeline_version", _another_pipeline_version, "the artifact was produced by v1-baseline"),
        ("approval", _no_approval, "request execute approval first"),
    ],
)
def test_it_names_exactly_the_failing_preflight_check(
    failing: str, arrange: Callable[..., ReplayExecution], says: str,
    prod, operator, approver1, approver2, admin_user, django_capture_on_commit_callbacks,
):
    client = client_for(operator)
    dry_run = arrange(prod, operator, (approver1, approver2), admin_user, client, django_capture_on_commit_callbacks)
    approvals_before = dict(ApprovalRequest.objects.values_list("pk", "status"))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = post(client, {"mode": "execute", "dry_run": dry_run.pk})

    assert response.status_code == 409, response.json()
    body = response.json()
    assert [check["name"] for check in body["checks"] if not check["ok"]] == [failing]
    assert says in next(check["detail"] for check in body["checks"] if check["name"] == failing)
    execution = ReplayExecution.objects.get(pk=body["id"])
    assert execution.status == "rejected" and execution.checks == body["checks"]
    assert callbacks == []  # no task was queued
    assert not ReplayExecution.objects.filter(mode="execute").exclude(pk=execution.pk).exists()
    assert not Command.objects.exists()
    event = AuditEvent.objects.get(action="replay.rejected", target_id=str(execution.pk))
    assert event.outcome == "denied"
    assert dict(ApprovalRequest.objects.values_list("pk", "status")) == approvals_before
    assert not ApprovalRequest.objects.filter(status=ApprovalStatus.CONSUMED).exists()


def test_it_refuses_to_promote_an_execute(prod, operator, approver1, approver2, django_capture_on_commit_callbacks):
    dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    approve_execute(dry_run, operator, approver1, approver2)
    client = client_for(operator)
    execute_id = post(client, {"mode": "execute", "dry_run": dry_run.pk}).json()["id"]

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = post(client, {"mode": "execute", "dry_run": execute_id})

    assert response.status_code == 409
    checks = {check["name"]: check for check in response.json()["checks"]}
    assert not checks["dry_run"]["ok"] and "is an execute" in checks["dry_run"]["detail"]
    assert ReplayExecution.objects.get(pk=response.json()["id"]).status == "rejected"
    assert callbacks == []


def test_it_answers_409_for_a_dry_run_the_posture_denies(prod, operator, admin_user):
    environment_set_posture(environment=prod.environment, actor=admin_user, reason="freeze",
                            replay_policy="disabled", execute_policy="deny")

    response = post(client_for(operator), dry_run_body(prod))

    assert response.status_code == 409, response.json()
    assert response.json()["checks"][0]["name"] == "posture" and not response.json()["checks"][0]["ok"]
    assert ReplayExecution.objects.get().status == "rejected"


# --- who may see and do what ---------------------------------------------------------------------------------------


def test_it_hides_prod_replays_and_incidents_from_an_outsider(
    prod, operator, outsider, django_capture_on_commit_callbacks
):
    execution = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    client = client_for(outsider)

    assert client.get(detail(execution.pk)).status_code == 404
    assert client.get(report(execution.pk)).status_code == 404
    assert client.get(evidence(execution.pk)).status_code == 404
    assert client.get(LIST).json()["results"] == []
    refused = post(client, dry_run_body(prod))
    assert refused.status_code == 404
    assert refused.json()["detail"] == f"no incident {prod.incident.ref} that you can see"
    assert post(client, {"mode": "execute", "dry_run": execution.pk}).status_code == 404
    assert ReplayExecution.objects.count() == 1


def test_it_answers_404_for_an_artifact_of_an_environment_one_cannot_see(prod, dev, operator, outsider):
    from guardian.shortcuts import assign_perm

    for perm in ("incidents.view_environment", "incidents.replay_dry_run"):
        assign_perm(perm, outsider, dev.environment)

    response = post(client_for(outsider), dry_run_body(dev, artifact=prod.bundle.pk))

    assert response.status_code == 404
    assert response.json()["detail"] == f"no artifact #{prod.bundle.pk} that you can see"
    assert not ReplayExecution.objects.exists()


def test_it_forbids_a_replay_to_someone_who_may_only_look(
    prod, operator, approver1, django_capture_on_commit_callbacks
):
    dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    client = client_for(approver1)

    refused = post(client, dry_run_body(prod))
    refused_execute = post(client, {"mode": "execute", "dry_run": dry_run.pk})

    assert refused.status_code == 403
    assert refused.json()["detail"] == "you may not dry-run replays in prod"
    assert refused_execute.status_code == 403
    assert ReplayExecution.objects.count() == 1
    assert client.get(detail(dry_run.pk)).status_code == 200  # looking is allowed


def test_it_wants_credentials(prod, operator, django_capture_on_commit_callbacks):
    execution = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    anonymous = APIClient()

    for response in (anonymous.get(LIST), anonymous.get(detail(execution.pk)), post(anonymous, dry_run_body(prod))):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token"
    bad_token = APIClient()
    bad_token.credentials(HTTP_AUTHORIZATION="Token tfu_nope")
    assert bad_token.get(LIST).status_code == 401
    assert ReplayExecution.objects.count() == 1


def test_it_keeps_csrf_for_a_session(prod, operator):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator)

    response = post(client, dry_run_body(prod))

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not ReplayExecution.objects.exists()


# --- bad bodies ----------------------------------------------------------------------------------------------------


BAD_BODIES = [
    # (id, body (a callable of the world, or raw JSON text), the field named, words of the detail)
    ("a list", lambda w: [dry_run_body(w)], None, "the body must be a JSON object"),
    ("a string", lambda w: "dry_run", None, "the body must be a JSON object"),
    ("null", "null", None, "the body must be a JSON object"),
    ("an empty body", "", "mode", "required"),
    ("no mode", lambda w: {"incident": w.incident.ref, "artifact": w.bundle.pk}, "mode", "required"),
    ("an unknown mode", lambda w: dry_run_body(w, mode="wet_run"), "mode", '"wet_run" is not one of'),
    ("a mode of the wrong type", lambda w: dry_run_body(w, mode=["dry_run"]), "mode", "is not one of"),
    ("a bad window string", lambda w: dry_run_body(w, window={"start": "yesterday", "end": "2026-02-26T14:02:00Z"}),
     "window.start", "not an RFC 3339 timestamp"),
    ("a window without a zone", lambda w: dry_run_body(w, window={"start": "2026-02-26T14:01:00",
                                                                 "end": "2026-02-26T14:02:00Z"}),
     "window.start", "with a time zone"),
    ("a window with one end", lambda w: dry_run_body(w, window={"start": "2026-02-26T14:01:00Z"}),
     "window.end", "required"),
    ("a window with an extra key", lambda w: dry_run_body(w, window={"start": "2026-02-26T14:01:00Z",
                                                                    "end": "2026-02-26T14:02:00Z", "tz": "UTC"}),
     "window.tz", "not a field"),
    ("a window ending before it starts", lambda w: dry_run_body(w, window={"start": "2026-02-26T14:02:00Z",
                                                                          "end": "2026-02-26T14:01:00Z"}),
     "window.end", "after its start"),
    ("a window that is a string", lambda w: dry_run_body(w, window="2026-02-26T14:02:00Z/PT1M"), "window",
     "expected an object"),
    ("a window outside the capture", lambda w: dry_run_body(w, window={"start": "2026-02-26T13:00:00Z",
                                                                      "end": "2026-02-26T14:02:00Z"}),
     "window", "inside the captured window"),
    ("a scope with an unknown key", lambda w: dry_run_body(w, scope={"colour": "blue"}), "scope.colour",
     "not a scope key"),
    ("a scope that is a list", lambda w: dry_run_body(w, scope=["POP-12"]), "scope", "the scope is an object"),
    ("a scope value that is a number", lambda w: dry_run_body(w, scope={"pop": 12}), "scope.pop", "string"),
    ("a NUL in the scope", lambda w: dry_run_body(w, scope={"pop": "POP\x0012"}), "scope.pop", "NUL"),
    ("a deep scope", lambda w: dry_run_body(w, scope={"pop": [[[[["x"]]]]]}), "scope", "nested too deeply"),
    ("negative max_pops", lambda w: dry_run_body(w, controls={"max_pops": -1}), "controls.max_pops",
     "a whole number, 0 or more"),
    ("fractional max_regions", lambda w: dry_run_body(w, controls={"max_regions": 1.5}), "controls.max_regions",
     "whole number"),
    ("an unknown control", lambda w: dry_run_body(w, controls={"max_incidents": 1}), "controls.max_incidents",
     "not a control"),
    ("disabled_actions as a string", lambda w: dry_run_body(w, controls={"disabled_actions": "page_oncall"}),
     "controls.disabled_actions", "a list of action names"),
    ("an unknown key", lambda w: dry_run_body(w, controlls={"max_pops": 1}), "controlls", "not a field"),
    ("a dry_run key in a dry run", lambda w: dry_run_body(w, dry_run=1), "dry_run", "not a field"),
    ("an artifact that is text", lambda w: dry_run_body(w, artifact="latest"), "artifact", "valid integer"),
    ("an artifact id too large", lambda w: dry_run_body(w, artifact=10**30), "artifact", "less than or equal"),
    ("an artifact that is true", lambda w: dry_run_body(w, artifact=True), "artifact", "valid integer"),
    ("an incident that is a list", lambda w: dry_run_body(w, incident=[w.incident.ref]), "incident",
     "expected an id"),
    ("an incident id too large", lambda w: dry_run_body(w, incident=10**30), "incident", "not a valid id"),
    ("an incident that is blank", lambda w: dry_run_body(w, incident="  "), "incident", "blank"),
    ("an unknown pipeline version", lambda w: dry_run_body(w, pipeline_version="v9"), "pipeline_version",
     'no pipeline version "v9"'),
    ("comparing a version with itself", lambda w: dry_run_body(w, compare_version=w.baseline.label),
     "compare_version", "another version"),
    ("an artifact of another incident", lambda w: dry_run_body(w, artifact=w.other_bundle), "artifact",
     "is not a bundle of incident"),
    ("an execute with the incident", lambda w: {"mode": "execute", "dry_run": 1, "incident": w.incident.ref},
     "incident", "an execute inherits everything from its dry run"),
    ("an execute with controls", lambda w: {"mode": "execute", "dry_run": 1, "controls": {"max_pops": 0}},
     "controls", "an execute inherits everything"),
    ("an execute without its dry run", lambda w: {"mode": "execute"}, "dry_run", "required"),
    ("an execute of a huge id", lambda w: {"mode": "execute", "dry_run": 2**64}, "dry_run", "less than or equal"),
    ("invalid JSON", '{"mode": "dry_run",', None, "JSON parse error"),
    ("NaN", '{"mode": "dry_run", "artifact": NaN}', None, "JSON parse error"),
    ("a number too long to read", '{"mode": "dry_run", "artifact": ' + "9" * 5000 + "}", None, "JSON parse error"),
    ("deep nesting", "[" * 100_000 + "]" * 100_000, None, "JSON parse error"),
]


@pytest.fixture
def world_with_a_second_bundle(prod, dev) -> World:
    prod.other_bundle = dev.bundle.pk  # type: ignore[attr-defined]
    return prod


@pytest.mark.parametrize(("body", "field", "says"), [pytest.param(*case[1:], id=case[0]) for case in BAD_BODIES])
def test_it_names_what_is_wrong_with_a_body(body, field, says, world_with_a_second_bundle, operator):
    client = client_for(operator)
    if isinstance(body, str):
        response = client.generic("POST", LIST, body, content_type="application/json")
    else:
        response = post(client, body(world_with_a_second_bundle))

    assert response.status_code == 400, response.content
    answer = response.json()
    assert says in answer["detail"], answer
    assert answer.get("field") == field, answer
    assert not ReplayExecution.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="replay.").exists()


def test_it_refuses_a_body_that_is_not_json(prod, operator):
    response = client_for(operator).post(LIST, {"mode": "dry_run"})  # multipart, as a form would send it

    assert response.status_code == 415
    assert not ReplayExecution.objects.exists()


def test_it_answers_404_for_ids_that_name_nothing(prod, operator):
    client = client_for(operator)

    assert client.get(detail(2**70)).status_code == 404
    assert post(client, {"mode": "execute", "dry_run": 987654}).status_code == 404
    assert post(client, dry_run_body(prod, artifact=987654)).status_code == 404
    assert post(client, dry_run_body(prod, incident="INC-NOPE")).status_code == 404
    assert post(client, dry_run_body(prod, incident="\u00b2")).status_code == 404  # a digit, but no id
    assert client.get(f"{LIST}\u0661/").status_code == 404  # an Arabic-Indic one in the path
    assert not ReplayExecution.objects.exists()


# --- the list ------------------------------------------------------------------------------------------------------


def test_it_lists_and_filters_replays(prod, dev, operator, admin_user, outsider, django_capture_on_commit_callbacks):
    succeeded = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    tightened = replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=operator,
                                       pipeline_version=prod.tightened)
    in_dev = replay_request_dry_run(incident=dev.incident, artifact=dev.bundle, user=admin_user)
    client = client_for(operator)

    def ids(**query: str) -> list[int]:
        response = client.get(LIST, query)
        assert response.status_code == 200, response.json()
        return [item["id"] for item in response.json()["results"]]

    assert ids() == [in_dev.pk, tightened.pk, succeeded.pk]
    assert ids(environment="dev") == [in_dev.pk]
    assert ids(mode="dry_run") == [in_dev.pk, tightened.pk, succeeded.pk]
    assert ids(mode="execute") == []
    assert ids(status="succeeded") == [succeeded.pk]
    assert ids(status="queued", environment="prod") == [tightened.pk]
    assert ids(pipeline_version="v2-tightened") == [tightened.pk]
    assert ids(triggered_by="admin") == [in_dev.pk]
    assert ids(incident=prod.incident.ref) == [tightened.pk, succeeded.pk]
    item = client.get(LIST, {"incident": dev.incident.ref}).json()["results"][0]
    assert item == {
        "id": in_dev.pk, "url": f"http://testserver{detail(in_dev.pk)}", "html_url": f"http://testserver/replays/{in_dev.pk}/",
        "mode": "dry_run", "status": "queued", "incident": dev.incident.ref, "environment": "dev",
        "pipeline_version": "v1-baseline", "dry_run": None, "triggered_by": "admin",
        "created_at": item["created_at"], "finished_at": None,
    }
    refused = client.get(LIST, {"status": "sleepy"})
    assert refused.status_code == 400 and refused.json()["field"] == "status"
    assert client_for(outsider).get(LIST).json()["results"] == []


def test_it_pages_with_a_cursor(prod, operator):
    made = [replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=operator).pk for _ in range(3)]
    client = client_for(operator)

    first = client.get(LIST, {"page_size": 2}).json()
    second = client.get(first["next"]).json()

    assert [item["id"] for item in first["results"] + second["results"]] == made[::-1]
    assert second["next"] is None
    assert client.get(LIST, {"cursor": "garbage"}).status_code == 404


# --- the schema ----------------------------------------------------------------------------------------------------


def test_it_describes_the_replay_api_in_the_openapi_schema(client):
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    schema = json.loads(response.content)
    paths = schema["paths"]

    expected = {
        ("/api/v1/replays/", "get"): {"200", "400", "401", "404"},
        ("/api/v1/replays/", "post"): {"202", "400", "401", "403", "404", "409", "413", "415"},
        ("/api/v1/replays/{id}/", "get"): {"200", "401", "404"},
        ("/api/v1/replays/{id}/report/", "get"): {"200", "401", "404"},
        ("/api/v1/replays/{id}/evidence/", "get"): {"200", "401", "404"},
    }
    for (path, method), codes in expected.items():
        assert set(paths[path][method]["responses"]) == codes, path
    create = paths["/api/v1/replays/"]["post"]
    assert create["security"] == [{"userToken": []}, {"cookieAuth": []}]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReplayRequest"
    }
    assert list(paths["/api/v1/replays/{id}/evidence/"]["get"]["responses"]["200"]["content"]) == ["application/gzip"]
    listed = {p["name"] for p in paths["/api/v1/replays/"]["get"]["parameters"]}
    assert {"environment", "mode", "status", "pipeline_version", "triggered_by", "incident", "cursor"} <= listed
    assert schema["components"]["schemas"]["Replay"]["properties"]["status"]["allOf"] == [
        {"$ref": "#/components/schemas/ReplayStatusEnum"}
    ]
