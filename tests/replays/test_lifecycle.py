"""Replay lifecycle rules: redelivery, failure, cancel, the reaper, executes that need no approval."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import ApprovalStatus
from incidents.models import Command
from replays.models import ReplayExecution, ReplayStatus
from replays.services import (
    replay_cancel,
    replay_commands,
    replay_reap,
    replay_request_dry_run,
    replay_request_execute,
    replay_run,
)
from traceflux.audit.models import AuditEvent
from traceflux.statemachine import TransitionError

from .conftest import approve_execute, run_dry_run, run_execute


def test_it_dispatches_once_when_the_task_is_delivered_twice_mid_run(
    dev, operator, django_capture_on_commit_callbacks
):
    dry_run = run_dry_run(dev, operator, django_capture_on_commit_callbacks)
    execution = replay_request_execute(dry_run=dry_run, user=operator)  # dev allows execute without approval
    # The first delivery stops after the report (its worker died before dispatching); the report is kept.
    ReplayExecution.objects.filter(pk=execution.pk).update(status=ReplayStatus.RUNNING, started_at=timezone.now())
    first = replay_run(execution_id=execution.pk)
    second = replay_run(execution_id=execution.pk)
    assert first.status == second.status == ReplayStatus.DISPATCHING
    commands = replay_commands(execution=execution)
    keys = list(commands.values_list("idempotency_key", flat=True))
    assert keys and len(keys) == len(set(keys))
    assert Command.objects.count() == len(keys)
    assert AuditEvent.objects.filter(action="replay.dispatched", target_id=str(execution.pk)).count() == 1


def test_it_does_not_redo_the_report_stage_on_redelivery(dev, operator, django_capture_on_commit_callbacks):
    execution = run_dry_run(dev, operator, django_capture_on_commit_callbacks)
    finished = execution.finished_at
    again = replay_run(execution_id=execution.pk)
    assert again.status == ReplayStatus.SUCCEEDED
    assert again.finished_at == finished
    assert AuditEvent.objects.filter(action="replay.succeeded", target_id=str(execution.pk)).count() == 1


def test_it_fails_with_the_reason_and_restores_the_approval_when_the_bundle_is_unreadable(
    prod, operator, approver1, approver2, django_capture_on_commit_callbacks
):
    dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    approval = approve_execute(dry_run, operator, approver1, approver2)
    execution = replay_request_execute(dry_run=dry_run, user=operator)
    path = prod.bundle.file.path
    with open(path, "r+b") as handle:
        handle.truncate(100)  # the stored bytes were damaged on disk
    replay_run(execution_id=execution.pk)
    execution.refresh_from_db()
    approval.refresh_from_db()
    assert execution.status == ReplayStatus.FAILED
    assert "could not be replayed" in execution.error
    assert approval.status == ApprovalStatus.APPROVED
    assert not Command.objects.exists()
    assert AuditEvent.objects.filter(action="replay.failed", target_id=str(execution.pk)).exists()


def test_it_cancels_a_queued_replay_and_the_task_then_does_nothing(prod, operator):
    execution = replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=operator)
    replay_cancel(execution=execution, actor=operator, reason="wrong window")
    replay_run(execution_id=execution.pk)
    execution.refresh_from_db()
    assert execution.status == ReplayStatus.CANCELLED
    assert not execution.report_sha256


def test_it_refuses_to_cancel_a_finished_replay(dev, operator, django_capture_on_commit_callbacks):
    execution = run_dry_run(dev, operator, django_capture_on_commit_callbacks)
    with pytest.raises(TransitionError):
        replay_cancel(execution=execution, actor=operator, reason="too late")
    execution.refresh_from_db()
    assert execution.status == ReplayStatus.SUCCEEDED


def test_it_reaps_a_queued_replay_once_then_fails_it(prod, operator, django_capture_on_commit_callbacks):
    execution = replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=operator)
    later = timezone.now() + timedelta(hours=1)
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        assert replay_reap(now=later) == {"requeued": 1, "failed": 0}
    assert len(enqueued) == 1
    execution.refresh_from_db()
    assert execution.status == ReplayStatus.QUEUED and execution.enqueue_count == 2
    assert replay_reap(now=later + timedelta(hours=1)) == {"requeued": 0, "failed": 1}
    execution.refresh_from_db()
    assert execution.status == ReplayStatus.FAILED
    assert "no worker" in execution.error


def test_it_reaps_a_replay_running_past_its_timeout_but_never_a_dispatching_one(
    dev, operator, django_capture_on_commit_callbacks
):
    stuck = replay_request_dry_run(incident=dev.incident, artifact=dev.bundle, user=operator)
    ReplayExecution.objects.filter(pk=stuck.pk).update(status=ReplayStatus.RUNNING)
    dry_run = run_dry_run(dev, operator, django_capture_on_commit_callbacks)
    dispatching = run_execute(dry_run, operator, django_capture_on_commit_callbacks)
    assert dispatching.status == ReplayStatus.DISPATCHING
    counts = replay_reap(now=timezone.now() + timedelta(hours=2))
    assert counts["failed"] == 1
    stuck.refresh_from_db()
    dispatching.refresh_from_db()
    assert stuck.status == ReplayStatus.FAILED and "worker is gone" in stuck.error
    assert dispatching.status == ReplayStatus.DISPATCHING


def test_it_fails_an_execute_when_a_command_expires(dev, operator, django_capture_on_commit_callbacks):
    from incidents.services import command_expire_overdue

    dry_run = run_dry_run(dev, operator, django_capture_on_commit_callbacks)
    execution = run_execute(dry_run, operator, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        command_expire_overdue(now=timezone.now() + timedelta(days=1))
    execution.refresh_from_db()
    assert execution.status == ReplayStatus.FAILED
    assert "expired" in execution.error


def test_it_observes_the_duration_of_a_finished_replay_for_metrics(dev, operator, django_capture_on_commit_callbacks):
    from prometheus_client import REGISTRY

    labels = {"mode": "dry_run", "status": "succeeded"}
    before = REGISTRY.get_sample_value("traceflux_replay_duration_seconds_count", labels) or 0.0
    execution = run_dry_run(dev, operator, django_capture_on_commit_callbacks)
    assert execution.status == ReplayStatus.SUCCEEDED
    assert REGISTRY.get_sample_value("traceflux_replay_duration_seconds_count", labels) == before + 1
