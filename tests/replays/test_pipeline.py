"""The replay pipeline through its services: dry run, approval, execute, signed dispatch, settling, redelivery."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from approvals.models import ApprovalStatus
from approvals.services import approval_revoke
from incidents.models import Command, IncidentNote
from incidents.services import environment_set_posture
from replays.engine.credentials import CredentialRefused
from replays.models import ReplayExecution
from replays.services import replay_commands, replay_request_dry_run, replay_run
from traceflux.audit.models import AuditEvent
from traceflux.signing import verification_keys

from .conftest import acknowledge_all, approve_execute, run_dry_run, run_execute


def verify_command(*args, **kwargs):
    from artifacts.client import verify_command as verify

    return verify(*args, **kwargs)


def test_it_runs_a_dry_run_to_a_report_without_creating_a_command(prod, operator, django_capture_on_commit_callbacks):
    execution = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    assert execution.status == "succeeded", execution.error
    assert execution.pipeline_version == prod.baseline  # resolved from the artifact's spec hash
    assert [execution.stages[s]["status"] for s in ("ingest", "correlate", "aggregate", "report")] == ["done"] * 4
    assert execution.stages["ingest"]["counts"]["signals_in"] == 600
    assert execution.summary["parity_score"] is not None
    assert len(execution.report_sha256) == 64 and len(execution.evidence_sha256) == 64
    assert execution.audit_record["audit_v"] == 1
    assert {a["decision"] for a in execution.audit_record["actions"]} <= {"dry_run", "blocked"}
    assert not Command.objects.exists()
    assert AuditEvent.objects.filter(action="replay.succeeded", target_id=str(execution.pk)).exists()
    assert IncidentNote.objects.filter(incident=prod.incident, body__contains=f"#{execution.pk} succeeded").exists()


def test_it_refuses_a_dry_run_to_someone_without_the_permission(prod, approver1):
    with pytest.raises(PermissionDenied):
        replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=approver1)
    assert not ReplayExecution.objects.exists()


def test_it_names_a_window_outside_the_captured_one(prod, operator):
    from datetime import timedelta

    with pytest.raises(ValidationError) as caught:
        replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=operator,
                               window_start=prod.bundle.window_start - timedelta(minutes=1),
                               window_end=prod.bundle.window_end)
    assert "window" in caught.value.message_dict
    assert not ReplayExecution.objects.exists()


def test_it_executes_an_approved_dry_run_once_with_signed_commands(
    prod, operator, approver1, approver2, django_capture_on_commit_callbacks
):
    dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    approval = approve_execute(dry_run, operator, approver1, approver2)
    assert approval.status == ApprovalStatus.APPROVED
    execution = run_execute(dry_run, operator, django_capture_on_commit_callbacks)
    assert execution.status == "dispatching", (execution.error, execution.checks)
    assert [c["name"] for c in execution.checks] == ["dry_run", "posture", "pipeline_version", "approval"]
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.CONSUMED and approval.consumed_by_id == execution.pk
    commands = list(replay_commands(execution=execution))
    assert commands
    # A redelivered task finds the execution dispatching and creates nothing more.
    replay_run(execution_id=execution.pk)
    assert replay_commands(execution=execution).count() == len(commands)

    assert acknowledge_all(execution, on_commit=django_capture_on_commit_callbacks) == len(commands)
    execution.refresh_from_db()
    assert execution.status == "succeeded", execution.error
    assert AuditEvent.objects.filter(action="replay.executed", target_id=str(execution.pk)).exists()


def test_it_refuses_a_tampered_credential(prod, operator, approver1, approver2, django_capture_on_commit_callbacks):
    dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    approve_execute(dry_run, operator, approver1, approver2)
    execution = run_execute(dry_run, operator, django_capture_on_commit_callbacks)
    command = replay_commands(execution=execution).first()
    payload = dict(command.payload)
    credential = {**payload["credential"], "document": {**payload["credential"]["document"], "environment": "dev"}}
    with pytest.raises(CredentialRefused):
        verify_command({"payload": {**payload, "credential": credential}, "idempotency_key": command.idempotency_key},
                       keys=verification_keys(), environment="dev", agent=command.agent.name, now=command.created_at)


def test_it_rejects_at_validation_when_the_approval_was_revoked(
    prod, operator, approver1, approver2, django_capture_on_commit_callbacks
):
    dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    approval = approve_execute(dry_run, operator, approver1, approver2)

    from replays.services import replay_request_execute

    with django_capture_on_commit_callbacks(execute=False):  # requested, but the worker has not started yet
        execution = replay_request_execute(dry_run=dry_run, user=operator)
    assert execution.status == "queued"
    approval_revoke(request=approval, actor=approver1, reason="wrong POP")
    replay_run(execution_id=execution.pk)
    execution.refresh_from_db()
    assert execution.status == "rejected"
    assert any(c["name"] == "approval" and not c["ok"] for c in execution.checks)
    assert not Command.objects.exists()


def test_it_rejects_at_validation_and_restores_the_approval_when_the_environment_was_locked(
    prod, operator, approver1, approver2, admin_user, django_capture_on_commit_callbacks
):
    dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    approval = approve_execute(dry_run, operator, approver1, approver2)
    from replays.services import replay_request_execute

    execution = replay_request_execute(dry_run=dry_run, user=operator)
    environment_set_posture(environment=prod.environment, actor=admin_user, reason="freeze",
                            replay_policy="dry_run_only", execute_policy="deny")
    replay_run(execution_id=execution.pk)
    execution.refresh_from_db()
    approval.refresh_from_db()
    assert execution.status == "rejected"
    assert approval.status == ApprovalStatus.APPROVED
    assert not Command.objects.exists()
