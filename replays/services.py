"""Every write to replay executions: requesting (dry run, execute with its preflight), approval wiring, the pipeline
the Celery task runs, signed dispatch, settling on the agents' acknowledgements, cancelling and reaping.

Keyword-only, atomic, audited in the same transaction; every status move is a compare-and-swap
(traceflux.statemachine.transition). A request that fails a gate is stored as `rejected` with its checks and audited;
nothing is queued for it. Views, the API, the admin and the tasks call these and nothing lower.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from approvals.digest import approval_digest
from approvals.models import OPEN_STATUSES, ApprovalRequest, ApprovalStatus, SubjectKind
from approvals.services import approval_consume, approval_request, approval_restore
from artifacts.models import Artifact, ArtifactKind, artifact_storage
from incidents.models import Agent, Command, CommandStatus, Incident, PipelineVersion, PostureAction, PostureDecision
from incidents.posture import posture_decision
from incidents.selectors import (
    REPLAY_DRY_RUN,
    REPLAY_EXECUTE,
    can_in_environment,
    can_see_environment,
    pipeline_version_for,
)
from incidents.services import command_create, incident_note_add
from replays.engine import FormatError
from replays.engine.credentials import credential_document
from replays.engine.formats import format_timestamp
from replays.engine.pipeline import UsageError, run_replay
from traceflux import audit, signing
from traceflux.statemachine import TransitionError, transition

from .controls import InputProblem, action_plan, clean_controls, clean_scope, clean_window
from .models import REPLAY_TRANSITIONS, ReplayExecution, ReplayMode, ReplayStatus
from .signals import replay_finished

log = logging.getLogger(__name__)

REPLAY_COMMAND = "replay_action"
AUDIT_RECORD_VERSION = 1
CHECK_NAMES = ("dry_run", "posture", "pipeline_version", "approval")


def _problem(exc: InputProblem) -> ValidationError:
    return ValidationError({exc.field: exc.message})


def _move(execution: ReplayExecution, *, new: str, actor: Any = None, reason: str = "", **extra: Any) -> None:
    transition(execution, allowed=REPLAY_TRANSITIONS, new=new, actor=actor, reason=reason, extra=extra)


def _window_json(execution: ReplayExecution) -> dict[str, str] | None:
    if execution.window_start is None:
        return None
    return {"start": format_timestamp(execution.window_start), "end": format_timestamp(execution.window_end)}


def _enqueue(execution: ReplayExecution) -> None:
    from .tasks import run_replay  # the task module imports this one

    ReplayExecution.objects.filter(pk=execution.pk).update(enqueue_count=F("enqueue_count") + 1)
    transaction.on_commit(partial(run_replay.delay, execution.pk))


def _reject_new(execution: ReplayExecution, *, actor: Any, checks: list[dict[str, Any]]) -> ReplayExecution:
    failed = [check for check in checks if not check["ok"]]
    execution.status = ReplayStatus.REJECTED
    execution.status_changed_at = execution.finished_at = timezone.now()
    execution.checks = checks
    execution._change_reason = "; ".join(f"{c['name']}: {c['detail']}" for c in failed)  # type: ignore[attr-defined]
    execution.save()
    audit.record(
        actor=actor,
        action="replay.rejected",
        target=execution,
        outcome="denied",
        reason=execution._change_reason,  # type: ignore[attr-defined]
        data={"mode": execution.mode, "checks": checks, "incident": execution.incident.ref},
    )
    return execution


def _queue_new(execution: ReplayExecution, *, actor: Any, checks: list[dict[str, Any]]) -> ReplayExecution:
    execution.checks = checks
    execution.status_changed_at = timezone.now()
    execution._change_reason = f"{execution.get_mode_display()} requested"  # type: ignore[attr-defined]
    execution.save()
    audit.record(
        actor=actor,
        action="replay.requested",
        target=execution,
        data={
            "mode": execution.mode,
            "incident": execution.incident.ref,
            "artifact": execution.artifact.sha256,
            "spec_hash": execution.pipeline_version.spec_hash,
            "scope": execution.scope,
            "window": _window_json(execution),
            "controls": execution.controls,
            "dry_run": execution.dry_run_id,
            "approval": execution.approval_id,
            "digest": execution.request_digest or None,
        },
    )
    _enqueue(execution)
    return execution


def _new_execution(user: Any, **fields: Any) -> ReplayExecution:
    execution = ReplayExecution(triggered_by=user if getattr(user, "pk", None) else None, **fields)
    if hasattr(user, "get_username"):
        execution._history_user = user  # type: ignore[attr-defined]
    return execution


# --- requesting a dry run ----------------------------------------------------------------------------------------


@transaction.atomic
def replay_request_dry_run(
    *,
    incident: Incident,
    artifact: Artifact,
    user: Any,
    pipeline_version: PipelineVersion | None = None,
    compare_version: PipelineVersion | None = None,
    scope: Any = None,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    controls: Any = None,
) -> ReplayExecution:
    """Queue a dry run of `artifact` for `incident`, or store it rejected when the posture denies dry runs.

    PermissionDenied without replay_dry_run in the environment; ValidationError naming the field for bad input
    (an artifact of another incident or not a bundle, no pipeline version, scope, window or controls).
    """
    environment = incident.environment
    if not can_in_environment(user=user, environment=environment, perm=REPLAY_DRY_RUN):
        raise PermissionDenied(f"you may not run replays in {environment.slug}")
    if artifact.kind != ArtifactKind.INCIDENT_BUNDLE:
        raise ValidationError({"artifact": f"artifact #{artifact.pk} is a {artifact.kind}, not an incident bundle"})
    if artifact.incident_id != incident.pk:
        raise ValidationError({"artifact": f"artifact #{artifact.pk} is not a bundle of incident {incident.ref}"})
    if pipeline_version is None:
        pipeline_version = pipeline_version_for(artifact.spec_hash)
        if pipeline_version is None:
            raise ValidationError(
                {"pipeline_version": "no pipeline version has the artifact's spec hash "
                                     f"{artifact.spec_hash or '(none)'}; choose one"}
            )
    if compare_version is not None and compare_version.pk == pipeline_version.pk:
        raise ValidationError({"compare_version": "compare with another version than the one replayed"})
    try:
        scope = clean_scope(scope)
        window_start, window_end = clean_window(
            window_start, window_end, captured=(artifact.window_start, artifact.window_end)
        )
        controls = clean_controls(controls)
    except InputProblem as exc:
        raise _problem(exc) from None
    execution = _new_execution(
        user,
        incident=incident,
        environment=environment,
        artifact=artifact,
        pipeline_version=pipeline_version,
        compare_version=compare_version,
        mode=ReplayMode.DRY_RUN,
        scope=scope,
        window_start=window_start,
        window_end=window_end,
        controls=controls,
    )
    decision = posture_decision(environment, PostureAction.DRY_RUN)
    check = {"name": "posture", "ok": decision != PostureDecision.DENY,
             "detail": f"dry runs are {'denied' if decision == PostureDecision.DENY else 'allowed'} in "
                       f"{environment.slug} by its posture"}
    if not check["ok"]:
        return _reject_new(execution, actor=user, checks=[check])
    return _queue_new(execution, actor=user, checks=[check])


# --- the execute a dry run would become, and asking approval for it ----------------------------------------------


def execute_capabilities(dry_run: ReplayExecution) -> list[str]:
    """The capabilities the execute of this dry run would use: those of the actions it would allow."""
    actions = dry_run.audit_record.get("actions", []) if dry_run.audit_record else []
    return sorted({a["capability"] for a in actions if a.get("decision") in ("dry_run", "allowed") and a["capability"]})


def execute_digest(dry_run: ReplayExecution) -> str:
    """The digest an approval must carry to cover the execute promoting `dry_run`: everything that decides what runs."""
    return approval_digest(
        subject_kind=SubjectKind.REPLAY_EXECUTE,
        environment=dry_run.environment,
        spec_hash=dry_run.pipeline_version.spec_hash,
        artifact_sha256=dry_run.artifact.sha256,
        scope={"incident": dry_run.incident.ref, "labels": dry_run.scope, "controls": dry_run.controls},
        window=_window_json(dry_run),
        mode=ReplayMode.EXECUTE,
        capabilities=execute_capabilities(dry_run),
    )


def _link(path: str) -> str:
    return settings.TRACEFLUX_BASE_URL.rstrip("/") + path


def execute_summary(dry_run: ReplayExecution) -> dict[str, Any]:
    """What approvers judge, frozen into the approval request (the review page shows these keys): the inputs, the
    parity figures, the planned actions with their capabilities and blast radius, and links."""
    summary = dry_run.summary or {}
    actions = [a for a in dry_run.audit_record.get("actions", []) if a.get("decision") != "blocked"]
    artifact = dry_run.artifact
    return {
        "incident": dry_run.incident.ref,
        "dry_run": dry_run.pk,
        "posture": {"execute": str(posture_decision(dry_run.environment, PostureAction.EXECUTE))},
        "pipeline_version": {"label": dry_run.pipeline_version.label, "spec_hash": dry_run.pipeline_version.spec_hash},
        "artifact": {"sha256": artifact.sha256, "captured_at": artifact.captured_at.isoformat()},
        "scope": dry_run.scope,
        "window": _window_json(dry_run),
        "controls": dry_run.controls,
        "capabilities": execute_capabilities(dry_run),
        "parity": {
            "score": summary.get("parity_score"),
            "confidence": summary.get("confidence"),
            "alerts_in_incidents_out": summary.get("alerts_in_incidents_out"),
            "baseline_incidents": summary.get("baseline_incidents"),
            "incidents_formed": summary.get("incidents_formed"),
        },
        "planned_actions": [
            {"action": a["action"], "capability": a["capability"], "blast_radius": a["target"]} for a in actions
        ],
        "links": {
            "dry_run": _link(reverse("replays:detail", args=[dry_run.pk])),
            "incident": _link(reverse("admin:incidents_incident_change", args=[dry_run.incident_id])),
        },
    }


def version_problem(dry_run: ReplayExecution, producer: PipelineVersion | None) -> str:
    """Why an execute of `dry_run` fails preflight's pipeline_version check, or "" when it passes. `producer` is the
    version the artifact's spec hash resolves to (pipeline_version_for): an execute runs that version, so only a dry
    run of it can be promoted."""
    if producer is None:
        return f"no pipeline version has the artifact's spec hash {dry_run.artifact.spec_hash or '(none)'}"
    if producer.pk != dry_run.pipeline_version_id:
        return (
            f"the artifact was produced by {producer.label}; dry run #{dry_run.pk} replayed "
            f"{dry_run.pipeline_version.label}. An execute runs the version that produced the incident: dry-run that "
            "version first"
        )
    return ""


def approval_request_problem(
    dry_run: ReplayExecution, *, approval: ApprovalRequest | None, producer: PipelineVersion | None
) -> str:
    """Why a new execute approval cannot be asked for `dry_run` now, beyond permission and posture, or "" when it
    can: `approval` (execute_approval) is still open, which the approvals service refuses (409) until it is decided,
    withdrawn or marked expired; or the execute would fail preflight's version check whatever the approvers decide.
    The run view and the incident page both show this."""
    if approval is not None and approval.status in OPEN_STATUSES:
        return f"approval #{approval.pk} is already {approval.status}"
    return version_problem(dry_run, producer)


def replay_request_approval(*, dry_run: ReplayExecution, user: Any, reason: str) -> ApprovalRequest:
    """Ask approvers to sign off the execute this finished dry run would become. Refused when preflight would reject
    that execute for its pipeline version whatever the approvers decide: they are not asked to sign off a dead end."""
    if not can_in_environment(user=user, environment=dry_run.environment, perm=REPLAY_EXECUTE):
        raise PermissionDenied(f"you may not execute replays in {dry_run.environment.slug}")
    if dry_run.mode != ReplayMode.DRY_RUN or dry_run.status != ReplayStatus.SUCCEEDED:
        raise ValidationError({"dry_run": f"replay #{dry_run.pk} is not a succeeded dry run"})
    problem = version_problem(dry_run, pipeline_version_for(dry_run.artifact.spec_hash))
    if problem:
        raise ValidationError({"pipeline_version": f"its execute would be rejected: {problem}"})
    return approval_request(
        subject=dry_run,
        subject_kind=SubjectKind.REPLAY_EXECUTE,
        digest=execute_digest(dry_run),
        summary=execute_summary(dry_run),
        environment=dry_run.environment,
        requested_by=user,
        reason=reason,
    )


def execute_approval(dry_run: ReplayExecution) -> ApprovalRequest | None:
    """The newest approval request for this dry run's execute, whatever its state."""
    return (
        ApprovalRequest.objects.filter(environment=dry_run.environment, digest=execute_digest(dry_run))
        .order_by("-created_at", "-pk")
        .first()
    )


# --- requesting an execute: preflight ----------------------------------------------------------------------------


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def preflight(*, dry_run: ReplayExecution, user: Any) -> tuple[list[dict[str, Any]], str]:
    """The first three checks of an execute (dry_run, posture, pipeline_version) and the posture decision.

    Each is evaluated on its own, so a rejection names every check that failed, not just the first.
    """
    environment = dry_run.environment
    if dry_run.mode != ReplayMode.DRY_RUN:
        ok, detail = False, f"replay #{dry_run.pk} is an execute; only a dry run can be promoted"
    elif dry_run.status != ReplayStatus.SUCCEEDED:
        ok, detail = False, f"dry run #{dry_run.pk} is {dry_run.status}; only a succeeded dry run can be promoted"
    elif dry_run.incident.environment_id != environment.pk:
        ok, detail = False, f"dry run #{dry_run.pk} does not belong to incident {dry_run.incident.ref}"
    elif not can_see_environment(user=user, environment=environment):
        ok, detail = False, f"you cannot see {environment.slug}"
    else:
        ok, detail = True, f"dry run #{dry_run.pk} of {dry_run.incident.ref} succeeded"
    checks = [_check("dry_run", ok, detail)]

    decision = posture_decision(environment, PostureAction.EXECUTE)
    allowed = decision in (PostureDecision.ALLOW, PostureDecision.REQUIRE_APPROVAL)
    checks.append(_check("posture", allowed, f"execute is {decision.label if hasattr(decision, 'label') else decision}"
                                             f" in {environment.slug}"))

    resolved = pipeline_version_for(dry_run.artifact.spec_hash)
    problem = version_problem(dry_run, resolved)
    if resolved is not None and not problem:
        ok, detail = True, f"{resolved.label} ({resolved.spec_hash[:19]}…) produced the artifact"
    else:
        ok, detail = False, problem
    checks.append(_check("pipeline_version", ok, detail))
    return checks, decision


def _peek_approval(dry_run: ReplayExecution) -> dict[str, Any]:
    """The approval check without consuming anything: used when an earlier check already failed."""
    approval = execute_approval(dry_run)
    if approval is None:
        return _check("approval", False, "no approval covers this execute: request execute approval first")
    usable = approval.status == ApprovalStatus.APPROVED and not approval.is_expired()
    return _check("approval", usable, f"approval #{approval.pk} is {approval.status} (not consumed: an earlier "
                                      "check failed)" if usable else f"approval #{approval.pk} is {approval.status}")


@transaction.atomic
def replay_request_execute(*, dry_run: ReplayExecution, user: Any) -> ReplayExecution:
    """Promote a finished dry run to an execute. Every check runs in this one transaction before anything is queued:
    dry_run, posture, pipeline_version and, where the posture requires approval, approval (consumed here, once).

    Returns the execute, queued, or stored rejected with its checks (the API answers 409 then). PermissionDenied
    without replay_execute in the environment.
    """
    environment = dry_run.environment
    if not can_in_environment(user=user, environment=environment, perm=REPLAY_EXECUTE):
        raise PermissionDenied(f"you may not execute replays in {environment.slug}")
    dry_run = ReplayExecution.objects.select_related(
        "incident", "environment", "artifact", "pipeline_version"
    ).get(pk=dry_run.pk)
    checks, decision = preflight(dry_run=dry_run, user=user)
    digest = execute_digest(dry_run) if dry_run.mode == ReplayMode.DRY_RUN else ""
    execution = _new_execution(
        user,
        incident=dry_run.incident,
        environment=environment,
        artifact=dry_run.artifact,
        pipeline_version=dry_run.pipeline_version,
        mode=ReplayMode.EXECUTE,
        dry_run=dry_run,
        scope=dry_run.scope,
        window_start=dry_run.window_start,
        window_end=dry_run.window_end,
        controls=dry_run.controls,
        request_digest=digest,
    )
    if not all(check["ok"] for check in checks):
        if decision != PostureDecision.REQUIRE_APPROVAL:
            checks.append(_check("approval", True, f"no approval needed: execute is allowed in {environment.slug}"))
        elif not digest:
            checks.append(_check("approval", False, "not evaluated: only a dry run's execute can be approved"))
        else:
            checks.append(_peek_approval(dry_run))
        return _reject_new(execution, actor=user, checks=checks)
    if decision != PostureDecision.REQUIRE_APPROVAL:
        checks.append(_check("approval", True, f"no approval needed: execute is allowed in {environment.slug}"))
        return _queue_new(execution, actor=user, checks=checks)
    try:
        with transaction.atomic():  # the execute exists for the consumption to name it; a refusal undoes both
            execution.status = ReplayStatus.QUEUED
            execution.save()
            approval = approval_consume(digest=digest, environment=environment, execution=execution)
            execution.approval = approval
            checks.append(_check("approval", True, f"approval #{approval.pk} consumed by this execute"))
            return _queue_new(execution, actor=user, checks=checks)
    except (PermissionDenied, TransitionError) as exc:
        execution.pk = None
        execution._state.adding = True
        execution.approval = None
        detail = str(exc)
        if isinstance(exc, PermissionDenied) and "covers" in detail:
            detail += ": request execute approval first"
        checks.append(_check("approval", False, detail))
        return _reject_new(execution, actor=user, checks=checks)


# --- the pipeline (replays.tasks.run_replay) ---------------------------------------------------------------------


class _Stages:
    """Stage progress, written to the row as each stage starts and finishes (outside any transaction, so the run view
    sees it live). Only while the run is still `running`: a cancelled run's late progress is dropped."""

    def __init__(self, execution: ReplayExecution) -> None:
        self.execution = execution
        self.stages: dict[str, Any] = dict(execution.stages or {})

    def __call__(self, stage: str, status: str, counts: Mapping[str, int]) -> None:
        now = timezone.now().isoformat()
        entry = dict(self.stages.get(stage, {}))
        if status == "started":
            entry.update(status="running", started_at=now, finished_at=None, counts=dict(counts))
        else:
            entry.update(status="done", finished_at=now, counts={**entry.get("counts", {}), **dict(counts)})
        self.stages[stage] = entry
        self.save()

    def mark(self, stage: str, status: str, **fields: Any) -> None:
        self.stages[stage] = {**self.stages.get(stage, {}), "status": status, **fields}
        self.save()

    def save(self) -> None:
        ReplayExecution.objects.filter(pk=self.execution.pk, status=self.execution.status).update(stages=self.stages)
        self.execution.stages = self.stages


def _gates_closed(execution: ReplayExecution) -> list[dict[str, Any]]:
    """The gates re-checked when the task starts: what closed since the request. Empty when all still pass."""
    environment = type(execution.environment).objects.get(pk=execution.environment_id)
    problems = []
    if execution.mode == ReplayMode.DRY_RUN:
        if posture_decision(environment, PostureAction.DRY_RUN) == PostureDecision.DENY:
            problems.append(_check("posture", False, f"dry runs are now denied in {environment.slug}"))
        return problems
    decision = posture_decision(environment, PostureAction.EXECUTE)
    if decision not in (PostureDecision.ALLOW, PostureDecision.REQUIRE_APPROVAL):
        problems.append(_check("posture", False, f"execute is now {decision} in {environment.slug}"))
    if execution.triggered_by and not can_in_environment(
        user=execution.triggered_by, environment=environment, perm=REPLAY_EXECUTE
    ):
        problems.append(_check("permission", False, f"{execution.triggered_by} may no longer execute replays here"))
    if execution.approval_id:
        approval = ApprovalRequest.objects.get(pk=execution.approval_id)
        if approval.status != ApprovalStatus.CONSUMED or approval.consumed_by_id != execution.pk:
            problems.append(_check("approval", False, f"approval #{approval.pk} is now {approval.status}"))
    return problems


def _restore_approval(execution: ReplayExecution, reason: str) -> None:
    if not execution.approval_id:
        return
    approval = ApprovalRequest.objects.get(pk=execution.approval_id)
    if approval.status == ApprovalStatus.CONSUMED and approval.consumed_by_id == execution.pk:
        try:
            approval_restore(request=approval, execution=execution, reason=reason)
        except TransitionError as exc:  # the subject meanwhile has another open request: keep it consumed, say why
            log.warning("approval #%s not restored after replay #%s: %s", approval.pk, execution.pk, exc)


def _journal(execution: ReplayExecution) -> None:
    summary = execution.summary or {}
    parts = [f"{execution.get_mode_display().capitalize()} #{execution.pk} {execution.status}"]
    if summary.get("alerts_in_incidents_out"):
        parts.append(f"{summary['alerts_in_incidents_out']} incidents")
    if summary.get("parity_score") is not None:
        parts.append(f"parity {summary['parity_score']:.2f} ({summary.get('confidence')} confidence)")
    if execution.error:
        parts.append(f"error: {execution.error}")
    body = "; ".join(parts) + f". {_link(reverse('replays:detail', args=[execution.pk]))}"
    incident_note_add(incident=execution.incident, author=audit.SYSTEM, body=body)


def _finish(execution: ReplayExecution, *, new: str, reason: str, action: str, data: dict[str, Any] | None = None,
            outcome: str = "success") -> ReplayExecution:
    with transaction.atomic():
        _move(execution, new=new, reason=reason, finished_at=timezone.now())
        audit.record(actor=audit.SYSTEM, action=action, target=execution, reason=reason, outcome=outcome,
                     data={"mode": execution.mode, "incident": execution.incident.ref, **(data or {})})
        if new in (ReplayStatus.SUCCEEDED, ReplayStatus.FAILED):
            _journal(execution)
        transaction.on_commit(partial(replay_finished.send, sender=ReplayExecution, execution=execution))
    return execution


def replay_fail(*, execution: ReplayExecution, error: str) -> ReplayExecution | None:
    """Fail a run that is not final yet (not dispatching); the consumed approval is restored. None when it moved."""
    execution.refresh_from_db()
    if execution.is_final or execution.status == ReplayStatus.DISPATCHING:
        return None
    try:
        with transaction.atomic():
            execution.error = error[:4000]
            ReplayExecution.objects.filter(pk=execution.pk).update(error=execution.error)
            _finish(execution, new=ReplayStatus.FAILED, reason=error[:500], action="replay.failed", outcome="failed",
                    data={"error": error[:500]})
            _restore_approval(execution, reason=f"replay #{execution.pk} failed before dispatching: {error[:200]}")
    except TransitionError:
        return None
    return execution


def _store(name: str, data: bytes) -> str:
    """Write content-addressed bytes once. A file already at the name with other bytes is the first part of an
    earlier write cut short (a worker killed while writing: the filesystem storage writes in place), so it is replaced
    rather than taken for the finished file."""
    storage = artifact_storage()
    if storage.exists(name):
        if storage.size(name) == len(data):
            with storage.open(name, "rb") as stored:
                if stored.read() == data:
                    return name
        log.warning("replacing %s: the stored file is not the bytes named (a write cut short)", name)
        storage.delete(name)
    stored_as = storage.save(name, ContentFile(data))
    if stored_as != name:  # written meanwhile by a concurrent run: the same bytes, keep the canonical name only
        storage.delete(stored_as)
    return name


def _local_path(artifact: Artifact) -> str:
    return artifact.file.path  # FileSystemStorage; a remote storage would download to a temporary file here


def _summary(report: Mapping[str, Any], plan: list[dict[str, Any]]) -> dict[str, Any]:
    parity = report.get("parity") or {}
    stats = report.get("stats", {})
    return {
        "signals_in": stats.get("signals_in"),
        "signals_selected": stats.get("signals_selected"),
        "signals_suppressed": stats.get("signals_suppressed"),
        "incidents_formed": stats.get("incidents_formed"),
        "alerts_in_incidents_out": stats.get("alerts_in_incidents_out"),
        "baseline_incidents": parity.get("baseline_incidents"),
        "parity_score": parity.get("score"),
        "confidence": parity.get("confidence"),
        "split": (parity.get("split") or {}).get("count"),
        "merged": (parity.get("merged") or {}).get("count"),
        "missing": (parity.get("missing") or {}).get("count"),
        "new": (parity.get("new") or {}).get("count"),
        "highlights": list(report.get("highlights", []))[:12],
        "actions_allowed": sum(1 for a in plan if a["decision"] != "blocked"),
        "actions_blocked": sum(1 for a in plan if a["decision"] == "blocked"),
        "report_sha256": report.get("report_sha256"),
    }


def _audit_record(execution: ReplayExecution, report: Mapping[str, Any], plan: list[dict[str, Any]],
                  decision: str) -> dict[str, Any]:
    inputs = report.get("input", {})
    return {
        "audit_v": AUDIT_RECORD_VERSION,
        "created": timezone.now().isoformat(),
        "spec_hash": execution.pipeline_version.spec_hash,
        "input": {
            "signals": inputs.get("signals_selected"),
            "signals_in": inputs.get("signals"),
            "bytes": execution.artifact.size,
            "artifact_sha256": execution.artifact.sha256,
            "sha256": inputs.get("signals_digest"),
            "scope": execution.scope,
            "window": _window_json(execution) or inputs.get("window"),
        },
        "policy": {
            "environment": execution.environment.slug,
            "posture_decision": decision,
            "approval_ids": [execution.approval_id] if execution.approval_id else [],
            "mode": execution.mode,
            "controls": execution.controls,
        },
        "actions": [{key: item[key] for key in ("action", "capability", "target", "decision", "reason")}
                    for item in plan],
    }


def _run_stages(execution: ReplayExecution, stages: _Stages) -> None:
    """ingest → correlate → aggregate → report; the report and evidence are stored and the row records them."""
    policy_spec = execution.pipeline_version.spec
    compare_spec = execution.compare_version.spec if execution.compare_version_id else None
    window = None
    if execution.window_start is not None:
        window = (execution.window_start, execution.window_end)
    output = run_replay(
        policy_spec,
        _local_path(execution.artifact),
        policy_spec=policy_spec,
        compare=compare_spec,
        compare_spec=compare_spec,
        scope=execution.scope or None,
        window=window,
        on_progress=stages,
        evidence=True,
    )
    report = output.report
    execute = execution.mode == ReplayMode.EXECUTE
    plan = action_plan(report, execution.controls, execute=execute)
    decision = posture_decision(execution.environment, PostureAction.EXECUTE if execute else PostureAction.DRY_RUN)
    report_name = _store(f"replays/reports/{report['report_sha256']}.json", output.report_bytes)
    evidence_name = _store(f"replays/evidence/{output.evidence_sha256}.tar.gz", output.evidence or b"")
    ReplayExecution.objects.filter(pk=execution.pk, status=ReplayStatus.RUNNING).update(
        report_name=report_name,
        report_sha256=report["report_sha256"],
        evidence_name=evidence_name,
        evidence_sha256=output.evidence_sha256,
        summary=_summary(report, plan),
        audit_record=_audit_record(execution, report, plan, str(decision)),
    )
    execution.refresh_from_db()


def replay_run(*, execution_id: int, task_id: str = "") -> ReplayExecution | None:
    """Run one execution as far as it can go now. Idempotent: a redelivered task for a finished (or dispatching)
    execution does nothing, and a stage already done (the stored report) is not redone."""
    execution = (
        ReplayExecution.objects.select_related("incident", "environment", "artifact", "pipeline_version",
                                               "compare_version", "triggered_by")
        .filter(pk=execution_id)
        .first()
    )
    if execution is None or execution.is_final or execution.status == ReplayStatus.DISPATCHING:
        return execution
    if execution.status == ReplayStatus.QUEUED:
        try:
            with transaction.atomic():
                _move(execution, new=ReplayStatus.VALIDATING, reason="taken by a worker", task_id=task_id[:64],
                      started_at=timezone.now())
        except TransitionError:
            return execution  # cancelled, or another delivery took it
    stages = _Stages(execution)
    try:
        if execution.status == ReplayStatus.VALIDATING:
            closed = _gates_closed(execution)
            if closed:
                return _reject_at_validation(execution, closed)
            with transaction.atomic():
                _move(execution, new=ReplayStatus.RUNNING, reason="gates re-checked")
                audit.record(actor=audit.SYSTEM, action="replay.started", target=execution,
                             data={"mode": execution.mode, "task_id": task_id})
        if execution.status != ReplayStatus.RUNNING:
            return execution
        if not execution.report_sha256:
            _run_stages(execution, stages)
        if execution.status != ReplayStatus.RUNNING:
            return execution  # cancelled while the stages ran
        if execution.mode == ReplayMode.EXECUTE:
            return _dispatch(execution, stages)
        return _finish(execution, new=ReplayStatus.SUCCEEDED, reason="dry run finished", action="replay.succeeded",
                       data={"report_sha256": execution.report_sha256, "summary": _short(execution.summary)})
    except (FormatError, UsageError) as exc:
        detail = getattr(exc, "detail", None) or str(exc)
        replay_fail(execution=execution, error=f"the artifact could not be replayed: {detail}")
    except Exception as exc:
        # The run is failed with the reason rather than left running for the reaper; the traceback goes to the log.
        log.exception("replay #%s failed", execution.pk)
        replay_fail(execution=execution, error=f"{type(exc).__name__}: {exc}")
    execution.refresh_from_db()
    return execution


def _short(summary: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("alerts_in_incidents_out", "parity_score", "confidence", "actions_allowed", "actions_blocked")
    return {key: summary.get(key) for key in keys}


def _reject_at_validation(execution: ReplayExecution, closed: list[dict[str, Any]]) -> ReplayExecution:
    reason = "; ".join(check["detail"] for check in closed)
    try:
        with transaction.atomic():
            ReplayExecution.objects.filter(pk=execution.pk).update(checks=[*execution.checks, *closed])
            _finish(execution, new=ReplayStatus.REJECTED, reason=f"a gate closed since the request: {reason}",
                    action="replay.rejected", outcome="denied", data={"checks": closed, "at": "validation"})
            _restore_approval(execution, reason=f"replay #{execution.pk} was rejected at validation: {reason}")
    except TransitionError:
        pass
    execution.refresh_from_db()
    return execution


# --- execute: signed dispatch ------------------------------------------------------------------------------------


def replay_command_key(*, execution: ReplayExecution, index: int, agent: Agent) -> str:
    return f"replay:{execution.pk}:{index}:{agent.pk}"


def replay_commands(*, execution: ReplayExecution):
    return Command.objects.filter(kind=REPLAY_COMMAND, idempotency_key__startswith=f"replay:{execution.pk}:")


def dispatch_agents(execution: ReplayExecution, target: Mapping[str, list[str]]) -> list[Agent]:
    """The incident's source agent, and the environment's enabled agents whose pop or region the action targets."""
    agents = {}
    source = execution.incident.source_agent
    if source is not None and source.enabled:
        agents[source.pk] = source
    pops, regions = set(target.get("pops", [])), set(target.get("regions", []))
    for agent in Agent.objects.filter(environment_id=execution.environment_id, enabled=True).order_by("name"):
        if (pops and agent.pop in pops) or (not pops and regions and agent.region in regions):
            agents[agent.pk] = agent
    return sorted(agents.values(), key=lambda agent: agent.name)


def _dispatch(execution: ReplayExecution, stages: _Stages) -> ReplayExecution:
    """Every allowed action becomes one signed command per target agent, in the same transaction as the move to
    dispatching: a task delivered twice finds the commands (by idempotency key) or the execution moved on."""
    # The index into the whole plan, blocked actions included, keeps command keys stable whatever the gates decided.
    indexed = [(index, item) for index, item in enumerate(execution.audit_record.get("actions", []))
               if item["decision"] == "allowed"]
    expires_at = timezone.now() + settings.TRACEFLUX_REPLAY_COMMAND_TTL
    stages.mark("dispatch", "running", started_at=timezone.now().isoformat(), finished_at=None, counts={})
    with transaction.atomic():
        locked = ReplayExecution.objects.select_for_update().get(pk=execution.pk)
        if locked.status != ReplayStatus.RUNNING:
            execution.refresh_from_db()
            return execution
        created = []
        for index, item in indexed:
            for agent in dispatch_agents(execution, item["target"]):
                key = replay_command_key(execution=execution, index=index, agent=agent)
                document = credential_document(
                    environment=execution.environment.slug,
                    spec_hash=execution.pipeline_version.spec_hash,
                    capabilities=[item["capability"]],
                    expires_at=expires_at,
                    approval_ids=[execution.approval_id] if execution.approval_id else [],
                    execution_id=execution.pk,
                    action=item["action"],
                    agent=agent.name,
                    command_key=key,
                )
                payload = {
                    "replay": execution.pk,
                    "action": item["action"],
                    "capability": item["capability"],
                    "target": item["target"],
                    "incident": execution.incident.ref,
                    "credential": signing.sign(document),
                }
                created.append(command_create(agent=agent, kind=REPLAY_COMMAND, payload=payload, idempotency_key=key,
                                              actor=audit.SYSTEM, deadline=expires_at))
        counts = {"actions": len(indexed), "commands": len(created)}
        stages.stages["dispatch"] = {**stages.stages.get("dispatch", {}), "counts": counts}
        if not created:
            stages.stages["dispatch"].update(status="done", finished_at=timezone.now().isoformat())
            ReplayExecution.objects.filter(pk=execution.pk).update(stages=stages.stages)
            return _finish(execution, new=ReplayStatus.SUCCEEDED, reason="no action passed its gates: nothing to send",
                           action="replay.executed", data={"commands": 0, "outcome": "succeeded"})
        ReplayExecution.objects.filter(pk=execution.pk).update(stages=stages.stages)
        _move(execution, new=ReplayStatus.DISPATCHING, reason=f"{len(created)} signed commands sent")
        audit.record(actor=audit.SYSTEM, action="replay.dispatched", target=execution,
                     data={"commands": [c.pk for c in created], "expires_at": expires_at.isoformat()})
    return execution


@transaction.atomic
def replay_settle(*, command: Command) -> ReplayExecution | None:
    """Move an execute on after one of its commands was acknowledged or expired: every command succeeded →
    succeeded; any failed or expired → failed; otherwise it waits. Returns the execution when it moved."""
    if command.kind != REPLAY_COMMAND or not isinstance(command.payload, dict):
        return None
    execution = ReplayExecution.objects.select_for_update().filter(pk=command.payload.get("replay")).first()
    if execution is None or execution.status != ReplayStatus.DISPATCHING:
        return None
    commands = list(replay_commands(execution=execution).select_related("agent").order_by("pk"))
    outcomes = [{"command": c.pk, "agent": c.agent.name, "action": c.payload.get("action"), "status": c.status}
                for c in commands]
    broken = [c for c in commands if c.status in (CommandStatus.FAILED, CommandStatus.EXPIRED)]
    if broken:
        new, reason = ReplayStatus.FAILED, "; ".join(f"{c.payload.get('action')} on {c.agent.name} {c.status}"
                                                     for c in broken)
    elif all(c.status == CommandStatus.SUCCEEDED for c in commands):
        new, reason = ReplayStatus.SUCCEEDED, f"all {len(commands)} commands acknowledged succeeded"
    else:
        return None
    stages = dict(execution.stages or {})
    stages["dispatch"] = {**stages.get("dispatch", {}), "status": "done" if new == ReplayStatus.SUCCEEDED else "failed",
                          "finished_at": timezone.now().isoformat()}
    summary = {**(execution.summary or {}), "dispatch": outcomes}
    ReplayExecution.objects.filter(pk=execution.pk).update(
        stages=stages, summary=summary, error="" if new == ReplayStatus.SUCCEEDED else reason
    )
    execution.refresh_from_db()
    return _finish(execution, new=new, reason=reason, action="replay.executed",
                   outcome="success" if new == ReplayStatus.SUCCEEDED else "failed",
                   data={"outcome": new, "commands": outcomes})


# --- cancelling and reaping --------------------------------------------------------------------------------------


def replay_cancel(*, execution: ReplayExecution, actor: Any, reason: str) -> ReplayExecution:
    """Stop a run that has not dispatched anything: queued, validating or running → cancelled."""
    if not reason.strip():
        raise ValidationError({"reason": "cancelling a replay needs a reason"})
    perm = REPLAY_EXECUTE if execution.mode == ReplayMode.EXECUTE else REPLAY_DRY_RUN
    if not can_in_environment(user=actor, environment=execution.environment, perm=perm):
        raise PermissionDenied(f"you may not cancel replays in {execution.environment.slug}")
    execution.refresh_from_db()
    with transaction.atomic():
        _move(execution, new=ReplayStatus.CANCELLED, actor=actor, reason=reason, finished_at=timezone.now())
        audit.record(actor=actor, action="replay.cancelled", target=execution, reason=reason,
                     data={"mode": execution.mode})
        _restore_approval(execution, reason=f"replay #{execution.pk} was cancelled: {reason}")
        transaction.on_commit(partial(replay_finished.send, sender=ReplayExecution, execution=execution))
    return execution


def replay_reap(*, now: datetime | None = None) -> dict[str, int]:
    """The beat task's sweep: a queued run nobody took is enqueued once more, then failed; a validating or running
    run past its timeout is failed. Dispatching is left alone: it ends through its commands' acknowledgement or
    expiry."""
    now = now or timezone.now()
    counts = {"requeued": 0, "failed": 0}
    queued_before = now - settings.TRACEFLUX_REPLAY_QUEUED_TIMEOUT
    for execution in ReplayExecution.objects.filter(status=ReplayStatus.QUEUED, status_changed_at__lt=queued_before):
        if execution.enqueue_count < 2:
            with transaction.atomic():
                moved = ReplayExecution.objects.filter(
                    pk=execution.pk, status=ReplayStatus.QUEUED, enqueue_count=execution.enqueue_count
                ).update(status_changed_at=now)
                if moved:
                    _enqueue(execution)
                    audit.record(actor=audit.SYSTEM, action="replay.requeued", target=execution,
                                 reason="no worker took it in time",
                                 data={"enqueue_count": execution.enqueue_count + 1})
                    counts["requeued"] += 1
        elif replay_fail(execution=execution, error="no worker took the replay, even after it was enqueued again"):
            counts["failed"] += 1
    running_before = now - settings.TRACEFLUX_REPLAY_RUNNING_TIMEOUT
    stuck = ReplayExecution.objects.filter(
        status__in=(ReplayStatus.VALIDATING, ReplayStatus.RUNNING), status_changed_at__lt=running_before
    )
    for execution in stuck:
        timeout = int(settings.TRACEFLUX_REPLAY_RUNNING_TIMEOUT.total_seconds())
        if replay_fail(execution=execution, error=f"{execution.status} for more than {timeout} s: its worker is gone"):
            counts["failed"] += 1
    return counts
