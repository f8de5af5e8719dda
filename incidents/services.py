"""Every write to the incident-context model. Atomic, audited in the same transaction, transitions by CAS."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from replays.engine import CanonicalJSONError, spec_hash, window_problem
from replays.engine.alertmanager import import_alertmanager
from replays.engine.errors import FormatError
from replays.engine.policy import load_policy
from traceflux import audit
from traceflux.audit import AuditActor
from traceflux.prefixed_secrets import AGENT_KEY, ENROLLMENT_TOKEN
from traceflux.statemachine import TransitionError, transition

from .models import (
    COMMAND_TRANSITIONS,
    DEPLOYMENT_TRANSITIONS,
    INCIDENT_TRANSITIONS,
    Agent,
    AgentKey,
    AgentScope,
    Command,
    CommandStatus,
    Deployment,
    DeploymentStatus,
    EnrollmentToken,
    Environment,
    Heartbeat,
    HeartbeatStatus,
    Incident,
    IncidentNote,
    IncidentStatus,
    PipelineVersion,
    PostureAction,
    PostureDecision,
    posture_problems,
)
from .posture import posture_decision
from .selectors import pipeline_version_for
from .signals import command_acknowledged, command_expired

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
    try:
        with transaction.atomic():
            agent.save()
    except IntegrityError as exc:  # the same name, inserted concurrently since the check above
        raise ValidationError({"name": f"an agent named {name!r} already exists"}) from exc
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
        agent._history_user = actor if hasattr(actor, "get_username") else None  # type: ignore[attr-defined]
        agent._change_reason = reason or ("enabled" if enabled else "disabled")  # type: ignore[attr-defined]
        agent.save(update_fields=["enabled"])
        audit.record(actor=actor, action="agent.enabled" if enabled else "agent.disabled", target=agent, reason=reason)
    return agent


agent_key_digest = AGENT_KEY.digest


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
    prefix, secret_hmac, plaintext = AGENT_KEY.issue()
    key = AgentKey.objects.create(
        agent=agent, prefix=prefix, secret_hmac=secret_hmac, scopes=chosen, expires_at=expires_at
    )
    audit.record(
        actor=actor,
        action="agent_key.created",
        target=key,
        environment=agent.environment,
        data={"prefix": prefix, "scopes": chosen, "expires_at": expires_at.isoformat() if expires_at else None},
    )
    return key, plaintext


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


def pipeline_spec_check(*, spec: Any) -> str:
    """The spec hash of a spec that is a valid, new policy; ValidationError on `spec` naming the JSON path otherwise.

    The admin's add form calls this too, so a bad spec is a form error there, never a failed save.
    """
    if not isinstance(spec, dict):
        raise ValidationError({"spec": "a pipeline spec must be a JSON object"})
    try:
        digest = spec_hash(spec)
        load_policy(spec)
    except (CanonicalJSONError, FormatError) as exc:
        raise ValidationError({"spec": getattr(exc, "detail", None) or str(exc)}) from exc
    existing = pipeline_version_for(digest)
    if existing:
        raise ValidationError({"spec": f"this spec is already pipeline version {existing.label} ({digest})"})
    return digest


@transaction.atomic
def pipeline_version_create(
    *, label: str, spec: Any, actor: Any, parent: PipelineVersion | None = None, notes: str = ""
) -> PipelineVersion:
    if PipelineVersion.objects.filter(label=label).exists():
        raise ValidationError({"label": f"pipeline version {label!r} already exists"})
    digest = pipeline_spec_check(spec=spec)
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


def alertmanager_silences_parse(text: str) -> list[Any]:
    """Alertmanager's silence JSON (GET /api/v2/silences: a list; or one silence object) → a list; ValueError names
    the problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {exc.lineno}, column {exc.colno}: not JSON: {exc.msg}") from exc
    except RecursionError:
        raise ValueError("not JSON this portal can read: nested too deeply") from None
    if isinstance(data, dict):  # one silence, as POST /api/v2/silences takes it
        return [data]
    if not isinstance(data, list):
        raise ValueError("must be a JSON list of Alertmanager silences")
    return data


def pipeline_version_import_alertmanager(
    *,
    label: str,
    config_text: str,
    actor: Any,
    silences: list[Any] | None = None,
    parent: PipelineVersion | None = None,
    notes: str = "",
    name: str | None = None,
) -> PipelineVersion:
    """A pipeline version whose policy groups, inhibits and silences as this Alertmanager configuration does.

    Errors are ValidationErrors on `config` or `silences`, naming the YAML or JSON path.
    """
    try:
        spec = import_alertmanager(config_text, silences=silences, **({"name": name} if name else {}))
    except FormatError as exc:
        field = "silences" if (exc.field or "").startswith("silences") else "config"
        raise ValidationError({field: exc.detail}) from exc
    return pipeline_version_create(label=label, spec=spec, actor=actor, parent=parent, notes=notes)


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
    if status == DeploymentStatus.APPROVED:
        transaction.on_commit(partial(_dispatch_if_approved, deployment_id=deployment.pk, actor=actor))
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
    if to == DeploymentStatus.APPROVED:
        transaction.on_commit(partial(_dispatch_if_approved, deployment_id=deployment.pk, actor=actor))
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


# --- the agent API: refusals, enrollment, heartbeats ---------------------------------------------------------------

DENIAL_AUDIT_SECONDS = 60


def agent_request_denied(
    *, agent: Agent, reason: str, action: str = "agent.request_denied", data: dict[str, Any] | None = None
) -> bool:
    """Audit an authenticated agent request refused with 403 (outcome "denied"); True when an event was written.

    incidents.failures counts every refusal. The audit event is written at most once a minute per agent, action and
    reason, so an agent stuck in a refusal loop cannot flood the audit chain, which every audited write queues behind.
    """
    fingerprint = hashlib.sha256(f"{action}\n{reason}".encode()).hexdigest()[:16]
    if not cache.add(f"agentdenied:{agent.pk}:{fingerprint}", 1, timeout=DENIAL_AUDIT_SECONDS):
        return False
    audit.record(actor=agent, action=action, target=agent, outcome="denied", reason=reason, data=data)
    return True


def agent_assert_own(*, agent: Agent, agent_name: str | None = None, environment_slug: str | None = None) -> None:
    """Refuse (PermissionDenied, audited) a request that names an agent or environment other than the key's own."""
    if agent_name is not None and agent_name != agent.name:
        reason = f"the request names agent {agent_name!r}, but this key belongs to agent {agent.name!r}"
    elif environment_slug is not None and environment_slug != agent.environment.slug:
        reason = (
            f"the request names environment {environment_slug!r}, "
            f"but this key belongs to environment {agent.environment.slug!r}"
        )
    else:
        return
    agent_request_denied(agent=agent, reason=reason, data={"agent": agent_name, "environment": environment_slug})
    raise PermissionDenied(reason)




class EnrollmentRefused(Exception):
    """The enrollment token is malformed, unknown, expired or used up; the message says which (the API answers 401)."""


enrollment_token_digest = ENROLLMENT_TOKEN.digest


@transaction.atomic
def enrollment_token_create(
    *, environment: Environment, actor: Any, expires_at: datetime, uses: int = 1
) -> tuple[EnrollmentToken, str]:
    """Create a token and return it with its plaintext form `tfe_<prefix>_<secret>`, which is never stored."""
    if uses < 1:
        raise ValidationError({"uses": "an enrollment token needs at least one use"})
    if expires_at <= timezone.now():
        raise ValidationError({"expires_at": "an enrollment token cannot expire in the past"})
    prefix, secret_hmac, plaintext = ENROLLMENT_TOKEN.issue()
    token = EnrollmentToken(
        environment=environment,
        prefix=prefix,
        secret_hmac=secret_hmac,
        uses_left=uses,
        expires_at=expires_at,
        created_by=actor if hasattr(actor, "get_username") else None,
    )
    token._history_user = token.created_by  # type: ignore[attr-defined]
    token.save()
    audit.record(
        actor=actor,
        action="enrollment_token.created",
        target=token,
        data={"prefix": prefix, "uses": uses, "expires_at": expires_at.isoformat()},
    )
    return token, plaintext


def _enrollment_token_take(*, token: str, agent_name: str, now: datetime) -> EnrollmentToken:
    """Use up one use of the token by compare-and-swap, or raise EnrollmentRefused. Runs inside the caller's atomic."""
    parsed = ENROLLMENT_TOKEN.parse(token)
    if parsed is None:
        raise EnrollmentRefused("malformed enrollment token: expected tfe_<prefix>_<secret>")
    prefix, secret = parsed
    row = EnrollmentToken.objects.select_related("environment").filter(prefix=prefix).first()
    if row is None or not ENROLLMENT_TOKEN.matches(secret, row.secret_hmac):
        ENROLLMENT_TOKEN.matches(secret, None)  # the same work for an unknown prefix: timing reveals nothing
        raise EnrollmentRefused("unknown enrollment token")
    # Each failed swap means another enrollment took a use (uses_left only ever goes down), so this loop ends.
    while True:
        if row.expires_at <= now:
            raise EnrollmentRefused("this enrollment token has expired")
        if row.uses_left < 1:
            raise EnrollmentRefused("this enrollment token has been used up")
        seen = row.uses_left
        if EnrollmentToken.objects.filter(pk=row.pk, uses_left=seen).update(uses_left=seen - 1):
            break
        row.refresh_from_db(fields=["uses_left", "expires_at"])
    row.refresh_from_db(fields=["uses_left"])
    row._change_reason = f"used to enroll agent {agent_name}"  # type: ignore[attr-defined]
    row.save(update_fields=["uses_left"])  # writes the history row the UPDATE above could not
    return row


@transaction.atomic
def agent_enroll(
    *,
    token: str,
    name: str,
    hostname: str,
    version: str = "",
    region: str = "",
    pop: str = "",
    services: Iterable[str] = (),
    now: datetime | None = None,
) -> tuple[Agent, AgentKey, str]:
    """Trade an enrollment token for a new agent in the token's environment and a key with every scope.

    One transaction: when the agent is refused (its name is taken), the token's use is given back with the rollback.
    """
    enrollment = _enrollment_token_take(token=token, agent_name=name, now=now or timezone.now())
    via = AuditActor(kind="enrollment", id=str(enrollment.pk), name=f"enrollment token {enrollment.prefix}")
    agent = agent_create(
        environment=enrollment.environment,
        name=name,
        hostname=hostname,
        actor=via,
        version=version,
        region=region,
        pop=pop,
        services=services,
    )
    key, plaintext = agent_key_create(agent=agent, actor=via)
    audit.record(
        actor=agent,
        action="agent.enrolled",
        target=agent,
        data={"enrollment_token": enrollment.prefix, "uses_left": enrollment.uses_left, "key": key.prefix},
    )
    return agent, key, plaintext


def heartbeat_record(
    *,
    agent: Agent,
    status: str,
    version: str = "",
    deployment_id: int | None = None,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Heartbeat:
    """Store one heartbeat, move the agent's last_seen_at forward, and record a version change in its history.

    A deployment of another environment is refused (PermissionDenied, audited as denied) before anything is written;
    the refusal's audit event is its own transaction, so the refusal does not roll it back.
    """
    if status not in HeartbeatStatus.values:
        raise ValidationError({"status": f"{status!r} is not one of {', '.join(HeartbeatStatus.values)}"})
    if details is not None and not isinstance(details, dict):
        raise ValidationError({"details": "details must be a JSON object"})
    deployment = None
    if deployment_id is not None:
        deployment = Deployment.objects.select_related("environment").filter(pk=deployment_id).first()
        if deployment is None:
            raise ValidationError({"deployment": f"there is no deployment #{deployment_id}"})
        if deployment.environment_id != agent.environment_id:
            reason = f"deployment #{deployment_id} is not in this agent's environment {agent.environment.slug}"
            agent_request_denied(
                agent=agent,
                action="heartbeat.rejected",
                reason=reason,
                data={"deployment": deployment_id, "deployment_environment": deployment.environment.slug},
            )
            raise PermissionDenied(reason)
    now = now or timezone.now()
    with transaction.atomic():
        heartbeat = Heartbeat.objects.create(
            agent=agent, received_at=now, status=status, version=version, deployment=deployment, details=details or {}
        )
        # Telemetry: a plain conditional UPDATE (no history row, no audit event) that only ever moves forward.
        Agent.objects.filter(pk=agent.pk).filter(Q(last_seen_at__isnull=True) | Q(last_seen_at__lt=now)).update(
            last_seen_at=now
        )
        if version and version != agent.version:
            _agent_version_change(agent=agent, version=version)
    if agent.last_seen_at is None or agent.last_seen_at < now:
        agent.last_seen_at = now
    return heartbeat


def _agent_version_change(*, agent: Agent, version: str) -> None:
    locked = Agent.objects.select_for_update().get(pk=agent.pk)
    if locked.version != version:  # another heartbeat may have recorded the same change first
        old = locked.version
        locked.version = version
        locked._change_reason = f"version {old or '-'} → {version}"  # type: ignore[attr-defined]
        locked.save(update_fields=["version"])
        audit.record(actor=agent, action="agent.version_changed", target=locked, data={"from": old, "to": version})
    agent.version = version


HEARTBEAT_PRUNE_BATCH = 5000


def heartbeat_prune(*, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete heartbeats received more than `older_than` ago; returns how many.

    Deleted in batches, each its own transaction, so pruning a large backlog never holds one huge transaction.
    """
    if older_than <= timedelta(0):
        raise ValidationError({"older_than": "the retention must be a positive duration"})
    cutoff = (now or timezone.now()) - older_than
    deleted = 0
    while True:
        with transaction.atomic():
            batch = list(
                Heartbeat.objects.filter(received_at__lt=cutoff)
                .order_by("pk")
                .values_list("pk", flat=True)[:HEARTBEAT_PRUNE_BATCH]
            )
            if not batch:
                break
            deleted += Heartbeat.objects.filter(pk__in=batch).delete()[0]
    if deleted:
        audit.record(
            actor=audit.SYSTEM,
            action="heartbeat.pruned",
            data={"deleted": deleted, "received_before": cutoff.isoformat()},
        )
    return deleted


# --- the command channel -----------------------------------------------------------------------------------------

COMMAND_LEASE_BATCH = 50
ACK_STATUSES = (CommandStatus.SUCCEEDED, CommandStatus.FAILED)


@transaction.atomic
def command_create(
    *,
    agent: Agent,
    kind: str,
    payload: Any,
    idempotency_key: str,
    actor: Any,
    deadline: datetime | None = None,
) -> Command:
    """Queue a command for an agent, at most once per idempotency key: a repeated key returns the existing command.

    The unique constraint decides, never a lookup first: of two concurrent calls with one key, one inserts and the
    other gets the command it inserted. Reusing a key for a different agent or kind is refused.
    """
    problems = {}
    if not kind.strip():
        problems["kind"] = "a command needs a kind"
    if not idempotency_key.strip() or len(idempotency_key) > 128:
        problems["idempotency_key"] = "an idempotency key is 1 to 128 characters"
    if problems:
        raise ValidationError(problems)
    command = Command(
        agent=agent,
        kind=kind,
        payload={} if payload is None else payload,
        idempotency_key=idempotency_key,
        deadline=deadline,
    )
    if hasattr(actor, "get_username"):
        command._history_user = actor  # type: ignore[attr-defined]
    try:
        with transaction.atomic():  # a savepoint: a duplicate key fails alone, the caller's transaction goes on
            command.save()
    except IntegrityError:
        existing = Command.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        if existing.agent_id != agent.pk or existing.kind != kind:
            raise ValidationError(
                {
                    "idempotency_key": f"idempotency key {idempotency_key!r} already belongs to command "
                    f"#{existing.pk} ({existing.kind} for agent {existing.agent})"
                }
            ) from None
        return existing
    # Judged after the insert, so a retry with the original (now past) deadline still finds its command above.
    if deadline is not None and deadline <= timezone.now():
        raise ValidationError({"deadline": "a command's deadline must be in the future"})
    audit.record(
        actor=actor,
        action="command.created",
        target=command,
        data={
            "kind": kind,
            "idempotency_key": idempotency_key,
            "deadline": deadline.isoformat() if deadline else None,
        },
    )
    return command


def command_lease(*, agent: Agent, now: datetime | None = None, limit: int = COMMAND_LEASE_BATCH) -> list[Command]:
    """Lease the agent's waiting commands to it for TRACEFLUX_COMMAND_LEASE and return them, oldest first.

    Waiting means pending, or delivered with the lease ended (never past the deadline). Each command moves by its own
    compare-and-swap in its own transaction: one that a concurrent poll took first is skipped, and no transaction
    holds one command's row lock while it waits for another's or for the audit chain.
    """
    now = now or timezone.now()
    lease_until = now + settings.TRACEFLUX_COMMAND_LEASE
    leased: list[Command] = []
    waiting = list(Command.objects.for_agent(agent).leasable(now=now).order_by("created_at", "pk")[:limit])
    for command in waiting:
        with transaction.atomic():
            if command.status == CommandStatus.PENDING:
                try:
                    transition(
                        command,
                        allowed=COMMAND_TRANSITIONS,
                        new=CommandStatus.DELIVERED,
                        actor=agent,
                        reason="delivered to the agent",
                        extra={
                            "delivered_at": now,
                            "lease_until": lease_until,
                            "delivery_count": F("delivery_count") + 1,
                        },
                    )
                except TransitionError:
                    continue
                action = "command.delivered"
            else:
                moved = Command.objects.filter(
                    pk=command.pk, status=CommandStatus.DELIVERED, lease_until=command.lease_until
                ).update(lease_until=lease_until, delivery_count=F("delivery_count") + 1)
                if not moved:
                    continue
                command.refresh_from_db()
                command._change_reason = (  # type: ignore[attr-defined]
                    f"lease ended unacknowledged; delivered again (delivery {command.delivery_count})"
                )
                command.save(update_fields=["lease_until", "delivery_count"])  # the history row update() skipped
                action = "command.redelivered"
            audit.record(
                actor=agent,
                action=action,
                target=command,
                data={"delivery_count": command.delivery_count, "lease_until": lease_until.isoformat()},
            )
        leased.append(command)
    return leased


def command_expire_overdue(*, now: datetime | None = None) -> int:
    """Expire commands past their deadline that nobody holds: pending ones, and delivered ones whose lease ended.

    A command whose lease is still running is left to its agent until the lease ends. Returns how many expired.
    """
    now = now or timezone.now()
    expired = 0
    for command in list(Command.objects.overdue(now=now).select_related("agent__environment").order_by("pk")):
        with transaction.atomic():
            old = command.status
            reason = f"deadline {command.deadline.isoformat()} passed"
            try:
                transition(command, allowed=COMMAND_TRANSITIONS, new=CommandStatus.EXPIRED, reason=reason)
            except TransitionError:
                continue  # acknowledged or expired meanwhile
            audit.record(
                actor=audit.SYSTEM,
                action="command.expired",
                target=command,
                reason=reason,
                data={"from": old, "delivery_count": command.delivery_count},
            )
            transaction.on_commit(partial(command_expired.send, sender=Command, command=command))
        expired += 1
    return expired


@transaction.atomic
def command_acknowledge(*, command: Command, agent: Agent, status: str, output: Any = None) -> tuple[Command, bool]:
    """Record the agent's outcome for a delivered command; returns (command, changed).

    Repeating the status already recorded changes nothing: no audit event, no signal, the first output is kept. Any
    other status raises TransitionError naming the current one (the API answers 409). On commit, the signal
    incidents.signals.command_acknowledged tells the command's owner.
    """
    if command.agent_id != agent.pk:
        raise PermissionDenied(f"command #{command.pk} belongs to another agent")
    if status not in ACK_STATUSES:
        raise ValidationError({"status": f"{status!r} is not one of {', '.join(ACK_STATUSES)}"})
    command.refresh_from_db()
    if command.status == status:
        return command, False
    try:
        transition(
            command,
            allowed=COMMAND_TRANSITIONS,
            new=status,
            actor=agent,
            reason=f"acknowledged by the agent: {status}",
            extra={"acknowledged_at": timezone.now(), "output": {} if output is None else output},
        )
    except TransitionError as exc:
        if exc.current == status:  # the same acknowledgement, concurrently
            command.refresh_from_db()
            return command, False
        raise TransitionError(
            f"command #{command.pk} is {exc.current}; it cannot be acknowledged as {status}", current=exc.current
        ) from exc
    audit.record(
        actor=agent,
        action=f"command.{status}",
        target=command,
        data={"kind": command.kind, "delivery_count": command.delivery_count},
    )
    transaction.on_commit(partial(command_acknowledged.send, sender=Command, command=command, status=status))
    return command, True



# --- deployments, carried out through the command channel -------------------------------------------------------
#
# approved → deploying: deployment_dispatch sends one `deploy` command per target agent (on commit of the move to
# approved, whoever made it). deploying → active / failed and rolling_back → rolled_back / failed: deployment_settle,
# called by incidents.receivers on every acknowledgement or expiry of those commands. Nothing polls or sleeps.

DEPLOY_COMMAND = "deploy"
ROLLBACK_COMMAND = "rollback"
DEFAULT_DEPLOY_COMMAND_TTL = timedelta(hours=1)

# kind of command → (the status the deployment waits in, where it goes when every agent succeeded)
_SETTLES: dict[str, tuple[str, str]] = {
    DEPLOY_COMMAND: (DeploymentStatus.DEPLOYING, DeploymentStatus.ACTIVE),
    ROLLBACK_COMMAND: (DeploymentStatus.ROLLING_BACK, DeploymentStatus.ROLLED_BACK),
}


def deployment_command_key(*, kind: str, deployment: Deployment, agent: Agent) -> str:
    return f"{kind}:{deployment.pk}:{agent.pk}"


def deployment_commands(*, deployment: Deployment, kind: str) -> Any:
    """The commands of one kind sent for a deployment, found by their idempotency keys."""
    return Command.objects.filter(kind=kind, idempotency_key__startswith=f"{kind}:{deployment.pk}:")


def _deployment_payload(deployment: Deployment) -> dict[str, Any]:
    return {
        "deployment": deployment.pk,
        "pipeline_version": deployment.pipeline_version.label,
        "spec_hash": deployment.pipeline_version.spec_hash,
    }


def _command_deadline() -> datetime:
    return timezone.now() + getattr(settings, "TRACEFLUX_DEPLOY_COMMAND_TTL", DEFAULT_DEPLOY_COMMAND_TTL)


def _lock_deployment(deployment: Deployment) -> Deployment:
    return Deployment.objects.select_for_update().select_related("pipeline_version", "environment").get(
        pk=deployment.pk
    )


def _agent_names(agents: list[Agent]) -> str:
    return ", ".join(agent.name for agent in agents)


def _dispatch_if_approved(*, deployment_id: int, actor: Any) -> None:
    """On commit of a move to approved: dispatch, unless someone already moved it on (the demo, an admin, a race)."""
    deployment = Deployment.objects.filter(pk=deployment_id).first()
    if deployment is None or deployment.status != DeploymentStatus.APPROVED:
        return
    with contextlib.suppress(TransitionError):  # dispatched or moved concurrently: whoever did that goes on
        deployment_dispatch(deployment=deployment, actor=actor)


@transaction.atomic
def deployment_dispatch(*, deployment: Deployment, actor: Any) -> Deployment:
    """approved → deploying: one `deploy` command per target agent, then the move, in one transaction.

    Commands are idempotent per (deployment, agent), so a repeated dispatch sends nothing twice. With no target
    agent there is nothing to carry the version out: the deployment goes on to failed ("no target agents") rather
    than stay approved or become active with nobody running it. Raises TransitionError unless it is approved.
    """
    locked = _lock_deployment(deployment)
    if locked.status != DeploymentStatus.APPROVED:
        raise TransitionError(
            f"deployment #{locked.pk} is {locked.status}; only an approved deployment can be dispatched",
            current=locked.status,
        )
    agents = list(locked.target_agents().order_by("name", "pk"))
    payload = _deployment_payload(locked)
    deadline = _command_deadline()
    for agent in agents:
        command_create(
            agent=agent, kind=DEPLOY_COMMAND, payload=payload, actor=actor, deadline=deadline,
            idempotency_key=deployment_command_key(kind=DEPLOY_COMMAND, deployment=locked, agent=agent),
        )
    if not agents:
        deployment_transition(deployment=locked, to=DeploymentStatus.DEPLOYING, actor=actor,
                              reason="dispatching: no agent matches the targets")
        return deployment_transition(deployment=locked, to=DeploymentStatus.FAILED, actor=actor,
                                     reason="no target agents")
    return deployment_transition(
        deployment=locked, to=DeploymentStatus.DEPLOYING, actor=actor,
        reason=f"{DEPLOY_COMMAND} sent to {len(agents)} agents: {_agent_names(agents)}",
    )


@transaction.atomic
def deployment_rollback(*, deployment: Deployment, actor: Any, reason: str) -> Deployment:
    """active → rolling_back, and a `rollback` command to each agent the version was deployed to.

    The agents are those that were sent the deploy commands (the deployment's targets now, if it had none). With no
    agent at all there is nothing to undo: it goes on to rolled_back at once.
    """
    if not reason.strip():
        raise ValidationError({"reason": "a rollback needs a reason"})
    locked = _lock_deployment(deployment)
    deployed_to = deployment_commands(deployment=locked, kind=DEPLOY_COMMAND).values_list("agent_id", flat=True)
    agents = list(Agent.objects.filter(pk__in=list(deployed_to)).order_by("name", "pk"))
    if not agents:
        agents = list(locked.target_agents().order_by("name", "pk"))
    deployment_transition(deployment=locked, to=DeploymentStatus.ROLLING_BACK, actor=actor, reason=reason)
    payload = {**_deployment_payload(locked), "reason": reason}
    deadline = _command_deadline()
    for agent in agents:
        command_create(
            agent=agent, kind=ROLLBACK_COMMAND, payload=payload, actor=actor, deadline=deadline,
            idempotency_key=deployment_command_key(kind=ROLLBACK_COMMAND, deployment=locked, agent=agent),
        )
    if not agents:
        return deployment_transition(deployment=locked, to=DeploymentStatus.ROLLED_BACK, actor=actor,
                                     reason="no agents to roll back")
    return locked


@transaction.atomic
def deployment_settle(*, command: Command) -> Deployment | None:
    """Move a deployment on after one of its deploy or rollback commands was acknowledged or expired.

    Every command succeeded → active (superseding the previous active one) or rolled_back; any failed or expired →
    failed; otherwise it waits. The deployment's row lock orders concurrent acknowledgements: of the last two, one
    moves it and the other finds it moved. Returns the deployment when it moved, else None.
    """
    if command.kind not in _SETTLES or not isinstance(command.payload, dict):
        return None
    waiting_in, succeeded_to = _SETTLES[command.kind]
    deployment = Deployment.objects.filter(pk=command.payload.get("deployment")).first()
    if deployment is None:
        return None
    locked = _lock_deployment(deployment)
    if locked.status != waiting_in:
        return None  # already moved on: a late acknowledgement, or the other of two concurrent ones
    commands = list(
        deployment_commands(deployment=locked, kind=command.kind).select_related("agent").order_by("agent__name", "pk")
    )
    broken = [c for c in commands if c.status in (CommandStatus.FAILED, CommandStatus.EXPIRED)]
    if broken:
        to = DeploymentStatus.FAILED
        reason = "; ".join(f"{c.kind} on {c.agent.name} {c.status}" for c in broken)
    elif commands and all(c.status == CommandStatus.SUCCEEDED for c in commands):
        to = succeeded_to
        agents = _agent_names([c.agent for c in commands])
        reason = f"{command.kind} acknowledged by all {len(commands)} agents: {agents}"
    else:
        return None
    actor = command.agent if command.status in ACK_STATUSES else audit.SYSTEM
    try:
        return deployment_transition(deployment=locked, to=to, actor=actor, reason=reason)
    except TransitionError:
        return None  # we hold the row lock, so only a bug gets here; the next acknowledgement tries again


__all__ = [
    "EnrollmentRefused",
    "IncidentStatus",
    "agent_assert_own",
    "agent_create",
    "agent_enroll",
    "agent_key_create",
    "agent_key_revoke",
    "agent_request_denied",
    "agent_set_enabled",
    "command_acknowledge",
    "command_create",
    "command_expire_overdue",
    "command_lease",
    "deployment_dispatch",
    "deployment_request",
    "deployment_rollback",
    "deployment_settle",
    "deployment_transition",
    "enrollment_token_create",
    "environment_create",
    "environment_set_posture",
    "heartbeat_prune",
    "heartbeat_record",
    "incident_note_add",
    "incident_open",
    "incident_transition",
    "pipeline_version_create",
]
