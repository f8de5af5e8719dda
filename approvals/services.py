"""Every write to approvals. Keyword-only, atomic, audited in the same transaction, transitions by compare-and-swap
under the request's row lock.

Refusals:
- PermissionDenied: the actor may not do this (self-approval, not eligible, not a superuser, posture deny, no
  approval covers the digest). Refusals of a person are also recorded as an audit event with outcome "denied".
- ValidationError: the input is wrong (a missing reason or comment, an unknown kind, a malformed digest), or no
  approval is needed (the posture allows the action outright: approval_request refuses rather than return None, so a
  caller that forgot to ask posture_decision first finds out).
- Conflict (a TransitionError, so the admin actions and a 409 handler treat both alike): the request is not in a state
  that allows this (already decided, expired, consumed, twice by the same approver).

A call that finds a request past its expires_at moves it to expired in its own (inner) transaction, then raises
Conflict; the expiry stays unless the caller's own outer transaction rolls back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, models, transaction
from django.urls import reverse
from django.utils import timezone

from incidents.models import Deployment, DeploymentStatus, Environment, PipelineVersion, PostureDecision
from incidents.posture import posture_decision
from incidents.selectors import APPROVE, OPERATE, can_in_environment
from incidents.services import deployment_request
from replays.engine import CanonicalJSONError, canonical_json
from traceflux import audit
from traceflux.statemachine import TransitionError, transition

from .digest import approval_digest, deployment_digest
from .models import (
    APPROVAL_TRANSITIONS,
    OPEN_STATUSES,
    SUBJECT_ACTIONS,
    ApprovalDecision,
    ApprovalRequest,
    ApprovalStatus,
    Decision,
    SubjectKind,
)
from .signals import approval_closed, approval_requested

User = AbstractBaseUser

DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


class Conflict(TransitionError):
    """The request is not in a state that allows this; `current` names the state it is in (HTTP 409)."""


def break_glass_ttl() -> timedelta:
    return getattr(settings, "TRACEFLUX_BREAK_GLASS_TTL", timedelta(minutes=15))


# --- the quorum, as a pure function ------------------------------------------------------------------------------


def status_after_decisions(required: int, decisions: Iterable[tuple[Any, str]]) -> ApprovalStatus:
    """The status a pending request has after these (approver, decision) pairs.

    Any deny → denied; `required` distinct approvers approving → approved; otherwise still pending. An approver who
    appears twice counts once.
    """
    approvers: set[Any] = set()
    for approver, decision in decisions:
        if decision == Decision.DENY:
            return ApprovalStatus.DENIED
        if decision == Decision.APPROVE:
            approvers.add(approver)
    return ApprovalStatus.APPROVED if len(approvers) >= required else ApprovalStatus.PENDING


# --- helpers -----------------------------------------------------------------------------------------------------


def _lock(request: ApprovalRequest) -> ApprovalRequest:
    return ApprovalRequest.objects.select_for_update().get(pk=request.pk)


def _move(locked: ApprovalRequest, *, new: str, actor: Any, reason: str, extra: dict | None = None) -> ApprovalRequest:
    """CAS from the status the locked row was read with; we hold the lock, so a miss is a real conflict."""
    try:
        transition(locked, allowed=APPROVAL_TRANSITIONS, new=new, actor=actor, reason=reason, extra=extra)
    except TransitionError as exc:
        raise Conflict(str(exc), current=exc.current) from exc
    return locked


def _closed(locked: ApprovalRequest) -> None:
    transaction.on_commit(partial(approval_closed.send, sender=ApprovalRequest, request=locked, status=locked.status))


def _expire_if_overdue(request: ApprovalRequest, *, now: datetime | None = None) -> bool:
    """Move a pending or approved request that is past expires_at to expired (own transaction). True if it is."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = _lock(request)
        if locked.status not in OPEN_STATUSES or not locked.is_expired(now=now):
            return locked.status == ApprovalStatus.EXPIRED
        old = locked.status
        reason = f"expires_at {locked.expires_at.isoformat()} passed"
        _move(locked, new=ApprovalStatus.EXPIRED, actor=None, reason=reason)
        audit.record(
            actor=audit.SYSTEM, action="approval.expired", target=locked, reason=reason,
            data={"from": old, "digest": locked.digest},
        )
        _closed(locked)
    return True


def _refuse(*, actor: Any, action: str, request: ApprovalRequest | None, environment: Any, reason: str) -> None:
    """Record a refusal of a person (outside the write's transaction on purpose) and raise PermissionDenied."""
    audit.record(actor=actor, action=action, target=request, environment=environment, outcome="denied", reason=reason)
    raise PermissionDenied(reason)


def _execution_ref(execution: models.Model) -> tuple[ContentType, int]:
    if execution is None or execution.pk is None:
        raise ValidationError({"execution": "the consuming execution must be a saved object"})
    return ContentType.objects.get_for_model(execution), execution.pk


def _label(content_type: ContentType, object_id: int) -> str:
    return f"{content_type.app_label}.{content_type.model}:{object_id}"


# --- requesting --------------------------------------------------------------------------------------------------


def approval_request(
    *,
    subject: models.Model,
    subject_kind: str,
    digest: str,
    summary: dict[str, Any],
    environment: Environment,
    requested_by: User,
    reason: str,
    now: datetime | None = None,
) -> ApprovalRequest:
    """Ask for approval of exactly `digest` in `environment`; quorum and expiry are copied from its posture now.

    Refused (PermissionDenied, audited) when the requester may not operate there or the posture denies the action;
    refused (ValidationError) when the posture allows it outright, as no approval is needed then, or for an execute
    the posture limits to dry runs.
    """
    if subject_kind not in SubjectKind.values:
        raise ValidationError({"subject_kind": f"{subject_kind!r} is not one of {', '.join(SubjectKind.values)}"})
    if not reason.strip():
        raise ValidationError({"reason": "an approval request needs a reason"})
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise ValidationError({"digest": "the digest must be 64 lowercase hex characters (sha256)"})
    if not isinstance(summary, dict):
        raise ValidationError({"summary": "the summary must be a JSON object"})
    try:
        canonical_json(summary)
    except CanonicalJSONError as exc:
        raise ValidationError({"summary": str(exc)}) from exc
    if subject is None or subject.pk is None:
        raise ValidationError({"subject": "the subject must be a saved object"})
    subject_env = getattr(subject, "environment_id", None)
    if subject_env is not None and subject_env != environment.pk:
        raise ValidationError({"environment": f"the subject belongs to another environment than {environment.slug}"})
    environment = Environment.objects.get(pk=environment.pk)  # the posture as stored now, not as the caller read it
    if not can_in_environment(user=requested_by, environment=environment, perm=OPERATE):
        _refuse(actor=requested_by, action="approval.request_refused", request=None, environment=environment,
                reason=f"you may not operate in {environment.slug}")
    decision = posture_decision(environment, SUBJECT_ACTIONS[subject_kind])
    if decision == PostureDecision.DENY:
        _refuse(actor=requested_by, action="approval.request_refused", request=None, environment=environment,
                reason=f"{SUBJECT_ACTIONS[subject_kind]} is denied in {environment.slug} by its posture")
    if decision == PostureDecision.ALLOW:
        raise ValidationError(
            f"no approval is needed: {SUBJECT_ACTIONS[subject_kind]} is allowed in {environment.slug} by its posture"
        )
    if decision == PostureDecision.DRY_RUN_ONLY:
        raise ValidationError(f"{environment.slug} allows dry runs only: an execute cannot be approved there")
    now = now or timezone.now()
    content_type = ContentType.objects.get_for_model(subject)
    with transaction.atomic():
        request = ApprovalRequest(
            content_type=content_type,
            object_id=subject.pk,
            subject_kind=subject_kind,
            environment=environment,
            digest=digest,
            summary=summary,
            requested_by=requested_by,
            reason=reason,
            required_approvals=environment.required_approvals,
            expires_at=now + environment.approval_ttl,
            status_changed_at=now,
        )
        request._history_user = requested_by  # type: ignore[attr-defined]
        request._change_reason = reason  # type: ignore[attr-defined]
        try:
            with transaction.atomic():
                request.save()
        except IntegrityError as exc:
            open_one = ApprovalRequest.objects.filter(
                content_type=content_type, object_id=subject.pk, status__in=OPEN_STATUSES
            ).first()
            raise Conflict(
                f"{subject} already has an open approval request (#{open_one.pk if open_one else '?'})",
                current=open_one.status if open_one else None,
            ) from exc
        audit.record(
            actor=requested_by,
            action="approval.requested",
            target=request,
            reason=reason,
            data={
                "digest": digest,
                "subject_kind": subject_kind,
                "subject": str(subject),
                "required_approvals": request.required_approvals,
                "expires_at": request.expires_at.isoformat(),
            },
        )
        transaction.on_commit(partial(approval_requested.send, sender=ApprovalRequest, request=request))
    return request


# --- deciding ----------------------------------------------------------------------------------------------------


def approver_is_eligible(*, user: User, environment: Environment) -> bool:
    return can_in_environment(user=user, environment=environment, perm=APPROVE)


def approval_decide(
    *, request: ApprovalRequest, approver: User, decision: str, comment: str = ""
) -> ApprovalRequest:
    """Record one approver's decision; the request closes on quorum (approved) or on the first deny (denied)."""
    if decision not in Decision.values:
        raise ValidationError({"decision": f"{decision!r} is not one of {', '.join(Decision.values)}"})
    if decision == Decision.DENY and not comment.strip():
        raise ValidationError({"comment": "a denial needs a reason"})
    environment = request.environment
    if approver.pk == request.requested_by_id:
        _refuse(actor=approver, action=f"approval.{decision}", request=request, environment=environment,
                reason="the requester cannot decide their own request")
    if not approver_is_eligible(user=approver, environment=environment):
        _refuse(actor=approver, action=f"approval.{decision}", request=request, environment=environment,
                reason=f"you may not approve in {environment.slug}")
    if _expire_if_overdue(request):
        raise Conflict(f"approval #{request.pk} has expired", current=ApprovalStatus.EXPIRED)
    with transaction.atomic():
        locked = _lock(request)
        if locked.status != ApprovalStatus.PENDING:
            raise Conflict(f"approval #{locked.pk} is {locked.status}; only a pending request can be decided",
                           current=locked.status)
        if locked.decisions.filter(approver=approver).exists():
            raise Conflict(f"{approver.get_username()} has already decided approval #{locked.pk}",
                           current=locked.status)
        try:
            with transaction.atomic():
                ApprovalDecision.objects.create(request=locked, approver=approver, decision=decision, comment=comment)
        except IntegrityError as exc:  # cannot happen under the row lock; kept so a bug says what it is
            raise Conflict(f"{approver.get_username()} has already decided approval #{locked.pk}",
                           current=locked.status) from exc
        new = status_after_decisions(
            locked.required_approvals, locked.decisions.values_list("approver_id", "decision")
        )
        approvals = locked.decisions.filter(decision=Decision.APPROVE).count()
        audit.record(
            actor=approver,
            action=f"approval.{decision}",
            target=locked,
            reason=comment,
            data={"digest": locked.digest, "approvals": approvals, "required": locked.required_approvals},
        )
        if new != ApprovalStatus.PENDING:
            _move(locked, new=new, actor=approver, reason=f"{decision} by {approver.get_username()}")
            audit.record(
                actor=approver,
                action=f"approval.{new}",
                target=locked,
                reason=comment,
                data={"digest": locked.digest, "approvals": approvals, "required": locked.required_approvals},
            )
            _closed(locked)
    return locked


# --- closing without a decision ----------------------------------------------------------------------------------


def approval_revoke(*, request: ApprovalRequest, actor: User, reason: str) -> ApprovalRequest:
    """An eligible approver or a superuser withdraws the sign-off: pending, approved or consumed → revoked.

    Revoking a consumed approval stops an execute that has not started yet (its task re-checks the gates); one that
    already dispatched its commands is not recalled.
    """
    if not reason.strip():
        raise ValidationError({"reason": "a revocation needs a reason"})
    if not (getattr(actor, "is_superuser", False) or approver_is_eligible(user=actor, environment=request.environment)):
        _refuse(actor=actor, action="approval.revoke", request=request, environment=request.environment,
                reason=f"you may not approve in {request.environment.slug}, so you may not revoke there")
    with transaction.atomic():
        locked = _lock(request)
        if locked.status not in (*OPEN_STATUSES, ApprovalStatus.CONSUMED):
            raise Conflict(
                f"approval #{locked.pk} is {locked.status}; only pending, approved or consumed can be revoked",
                current=locked.status,
            )
        old = locked.status
        _move(locked, new=ApprovalStatus.REVOKED, actor=actor, reason=reason)
        audit.record(actor=actor, action="approval.revoked", target=locked, reason=reason,
                     data={"from": old, "digest": locked.digest})
        _closed(locked)
    return locked


def approval_withdraw(*, request: ApprovalRequest, actor: User, reason: str = "") -> ApprovalRequest:
    """The requester takes back a pending request."""
    if actor.pk != request.requested_by_id:
        _refuse(actor=actor, action="approval.withdraw", request=request, environment=request.environment,
                reason="only the requester can withdraw a request")
    with transaction.atomic():
        locked = _lock(request)
        if locked.status != ApprovalStatus.PENDING:
            raise Conflict(f"approval #{locked.pk} is {locked.status}; only a pending request can be withdrawn",
                           current=locked.status)
        _move(locked, new=ApprovalStatus.WITHDRAWN, actor=actor, reason=reason or "withdrawn by the requester")
        audit.record(actor=actor, action="approval.withdrawn", target=locked, reason=reason,
                     data={"digest": locked.digest})
        _closed(locked)
    return locked


def approval_expire_overdue(*, now: datetime | None = None) -> int:
    """Expire pending and approved requests past expires_at, each in its own transaction. Returns how many."""
    now = now or timezone.now()
    overdue = ApprovalRequest.objects.filter(status__in=OPEN_STATUSES, expires_at__lte=now).order_by("pk")
    return sum(1 for request in list(overdue) if _expire_if_overdue(request, now=now))


# --- break-glass -------------------------------------------------------------------------------------------------


def approval_break_glass(*, request: ApprovalRequest, actor: User, reason: str) -> ApprovalRequest:
    """A superuser stands in for the quorum of one pending request, loudly.

    It approves this request only (consumption is still required, and still checks digest, expiry and posture), never
    overrides a posture of deny, cannot be used by the requester on their own request, and shortens expires_at to
    now + TRACEFLUX_BREAK_GLASS_TTL.
    """
    environment = request.environment
    if not getattr(actor, "is_superuser", False):
        _refuse(actor=actor, action="approval.break_glass", request=request, environment=environment,
                reason="break-glass is for superusers only")
    if not reason.strip():
        raise ValidationError({"reason": "break-glass needs a reason"})
    if actor.pk == request.requested_by_id:
        _refuse(actor=actor, action="approval.break_glass", request=request, environment=environment,
                reason="the requester cannot break glass on their own request")
    action = SUBJECT_ACTIONS[request.subject_kind]
    environment = Environment.objects.get(pk=request.environment_id)  # the posture as stored now
    if posture_decision(environment, action) == PostureDecision.DENY:
        _refuse(actor=actor, action="approval.break_glass", request=request, environment=environment,
                reason=f"{action} is denied in {environment.slug} by its posture; break-glass does not override it")
    if _expire_if_overdue(request):
        raise Conflict(f"approval #{request.pk} has expired", current=ApprovalStatus.EXPIRED)
    now = timezone.now()
    with transaction.atomic():
        locked = _lock(request)
        if locked.status != ApprovalStatus.PENDING:
            raise Conflict(f"approval #{locked.pk} is {locked.status}; break-glass applies to a pending request",
                           current=locked.status)
        expires_at = min(locked.expires_at, now + break_glass_ttl())
        _move(
            locked,
            new=ApprovalStatus.APPROVED,
            actor=actor,
            reason=f"BREAK-GLASS: {reason}",
            extra={
                "break_glass": True,
                "break_glass_reason": reason,
                "break_glass_by": actor,
                "break_glass_at": now,
                "expires_at": expires_at,
            },
        )
        audit.record(
            actor=actor,
            action="approval.break_glass",
            target=locked,
            reason=reason,
            data={"break_glass": True, "digest": locked.digest, "expires_at": expires_at.isoformat(),
                  "approvals": locked.decisions.filter(decision=Decision.APPROVE).count(),
                  "required": locked.required_approvals},
        )
        _closed(locked)
    return locked


# --- using an approval -------------------------------------------------------------------------------------------


def approval_consume(*, digest: str, environment: Environment, execution: models.Model) -> ApprovalRequest:
    """Use the approved request for exactly this digest in this environment, once, for `execution`.

    Raises PermissionDenied when no request in the environment has this digest or the posture now denies the action,
    and Conflict when the request is not approved (pending, denied, consumed...) or past its expiry by the clock (it
    is then moved to expired).
    """
    execution_type, execution_id = _execution_ref(execution)
    matching = ApprovalRequest.objects.filter(environment=environment, digest=digest)
    with transaction.atomic():
        locked = matching.select_for_update().filter(status=ApprovalStatus.APPROVED).order_by("-created_at").first()
        if locked is None:
            latest = matching.order_by("-created_at", "-pk").first()
            if latest is None:
                raise PermissionDenied(f"no approval in {environment.slug} covers digest {digest}")
            raise Conflict(f"the approval for this digest (#{latest.pk}) is {latest.status}, not approved",
                           current=latest.status)
        action = SUBJECT_ACTIONS[locked.subject_kind]
        if posture_decision(locked.environment, action) == PostureDecision.DENY:  # read now, not the caller's copy
            raise PermissionDenied(f"{action} is denied in {environment.slug} by its posture")
        expired = locked.is_expired()
        if not expired:
            _move(
                locked,
                new=ApprovalStatus.CONSUMED,
                actor=None,
                reason=f"consumed by {execution_type.model} #{execution_id}",
                extra={"consumed_by_type": execution_type, "consumed_by_id": execution_id,
                       "consumed_at": timezone.now()},
            )
            audit.record(
                actor=audit.SYSTEM,
                action="approval.consumed",
                target=locked,
                data={
                    "digest": digest,
                    "execution": _label(execution_type, execution_id),
                    "break_glass": locked.break_glass,
                },
            )
            return locked
    _expire_if_overdue(locked)
    raise Conflict(f"approval #{locked.pk} expired at {locked.expires_at.isoformat()}", current=ApprovalStatus.EXPIRED)


@transaction.atomic
def approval_restore(*, request: ApprovalRequest, execution: models.Model, reason: str) -> ApprovalRequest:
    """consumed → approved, when the consuming execution was rejected or failed before dispatching anything."""
    if not reason.strip():
        raise ValidationError({"reason": "a restoration needs a reason"})
    execution_type, execution_id = _execution_ref(execution)
    locked = _lock(request)
    if locked.status != ApprovalStatus.CONSUMED:
        raise Conflict(f"approval #{locked.pk} is {locked.status}; only a consumed approval can be restored",
                       current=locked.status)
    if (locked.consumed_by_type_id, locked.consumed_by_id) != (execution_type.pk, execution_id):
        raise Conflict(f"approval #{locked.pk} was consumed by another execution", current=locked.status)
    try:
        with transaction.atomic():
            _move(locked, new=ApprovalStatus.APPROVED, actor=None, reason=f"restored: {reason}",
                  extra={"consumed_by_type": None, "consumed_by_id": None, "consumed_at": None})
    except IntegrityError as exc:
        raise Conflict(f"the subject of approval #{locked.pk} already has another open request",
                       current=ApprovalStatus.CONSUMED) from exc
    audit.record(
        actor=audit.SYSTEM,
        action="approval.restored",
        target=locked,
        reason=reason,
        data={"digest": locked.digest, "execution": _label(execution_type, execution_id)},
    )
    return locked


# --- promoting a pipeline version --------------------------------------------------------------------------------


def deployment_promote(
    *, pipeline_version: PipelineVersion, environment: Environment, requested_by: User, reason: str
) -> tuple[Deployment, ApprovalRequest | None]:
    """Promote a version to an environment: a deployment, plus its approval request when the posture requires one.

    The posture decides (incidents.services.deployment_request): allow → approved at once and no request; require
    approval → pending_approval with a request whose summary freezes what the approvers judge; deny → PermissionDenied.
    Both rows are written in one transaction. Refused (PermissionDenied, audited) when the requester may not operate
    in the environment.
    """
    if not reason.strip():
        raise ValidationError({"reason": "a promotion needs a reason"})
    environment = Environment.objects.get(pk=environment.pk)  # the posture as stored now
    if not can_in_environment(user=requested_by, environment=environment, perm=OPERATE):
        _refuse(actor=requested_by, action="deployment.promote_refused", request=None, environment=environment,
                reason=f"you may not operate in {environment.slug}")
    with transaction.atomic():
        deployment = deployment_request(
            environment=environment, pipeline_version=pipeline_version, actor=requested_by, reason=reason
        )
        if deployment.status != DeploymentStatus.PENDING_APPROVAL:
            return deployment, None
        parent = pipeline_version.parent
        summary = {
            "environment": environment.slug,
            "posture": {
                "deploy_policy": environment.deploy_policy,
                "decision": str(posture_decision(environment, SUBJECT_ACTIONS[SubjectKind.DEPLOYMENT])),
                "required_approvals": environment.required_approvals,
            },
            "pipeline_version": {
                "id": pipeline_version.pk,
                "label": pipeline_version.label,
                "spec_hash": pipeline_version.spec_hash,
                "parent": {"label": parent.label, "spec_hash": parent.spec_hash} if parent else None,
            },
            "spec_hash": pipeline_version.spec_hash,
            "scope": {
                "regions": list(deployment.target_regions),
                "pops": list(deployment.target_pops),
                "services": list(deployment.target_services),
            },
            "targets": _targets_label(deployment),
            "capabilities": ["deploy"],
            "reason": reason,
            "requested_by": requested_by.get_username(),
            "links": [
                {"label": f"pipeline version {pipeline_version.label}",
                 "url": reverse("admin:incidents_pipelineversion_change", args=[pipeline_version.pk])},
                {"label": f"deployment #{deployment.pk}",
                 "url": reverse("admin:incidents_deployment_change", args=[deployment.pk])},
            ],
        }
        request = approval_request(
            subject=deployment,
            subject_kind=SubjectKind.DEPLOYMENT,
            digest=deployment_digest(deployment),
            summary=summary,
            environment=environment,
            requested_by=requested_by,
            reason=reason,
        )
    return deployment, request


def _targets_label(deployment: Deployment) -> str:
    parts = [
        f"{name}: {', '.join(values)}"
        for name, values in (
            ("regions", deployment.target_regions),
            ("POPs", deployment.target_pops),
            ("services", deployment.target_services),
        )
        if values
    ]
    return "; ".join(parts) or "every agent in the environment"


__all__ = [
    "Conflict",
    "approval_break_glass",
    "approval_consume",
    "approval_decide",
    "approval_digest",
    "approval_expire_overdue",
    "approval_request",
    "approval_restore",
    "approval_revoke",
    "approval_withdraw",
    "approver_is_eligible",
    "deployment_digest",
    "deployment_promote",
    "status_after_decisions",
]
