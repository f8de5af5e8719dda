"""Every write to the incident-context model. Atomic, audited in the same transaction, transitions by CAS."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from replays.engine import CanonicalJSONError, spec_hash, window_problem
from traceflux import audit
from traceflux.statemachine import transition

from .models import (
    DEPLOYMENT_TRANSITIONS,
    INCIDENT_TRANSITIONS,
    Agent,
    AgentKey,
    AgentScope,
    Deployment,
    DeploymentStatus,
    Environment,
    Incident,
    IncidentNote,
    IncidentStatus,
    PipelineVersion,
    PostureAction,
    PostureDecision,
    posture_problems,
)
from .posture import posture_decision

User = AbstractBaseUser

# --- environments ------------------------------------------------------------------------------------------------

POSTURE_FIELDS = ("replay_policy", "execute_policy", "deploy_policy", "required_approvals", "approval_ttl")


def _posture_of(environment: Environment) -> dict[str, Any]:
    return {field: getattr(environment, field) for field in POSTURE_FIELDS}


def _posture_data(posture: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.total_seconds() if isinstance(v, timedelta) else v) for k, v in posture.items()}


@transaction.atomic
def environment_create(
    *,
    slug: str,
    name: str,
    actor: User | None,
    replay_policy: str = "dry_run_only",
    execute_policy: str = "deny",
    deploy_policy: str = "require_approval",
    required_approvals: int = 1,
    approval_ttl: timedelta | None = None,
) -> Environment:
    posture = {
        "replay_policy": replay_policy,
        "execute_policy": execute_policy,
        "deploy_policy": deploy_policy,
        "required_approvals": required_approvals,
        "approval_ttl": settings.TRACEFLUX_DEFAULT_APPROVAL_TTL if approval_ttl is None else approval_ttl,
    }
    problems = posture_problems(**posture)
    if problems:
        raise ValidationError(problems)
    if Environment.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": f"an environment with slug {slug!r} already exists"})
    environment = Environment(slug=slug, name=name, **posture)
    environment.full_clean()
    environment._history_user = actor  # type: ignore[attr-defined]
    environment.save()
    audit.record(actor=actor, action="environment.created", target=environment, data=_posture_data(posture))
    return environment


@transaction.atomic
def environment_set_posture(
    *, environment: Environment, actor: User | None, reason: str, **posture: Any
) -> Environment:
    """Change some posture fields at once; a contradictory result is refused whole."""
    unknown = set(posture) - set(POSTURE_FIELDS)
    if unknown:
        raise ValidationError({field: "not a posture field" for field in sorted(unknown)})
    if not reason.strip():
        raise ValidationError({"reason": "a posture change needs a reason"})
    locked = Environment.objects.select_for_update().get(pk=environment.pk)
    before = _posture_of(locked)
    after = {**before, **posture}
    problems = posture_problems(**after)
    if problems:
        raise ValidationError(problems)
    for field, value in after.items():
        setattr(locked, field, value)
    locked._history_user = actor  # type: ignore[attr-defined]
    locked._change_reason = reason  # type: ignore[attr-defined]
    locked.save(update_fields=list(POSTURE_FIELDS))
    audit.record(
        actor=actor,
        action="environment.posture_changed",
        target=locked,
        reason=reason,
        data={"before": _posture_data(before), "after": _posture_data(after)},
    )
    return locked


# --- agents and keys ---------------------------------------------------------------------------------------------


def _validate_labels(services: Iterable[str]) -> list[str]:
    cleaned = [s.strip() for s in services if isinstance(s, str) and s.strip()]
    if len(cleaned) != len(list(services)):
        raise ValidationError({"services": "services must be a list of non-empty names"})
    return sorted(set(cleaned))


@transaction.atomic
def agent_create(
    *,
    environment: Environment,
    name: str,
    hostname: str,
    actor: Any,
    version: str = "",
    region: str = "",
    pop: str = "",
    services: Iterable[str] = (),
) -> Agent:
    if Agent.objects.filter(name=name).exists():
        raise ValidationError({"name": f"an agent named {name!r} already exists"})
    agent = Agent(
        environment=environment,
        name=name,
        hostname=hostname,
        version=version,
        region=region,
        pop=pop,
        services=_validate_labels(list(services)),
    )
    agent.full_clean()
    if hasattr(actor, "get_username"):
        agent._history_user = actor  # type: ignore[attr-defined]
    agent.save()
    audit.record(
        actor=actor,
        action="agent.created",
        target=agent,
        environment=environment,
        data={"region": region, "pop": pop, "services": agent.services},
    )
    return agent


@transaction.atomic
def agent_set_enabled(*, agent: Agent, enabled: bool, actor: Any, reason: str = "") -> Agent:
    moved = Agent.objects.filter(pk=agent.pk, enabled=not enabled).update(enabled=enabled)
    agent.refresh_from_db()
    if moved:
        agent._history_user = actor  # type: ignore[attr-defined]
        agent._change_reason = reason or ("enabled" if enabled else "disabled")  # type: ignore[attr-defined]
        agent.save(update_fields=["enabled"])
        audit.record(actor=actor, action="agent.enabled" if enabled else "agent.disabled", target=agent, reason=reason)
    return agent


KEY_PREFIX_LEN = 12


def agent_key_digest(secret: str) -> str:
    return hmac.new(settings.AGENT_KEY_HMAC_KEY.encode(), secret.encode(), hashlib.sha256).hexdigest()


@transaction.atomic
def agent_key_create(
    *, agent: Agent, actor: Any, scopes: Iterable[str] | None = None, expires_at: datetime | None = None
) -> tuple[AgentKey, str]:
    """Create a key and return it with its plaintext form `tfk_<prefix>_<secret>`, which is never stored."""
    chosen = sorted(set(scopes)) if scopes is not None else sorted(AgentScope.values)
    unknown = [s for s in chosen if s not in AgentScope.values]
    if unknown or not chosen:
        raise ValidationError({"scopes": f"unknown scopes {unknown}; allowed: {', '.join(AgentScope.values)}"})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "a key cannot expire in the past"})
    prefix = secrets.token_hex(KEY_PREFIX_LEN // 2)
    secret = secrets.token_urlsafe(32)
    key = AgentKey.objects.create(
        agent=agent, prefix=prefix, secret_hmac=agent_key_digest(secret), scopes=chosen, expires_at=expires_at
    )
    audit.record(
        actor=actor,
        action="agent_key.created",
        target=key,
        environment=agent.environment,
        data={"prefix": prefix, "scopes": chosen, "expires_at": expires_at.isoformat() if expires_at else None},
    )
    return key, f"tfk_{prefix}_{secret}"


@transaction.atomic
def agent_key_revoke(*, key: AgentKey, actor: Any, reason: str = "") -> AgentKey:
    moved = AgentKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db()
    if moved:
        key._history_user = actor if hasattr(actor, "get_username") else None  # type: ignore[attr-defined]
        key._change_reason = reason or "revoked"  # type: ignore[attr-defined]
        key.save(update_fields=["revoked_at"])
        audit.record(actor=actor, action="agent_key.revoked", target=key, reason=reason)
    return key


# --- pipeline versions -------------------------------------------------------------------------------------------


@transaction.atomic
def pipeline_version_create(
    *, label: str, spec: Any, actor: Any, parent: PipelineVersion | None = None, notes: str = ""
) -> PipelineVersion:
    if not isinstance(spec, dict):
        raise ValidationError({"spec": "a pipeline spec must be a JSON object"})
    try:
        digest = spec_hash(spec)
    except CanonicalJSONError as exc:
        raise ValidationError({"spec": str(exc)}) from exc
    if PipelineVersion.objects.filter(label=label).exists():
        raise ValidationError({"label": f"pipeline version {label!r} already exists"})
    existing = PipelineVersion.objects.filter(spec_hash=digest).first()
    if existing:
        raise ValidationError({"spec": f"this spec is already pipeline version {existing.label} ({digest})"})
    version = PipelineVersion(
        label=label,
        spec=spec,
        spec_hash=digest,
        parent=parent,
        notes=notes,
        created_by=actor if hasattr(actor, "get_username") else None,
    )
    version._history_user = version.created_by  # type: ignore[attr-defined]
    try:
        with transaction.atomic():
            version.save()
    except IntegrityError as exc:
        raise ValidationError({"spec": f"pipeline version {label} or spec {digest} was created concurrently"}) from exc
    audit.record(
        actor=actor,
        action="pipeline_version.created",
        target=version,
        data={"spec_hash": digest, "parent": parent.label if parent else None},
    )
    return version


# --- deployments -------------------------------------------------------------------------------------------------


def deployment_request(
    *,
    environment: Environment,
    pipeline_version: PipelineVersion,
    actor: User,
    reason: str,
    target_regions: Iterable[str] = (),
    target_pops: Iterable[str] = (),
    target_services: Iterable[str] = (),
) -> Deployment:
    """Ask to deploy a version. The posture decides: refused, pending approval, or approved at once."""
    if not reason.strip():
        raise ValidationError({"reason": "a deployment needs a reason"})
    decision = posture_decision(environment, PostureAction.DEPLOY)
    if decision == PostureDecision.DENY:
        # Outside the atomic block on purpose: the refusal is recorded even though nothing else is written.
        audit.record(
            actor=actor,
            action="deployment.rejected",
            environment=environment,
            outcome="denied",
            reason=f"deploy posture in {environment.slug} is deny",
            data={"pipeline_version": pipeline_version.label},
        )
        raise PermissionDenied(f"deployments are denied in {environment.slug} by its posture")
    with transaction.atomic():
        return _deployment_insert(
            environment=environment,
            pipeline_version=pipeline_version,
            actor=actor,
            reason=reason,
            decision=decision,
            target_regions=target_regions,
            target_pops=target_pops,
            target_services=target_services,
        )


def _deployment_insert(
    *,
    environment: Environment,
    pipeline_version: PipelineVersion,
    actor: User,
    reason: str,
    decision: PostureDecision,
    target_regions: Iterable[str],
    target_pops: Iterable[str],
    target_services: Iterable[str],
) -> Deployment:
    status = DeploymentStatus.APPROVED if decision == PostureDecision.ALLOW else DeploymentStatus.PENDING_APPROVAL
    deployment = Deployment(
        environment=environment,
        pipeline_version=pipeline_version,
        status=status,
        requested_by=actor,
        reason=reason,
        target_regions=sorted(set(target_regions)),
        target_pops=sorted(set(target_pops)),
        target_services=sorted(set(target_services)),
        status_changed_at=timezone.now(),
    )
    deployment._history_user = actor  # type: ignore[attr-defined]
    deployment._change_reason = reason  # type: ignore[attr-defined]
    deployment.save()
    audit.record(
        actor=actor,
        action="deployment.requested",
        target=deployment,
        reason=reason,
        data={
            "pipeline_version": pipeline_version.label,
            "spec_hash": pipeline_version.spec_hash,
            "posture": decision.value,
            "status": status,
        },
    )
    return deployment


@transaction.atomic
def deployment_transition(*, deployment: Deployment, to: str, actor: Any, reason: str = "") -> Deployment:
    """Move a deployment along its state machine. Activating one supersedes the environment's previous active one."""
    old = deployment.status
    if to == DeploymentStatus.DENIED and not reason.strip():
        raise ValidationError({"reason": "a denial needs a reason"})
    if to == DeploymentStatus.ACTIVE:
        for previous in Deployment.objects.filter(
            environment_id=deployment.environment_id, status=DeploymentStatus.ACTIVE
        ).exclude(pk=deployment.pk):
            transition(
                previous,
                allowed=DEPLOYMENT_TRANSITIONS,
                new=DeploymentStatus.SUPERSEDED,
                actor=actor,
                reason=f"superseded by deployment #{deployment.pk}",
            )
            audit.record(
                actor=actor,
                action="deployment.superseded",
                target=previous,
                reason=f"superseded by deployment #{deployment.pk}",
            )
    transition(deployment, allowed=DEPLOYMENT_TRANSITIONS, new=to, actor=actor, reason=reason)
    audit.record(actor=actor, action=f"deployment.{to}", target=deployment, reason=reason, data={"from": old, "to": to})
    return deployment


# --- incidents ---------------------------------------------------------------------------------------------------


@transaction.atomic
def incident_open(
    *,
    ref: str,
    title: str,
    environment: Environment,
    window_start: datetime,
    window_end: datetime,
    actor: Any,
    severity: str = "sev3",
    source_agent: Agent | None = None,
    deployment: Deployment | None = None,
    service: str = "",
    region: str = "",
    pop: str = "",
) -> Incident:
    problem = window_problem(window_start, window_end)
    if problem:
        raise ValidationError({"window_end": problem})
    if Incident.objects.filter(ref=ref).exists():
        raise ValidationError({"ref": f"incident {ref} already exists"})
    if deployment is None:
        deployment = Deployment.objects.filter(environment=environment, status=DeploymentStatus.ACTIVE).first()
    incident = Incident(
        ref=ref,
        title=title,
        severity=severity,
        environment=environment,
        source_agent=source_agent,
        deployment=deployment,
        service=service,
        region=region,
        pop=pop,
        window_start=window_start,
        window_end=window_end,
        opened_by=actor if hasattr(actor, "get_username") else None,
        status_changed_at=timezone.now(),
    )
    incident.full_clean()
    incident._history_user = incident.opened_by  # type: ignore[attr-defined]
    incident.save()
    audit.record(
        actor=actor,
        action="incident.opened",
        target=incident,
        data={
            "severity": severity,
            "service": service,
            "region": region,
            "pop": pop,
            "window": [window_start.isoformat(), window_end.isoformat()],
        },
    )
    return incident


@transaction.atomic
def incident_transition(*, incident: Incident, to: str, actor: Any, reason: str) -> Incident:
    if not reason.strip():
        raise ValidationError({"reason": "an incident status change needs a reason"})
    old = incident.status
    transition(incident, allowed=INCIDENT_TRANSITIONS, new=to, actor=actor, reason=reason)
    audit.record(actor=actor, action=f"incident.{to}", target=incident, reason=reason, data={"from": old, "to": to})
    return incident


@transaction.atomic
def incident_note_add(*, incident: Incident, author: Any, body: str) -> IncidentNote:
    if not body.strip():
        raise ValidationError({"body": "a note cannot be empty"})
    note = IncidentNote(incident=incident, author=author if hasattr(author, "get_username") else None, body=body)
    note._history_user = note.author  # type: ignore[attr-defined]
    note.save()
    audit.record(actor=author, action="incident.note_added", target=incident, data={"note": note.pk})
    return note


__all__ = [
    "IncidentStatus",
    "agent_create",
    "agent_key_create",
    "agent_key_revoke",
    "agent_set_enabled",
    "deployment_request",
    "deployment_transition",
    "environment_create",
    "environment_set_posture",
    "incident_note_add",
    "incident_open",
    "incident_transition",
    "pipeline_version_create",
]
