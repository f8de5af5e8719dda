"""What the incident investigation page shows: the operator guide's seven steps for one incident, the points where
the guide says to escalate, and which next step the user may take. Reads only; every write is a service.

Everything is narrowed through the selectors (the incident itself through replays.selectors.incident_for, which the
view calls). Every list is bounded, and each is one query whatever the data, so the page costs a fixed number of
queries (tests/replays/test_investigation.py holds it to that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from approvals.models import OPEN_STATUSES, ApprovalRequest, ApprovalStatus
from approvals.selectors import visible_requests
from artifacts.models import Artifact, ArtifactKind
from artifacts.selectors import visible_artifacts
from incidents.failures import failure_counts, worth_escalating
from incidents.models import (
    INCIDENT_TRANSITIONS,
    Deployment,
    Incident,
    IncidentStatus,
    PostureAction,
    PostureDecision,
)
from incidents.posture import posture_decision
from incidents.selectors import pipeline_versions_for, visible_deployments
from traceflux.audit.selectors import events_for_targets

from . import selectors, services
from .heartbeat_svg import heartbeat_svg
from .models import ReplayExecution, ReplayMode, ReplayStatus

BUNDLES_SHOWN = 20
SNAPSHOTS_SHOWN = 10
HEARTBEATS_SHOWN = 120
REPLAYS_SHOWN = 50
APPROVALS_SHOWN = 50
NOTES_SHOWN = 200
AUDIT_EVENTS_SHOWN = 200
FAILURE_MINUTES = 60


@dataclass(frozen=True)
class Banner:
    """One escalation point the data shows: `code` names it (the element id is escalation-<code>)."""

    code: str
    title: str
    detail: str


@dataclass(frozen=True)
class Step:
    """A next step: enabled, or not with the reason why. `dry_run` is the run an approval or execute would promote."""

    code: str
    label: str
    enabled: bool
    why_not: str = ""
    url: str = ""
    dry_run: ReplayExecution | None = None


@dataclass
class ArtifactRow:
    artifact: Artifact
    resolved: Any  # the PipelineVersion its spec hash names, or None


@dataclass
class Investigation:
    incident: Incident
    decisions: dict[str, str]
    may_operate: bool
    bundles: list[ArtifactRow]
    incident_snapshots: list[Artifact]
    deployments: list[tuple[str, Deployment]]
    deployment_approvals: dict[int, list[ApprovalRequest]]
    heartbeats_svg: Any
    last_heartbeat: Any
    agent_stale: bool
    failures: dict[int, int]
    agent_snapshots: list[Artifact]
    replays: list[ReplayExecution]
    latest_dry_run: ReplayExecution | None
    execute_approval: ApprovalRequest | None
    replay_approvals: dict[int, list[ApprovalRequest]]
    steps: list[Step]
    banners: list[Banner]
    transitions: list[str]
    notes: list[Any]
    audit_events: list[Any]
    resolved: dict[str, Any] = field(default_factory=dict)  # spec hash → the PipelineVersion it names


def next_statuses(incident: Incident) -> list[str]:
    """The statuses the incident may move to from where it is, in the lifecycle's order."""
    allowed = INCIDENT_TRANSITIONS.get(incident.status, set())
    return [status for status in IncidentStatus.values if status in allowed]


def _approvals_by_subject(user: Any, model: type, ids: list[int]) -> dict[int, list[ApprovalRequest]]:
    if not ids:
        return {}
    content_type = ContentType.objects.get_for_model(model)
    found: dict[int, list[ApprovalRequest]] = {}
    requests = (
        visible_requests(user=user)
        .filter(content_type=content_type, object_id__in=ids)
        .select_related("break_glass_by")
        .order_by("-created_at", "-pk")[:APPROVALS_SHOWN]
    )
    for request in requests:
        found.setdefault(request.object_id, []).append(request)
    return found


def _deployment_rows(incident: Incident, latest: Deployment | None) -> list[tuple[str, Deployment]]:
    """The deployment running when the incident began and the environment's latest, each with what it is."""
    began = incident.deployment
    slug = incident.environment.slug
    if began is not None and latest is not None and began.pk == latest.pk:
        return [(f"running when the incident began; the latest in {slug}", began)]
    rows = []
    if began is not None:
        rows.append(("running when the incident began", began))
    if latest is not None:
        rows.append((f"the latest in {slug}", latest))
    return rows


def approval_problem(approval: ApprovalRequest | None, *, now: datetime) -> tuple[str, str] | None:
    """(kind, words) when the approval does not cover an execute: missing, denied or expired. None when it does or
    is still pending within its time."""
    if approval is None:
        return "missing", "no approval has been requested for it"
    status = approval.status
    if status in (ApprovalStatus.DENIED, ApprovalStatus.REVOKED):
        return "denied", f"approval #{approval.pk} was {status}"
    if status == ApprovalStatus.EXPIRED or (status in OPEN_STATUSES and approval.is_expired(now=now)):
        return "expired", f"approval #{approval.pk} expired at {approval.expires_at:%Y-%m-%d %H:%M} UTC"
    if status == ApprovalStatus.WITHDRAWN:
        return "missing", f"approval #{approval.pk} was withdrawn and none replaces it"
    return None


def _banners(inv: Investigation, *, now: datetime) -> list[Banner]:
    incident = inv.incident
    agent = incident.source_agent
    banners = []
    if agent is None:
        banners.append(Banner(
            "source-environment", "The source environment cannot be resolved",
            f"{incident.ref} names no source agent, so nothing says which agent captured it, what it was running or "
            "where a replay's commands would go. Escalate to the owner of the capturing agent.",
        ))
    elif agent.environment_id != incident.environment_id:
        banners.append(Banner(
            "source-environment", "The source environment cannot be resolved",
            f"The source agent {agent.name} belongs to another environment than {incident.environment.slug}, where "
            f"{incident.ref} was opened. Escalate: the incident's environment is in doubt.",
        ))
    for row in inv.bundles:
        if row.resolved is None:
            banners.append(Banner(
                "unknown-spec-hash", "The artifact's spec hash maps to no pipeline version",
                f"Bundle #{row.artifact.pk} was produced under spec hash {row.artifact.spec_hash or '(none)'}, which "
                "no pipeline version in the portal has. The producing policy is unknown: an execute cannot run it. "
                "Escalate to the pipeline owners to register that version.",
            ))
            break
    dry_run = inv.latest_dry_run
    if dry_run is not None and inv.decisions[PostureAction.EXECUTE] == PostureDecision.REQUIRE_APPROVAL:
        problem = approval_problem(inv.execute_approval, now=now)
        if problem is not None:
            kind, words = problem
            banners.append(Banner(
                "approval-coverage", f"Approval coverage is {kind}",
                f"{incident.environment.slug} requires approval to execute, and for dry run #{dry_run.pk} (the "
                f"latest that succeeded) {words}. Escalate to the approvers of {incident.environment.slug} if the "
                "execute is needed.",
            ))
    threshold = settings.TRACEFLUX_ESCALATE_AUTH_FAILURES
    refused = sum(inv.failures.values())
    if agent is not None and worth_escalating(inv.failures):
        counts = ", ".join(f"{code}: {inv.failures[code]}" for code in sorted(inv.failures) if inv.failures[code])
        banners.append(Banner(
            "auth-failures", "The agent is being refused repeatedly",
            f"{agent.name} received {refused} refused answers in the last hour ({counts}); the threshold is "
            f"{threshold}. Its key may be revoked, expired or missing a scope, or it is being rate-limited. Escalate "
            "to the agent's owner.",
        ))
    if agent is not None and inv.agent_stale:
        stale_after = int(settings.TRACEFLUX_AGENT_STALE_AFTER.total_seconds())
        if agent.last_seen_at is None:
            seen = "it has never sent a heartbeat"
        else:
            seen = (f"its last heartbeat was at {agent.last_seen_at:%Y-%m-%d %H:%M:%S} UTC, more than {stale_after} s "
                    "ago")
        banners.append(Banner(
            "stale-heartbeats", "The agent's heartbeats are stale",
            f"{agent.name} is silent: {seen}. Whatever it saw since is not in the portal, and a replay's commands "
            "may not reach it. Escalate to the agent's owner.",
        ))
    return banners


def _steps(user: Any, inv: Investigation) -> list[Step]:
    incident = inv.incident
    environment = incident.environment
    slug = environment.slug
    dry_run_decision = inv.decisions[PostureAction.DRY_RUN]
    execute_decision = inv.decisions[PostureAction.EXECUTE]

    if dry_run_decision == PostureDecision.DENY:
        dry_why = f"dry runs are denied in {slug} by its posture"
    elif not selectors.may(user=user, environment=environment, action=selectors.DRY_RUN):
        dry_why = f"you may not dry-run replays in {slug}"
    elif not inv.bundles:
        dry_why = f"{incident.ref} has no uploaded incident bundle: there is nothing to replay yet"
    else:
        dry_why = ""
    dry_url = f"{reverse('replays:new')}?{urlencode({'incident': incident.url_key})}"
    steps = [Step("dry-run", "Dry run", not dry_why, dry_why, dry_url)]

    dry_run = inv.latest_dry_run
    approval = inv.execute_approval
    may_execute = selectors.may(user=user, environment=environment, action=selectors.EXECUTE)
    posture_why = {
        PostureDecision.DRY_RUN_ONLY: f"{slug} allows dry runs only: nothing can be executed there",
        PostureDecision.DENY: f"execute is denied in {slug} by its posture",
    }.get(execute_decision, "")
    no_dry_run = f"no dry run of {incident.ref} has succeeded yet: dry run first"
    no_execute = f"you may not execute replays in {slug}"
    producer = inv.resolved.get(dry_run.artifact.spec_hash) if dry_run else None
    # An execute runs the version that produced the artifact: an approval for a dry run of another can never be used.
    version_why = services.version_problem(dry_run, producer) if dry_run else ""

    if posture_why:
        ask_why = posture_why
    elif execute_decision == PostureDecision.ALLOW:
        ask_why = f"no approval is needed: execute is allowed in {slug}"
    elif dry_run is None:
        ask_why = no_dry_run
    elif not may_execute:
        ask_why = no_execute
    else:
        ask_why = services.approval_request_problem(dry_run, approval=approval, producer=producer)
    ask_url = reverse("replays:request_approval", args=[dry_run.pk]) if dry_run else ""
    steps.append(Step("request-approval", "Request execute approval", not ask_why, ask_why, ask_url, dry_run))

    if posture_why:
        run_why = posture_why
    elif dry_run is None:
        run_why = no_dry_run
    elif not may_execute:
        run_why = no_execute
    elif version_why:
        run_why = version_why
    elif execute_decision == PostureDecision.REQUIRE_APPROVAL and approval is None:
        run_why = f"{slug} requires approval to execute: request execute approval first"
    elif execute_decision == PostureDecision.REQUIRE_APPROVAL and (
        approval.status != ApprovalStatus.APPROVED or approval.is_expired()
    ):
        state = "expired" if approval.status in OPEN_STATUSES and approval.is_expired() else approval.status
        run_why = f"{slug} requires approval to execute, and approval #{approval.pk} is {state}"
    else:
        run_why = ""
    run_url = reverse("replays:execute", args=[dry_run.pk]) if dry_run else ""
    steps.append(Step("execute", "Execute", not run_why, run_why, run_url, dry_run))
    return steps


def investigation(*, user: Any, incident: Incident) -> Investigation:
    """Everything the page shows for `incident`, which the caller got from replays.selectors.incident_for."""
    now = timezone.now()
    environment = incident.environment
    agent = incident.source_agent
    decisions = {action: posture_decision(environment, action) for action in PostureAction.values}

    # 2. artifacts: the incident's bundles, and the source agent's snapshots up to the end of the window
    bundles = list(selectors.incident_bundles(incident).select_related("agent")[:BUNDLES_SHOWN])
    artifacts = visible_artifacts(user=user)
    incident_snapshots: list[Artifact] = []
    agent_snapshots: list[Artifact] = []
    if agent is not None:
        snapshots = artifacts.filter(agent=agent, kind=ArtifactKind.SNAPSHOT).order_by("-captured_at", "-pk")
        incident_snapshots = list(snapshots.filter(captured_at__lte=incident.window_end)[:SNAPSHOTS_SHOWN])
        agent_snapshots = list(snapshots[:SNAPSHOTS_SHOWN])

    # 5. replays, and the latest succeeded dry run: what an approval or execute would promote
    visible = selectors.visible_replays(user=user).filter(incident=incident)
    replays = list(visible.order_by("-created_at", "-pk")[:REPLAYS_SHOWN])
    latest_dry_run = (
        visible.filter(mode=ReplayMode.DRY_RUN, status=ReplayStatus.SUCCEEDED).order_by("-created_at", "-pk").first()
    )
    execute_approval = services.execute_approval(latest_dry_run) if latest_dry_run else None
    resolved = pipeline_versions_for(
        [a.spec_hash for a in bundles]
        + ([latest_dry_run.artifact.spec_hash] if latest_dry_run else [])
    )

    # 3. deployment: the one running when the incident began, and the environment's latest
    latest_deployment = (
        visible_deployments(user=user).filter(environment=environment).order_by("-created_at", "-pk").first()
    )
    deployments = _deployment_rows(incident, latest_deployment)

    # 4. agent health
    beats: list[tuple[datetime, str]] = []
    chart = None
    failures: dict[int, int] = {}
    if agent is not None:
        beats = list(agent.heartbeats.order_by("-received_at").values_list("received_at", "status")[:HEARTBEATS_SHOWN])
        chart = heartbeat_svg(beats, now=now, stale_after=settings.TRACEFLUX_AGENT_STALE_AFTER, agent_name=agent.name)
        failures = failure_counts(agent_id=agent.pk, minutes=FAILURE_MINUTES)

    replay_approvals = _approvals_by_subject(user, ReplayExecution, [r.pk for r in replays])
    inv = Investigation(
        incident=incident,
        decisions=decisions,
        may_operate=selectors.may(user=user, environment=incident.environment, action=selectors.OPERATE),
        bundles=[ArtifactRow(a, resolved.get(a.spec_hash)) for a in bundles],
        incident_snapshots=incident_snapshots,
        deployments=deployments,
        deployment_approvals=_approvals_by_subject(user, Deployment, [d.pk for _, d in deployments]),
        heartbeats_svg=chart,
        last_heartbeat=beats[0] if beats else None,
        agent_stale=agent.is_stale if agent is not None else False,
        failures=failures,
        agent_snapshots=agent_snapshots,
        replays=replays,
        latest_dry_run=latest_dry_run,
        execute_approval=execute_approval,
        replay_approvals=replay_approvals,
        steps=[],
        banners=[],
        transitions=next_statuses(incident),
        notes=list(incident.notes.select_related("author").order_by("-created_at", "-pk")[:NOTES_SHOWN])[::-1],
        audit_events=[],
        resolved=resolved,
    )
    inv.steps = _steps(user, inv)
    inv.banners = _banners(inv, now=now)

    # 7. the audit trail: the incident, its bundles, its replays and their approvals (latest first, bounded)
    approvals = [request for requests in replay_approvals.values() for request in requests]
    if execute_approval is not None and all(a.pk != execute_approval.pk for a in approvals):
        approvals.append(execute_approval)
    targets: list[Any] = [incident, *bundles, *replays, *approvals]
    inv.audit_events = list(events_for_targets(targets=targets)[:AUDIT_EVENTS_SHOWN])[::-1]
    return inv
