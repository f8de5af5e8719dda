"""Demo data for the embedded mode: a small, believable world around one prod incident.

Two steps, so tests and later issues can extend either one:
- `build_plan(seed=...)` is pure: it generates every value (specs, agents, heartbeats, the incident) from a
  `random.Random(seed)` and fixed anchors, touching no database. The same seed always gives the same plan.
- `apply_plan(plan)` writes whatever part of the plan is missing, through the services, so the audit log and the
  history read like real use. Rows are found by their natural key (slug, name, label, ref) and never recreated or
  reset: running it again changes nothing, and a demo user's changed password survives.

Times derive from ANCHOR rather than now(): a second run must produce the same values, and the incident ref names
the anchor's date. Timestamps the services stamp themselves (created_at, status_changed_at, audit times) are the
time of seeding; that is what a real operator's clicks would have left too.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group, Permission
from django.db import transaction
from guardian.shortcuts import assign_perm

from replays.engine.demo_policies import baseline_policy, tightened_policy

from . import services
from .models import (
    Agent,
    Deployment,
    DeploymentStatus,
    Environment,
    GatePolicy,
    Heartbeat,
    HeartbeatStatus,
    Incident,
    IncidentStatus,
    PipelineVersion,
    ReplayPolicy,
    Severity,
)
from .selectors import APPROVE, OPERATE, REPLAY_DRY_RUN, REPLAY_EXECUTE, VIEW

DEFAULT_SEED = 20260226
# The moment the edge-gw burst starts; the incident window and every heartbeat are placed relative to it.
ANCHOR = datetime(2026, 2, 26, 14, 0, tzinfo=UTC)
DEFAULT_HEARTBEAT_MINUTES = 120
MAX_HEARTBEAT_MINUTES = 24 * 60
# Heartbeat history ends this long after the anchor, so even a shortened history still covers the incident window.
HEARTBEAT_TAIL = timedelta(minutes=10)

BASELINE_LABEL = "v2.14.3"
CANDIDATE_LABEL = "v2.15.0"
INCIDENT_REF = "INC-2026-0226-001"


# --- the plan: plain values, no database ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    role: str
    superuser: bool = False
    groups: tuple[str, ...] = ()
    # environment slug → object permissions granted on it (guardian).
    grants: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class DemoEnvironment:
    slug: str
    name: str
    replay_policy: str
    execute_policy: str
    deploy_policy: str
    required_approvals: int
    approval_ttl: timedelta


@dataclass(frozen=True)
class Disturbance:
    """A stretch of minutes, relative to ANCHOR, during which an agent reports worse than ok."""

    start_min: int
    end_min: int
    status: str


@dataclass(frozen=True)
class DemoAgent:
    environment: str
    name: str
    hostname: str
    version: str
    region: str
    pop: str
    services: tuple[str, ...]
    disturbances: tuple[Disturbance, ...] = ()


@dataclass(frozen=True)
class DemoHeartbeat:
    received_at: datetime
    status: str
    details: dict[str, Any]


@dataclass(frozen=True)
class DemoPipelineVersion:
    label: str
    spec: dict[str, Any]
    parent: str | None
    notes: str


@dataclass(frozen=True)
class DemoIncident:
    ref: str
    title: str
    severity: str
    environment: str
    source_agent: str
    service: str
    region: str
    pop: str
    window_start: datetime
    window_end: datetime
    opened_by: str
    investigating_reason: str
    notes: tuple[str, ...]


@dataclass(frozen=True)
class DemoPlan:
    seed: int
    users: tuple[DemoUser, ...]
    group_permissions: dict[str, tuple[str, ...]]
    environments: tuple[DemoEnvironment, ...]
    agents: tuple[DemoAgent, ...]
    heartbeats: dict[str, tuple[DemoHeartbeat, ...]]
    pipeline_versions: tuple[DemoPipelineVersion, ...]
    baseline: str
    incident: DemoIncident


def baseline_spec() -> dict[str, Any]:
    """The correlation policy in production (traceflux.policy/v1, owned by the engine: docs/policy.md)."""
    return baseline_policy()


def tighter_spec() -> dict[str, Any]:
    """The baseline plus a BGP + DNS join per POP: a session flap and the DNS errors it causes page once.

    Only the join changes, so a replay of the incident window against both versions isolates that change.
    """
    return tightened_policy()


# Model-level permissions open the admin pages; what rows a user sees there is narrowed per environment by the
# selectors. view_environment is deliberately not granted by group: visible_environments() accepts global
# permissions, so a global view_environment would show every environment, present and future.
_VIEWABLE_MODELS = ("agent", "agentkey", "command", "deployment", "heartbeat", "incident", "incidentnote",
                    "pipelineversion")
_VIEW_ALL = tuple(f"view_{model}" for model in _VIEWABLE_MODELS)
GROUP_PERMISSIONS: dict[str, tuple[str, ...]] = {
    # Notes are append-only (see IncidentNote), so operators may add them but not change them.
    "operators": (*_VIEW_ALL, "add_incident", "change_incident", "add_incidentnote", "add_deployment",
                  "change_deployment"),
    "approvers": (*_VIEW_ALL, "change_deployment"),
}

_ALL_ENVS = ("dev", "staging", "prod")


def _users() -> tuple[DemoUser, ...]:
    operate = tuple((slug, (VIEW, OPERATE, REPLAY_DRY_RUN, REPLAY_EXECUTE)) for slug in _ALL_ENVS)
    approve = tuple((slug, (VIEW, APPROVE) if slug in ("staging", "prod") else (VIEW,)) for slug in _ALL_ENVS)
    return (
        DemoUser("admin", "demo-admin-pass", "superuser", superuser=True),
        DemoUser("operator", "demo-operator-pass", "operator: operate and replay in dev, staging, prod",
                 groups=("operators",), grants=operate),
        DemoUser("approver1", "demo-approver1-pass", "approver: approve in staging, prod",
                 groups=("approvers",), grants=approve),
        DemoUser("approver2", "demo-approver2-pass", "approver: approve in staging, prod",
                 groups=("approvers",), grants=approve),
    )


def _environments() -> tuple[DemoEnvironment, ...]:
    return (
        DemoEnvironment("dev", "Development", ReplayPolicy.ALLOWED, GatePolicy.ALLOW, GatePolicy.ALLOW, 1,
                        timedelta(hours=24)),
        DemoEnvironment("staging", "Staging", ReplayPolicy.ALLOWED, GatePolicy.REQUIRE_APPROVAL,
                        GatePolicy.REQUIRE_APPROVAL, 1, timedelta(hours=4)),
        # Replays are allowed in prod so dry runs are; executing one or deploying needs two approvers.
        DemoEnvironment("prod", "Production", ReplayPolicy.ALLOWED, GatePolicy.REQUIRE_APPROVAL,
                        GatePolicy.REQUIRE_APPROVAL, 2, timedelta(hours=2)),
    )


def _agent(environment: str, name: str, version: str, region: str, pop: str, services_: tuple[str, ...],
           *disturbances: Disturbance) -> DemoAgent:
    return DemoAgent(environment=environment, name=name, hostname=f"{name}.{environment}.traceflux.internal",
                     version=version, region=region, pop=pop, services=services_, disturbances=disturbances)


SOURCE_AGENT = "edge-use1-pop12-a"


def _agents() -> tuple[DemoAgent, ...]:
    return (
        _agent("dev", "dev-use1-lab01-a", "1.5.0-rc.2", "us-east-1", "LAB-01", ("auth", "edge-gw", "ingest")),
        _agent("staging", "stg-use1-pop12-a", "1.5.0-rc.1", "us-east-1", "POP-12", ("auth", "edge-gw")),
        _agent("staging", "stg-euw1-pop31-a", "1.5.0-rc.1", "eu-west-1", "POP-31", ("ingest",)),
        # The incident's source: degraded just before the window, failing through it, recovering after.
        _agent("prod", SOURCE_AGENT, "1.4.2", "us-east-1", "POP-12", ("auth", "edge-gw"),
               Disturbance(-2, 0, HeartbeatStatus.DEGRADED), Disturbance(0, 4, HeartbeatStatus.FAILING),
               Disturbance(4, 8, HeartbeatStatus.DEGRADED)),
        # Its neighbour in the same POP takes the shifted load and degrades, but keeps serving.
        _agent("prod", "edge-use1-pop12-b", "1.4.2", "us-east-1", "POP-12", ("edge-gw",),
               Disturbance(1, 5, HeartbeatStatus.DEGRADED)),
        _agent("prod", "edge-euw1-pop31-a", "1.4.2", "eu-west-1", "POP-31", ("edge-gw", "ingest")),
        _agent("prod", "core-apse1-pop44-a", "1.4.1", "ap-southeast-1", "POP-44", ("auth", "ingest")),
    )


def _heartbeat_details(rng: random.Random, status: str) -> dict[str, Any]:
    if status == HeartbeatStatus.FAILING:
        error_rate, p99 = rng.uniform(0.12, 0.25), rng.randint(900, 2500)
    elif status == HeartbeatStatus.DEGRADED:
        error_rate, p99 = rng.uniform(0.01, 0.05), rng.randint(180, 600)
    else:
        error_rate, p99 = rng.uniform(0.0, 0.004), rng.randint(35, 90)
    return {
        "error_rate": round(error_rate, 4),
        "p99_ms": p99,
        "cpu": round(rng.uniform(0.15, 0.45 if status == HeartbeatStatus.OK else 0.9), 2),
        "queue_depth": rng.randint(0, 8) if status == HeartbeatStatus.OK else rng.randint(20, 400),
    }


def _heartbeats(rng: random.Random, agent: DemoAgent, minutes: int) -> tuple[DemoHeartbeat, ...]:
    """One beat a minute, a few seconds of jitter, ending HEARTBEAT_TAIL after the anchor."""
    start = ANCHOR + HEARTBEAT_TAIL - timedelta(minutes=minutes)
    beats = []
    for i in range(minutes):
        slot = start + timedelta(minutes=i)
        offset_min = (slot - ANCHOR) // timedelta(minutes=1)
        status = next((d.status for d in agent.disturbances if d.start_min <= offset_min < d.end_min), None)
        # Outside a disturbance, a rare blip keeps the charts honest: real fleets are never all green.
        blip = rng.random() < 0.01
        if status is None:
            status = HeartbeatStatus.DEGRADED if blip else HeartbeatStatus.OK
        beats.append(DemoHeartbeat(received_at=slot + timedelta(seconds=rng.randint(0, 4)), status=status,
                                   details=_heartbeat_details(rng, status)))
    return tuple(beats)


def build_plan(*, seed: int = DEFAULT_SEED, heartbeat_minutes: int = DEFAULT_HEARTBEAT_MINUTES) -> DemoPlan:
    """Every value the demo will hold. Pure; the RNG is consumed in a fixed order, whatever the database holds."""
    if not 1 <= heartbeat_minutes <= MAX_HEARTBEAT_MINUTES:
        raise ValueError(f"heartbeat_minutes must be between 1 and {MAX_HEARTBEAT_MINUTES}, not {heartbeat_minutes}")
    rng = random.Random(seed)
    agents = _agents()
    baseline = baseline_spec()
    window_start = ANCHOR
    return DemoPlan(
        seed=seed,
        users=_users(),
        group_permissions=GROUP_PERMISSIONS,
        environments=_environments(),
        agents=agents,
        heartbeats={agent.name: _heartbeats(rng, agent, heartbeat_minutes) for agent in agents},
        pipeline_versions=(
            DemoPipelineVersion(BASELINE_LABEL, baseline, None, "Baseline correlation policy."),
            DemoPipelineVersion(CANDIDATE_LABEL, tighter_spec(), BASELINE_LABEL,
                                "Tightened correlation: BGP and DNS signals at one POP within 60 s are one episode."),
        ),
        baseline=BASELINE_LABEL,
        incident=DemoIncident(
            ref=INCIDENT_REF,
            title="edge-gw 5xx burst at POP-12",
            severity=Severity.SEV2,
            environment="prod",
            source_agent=SOURCE_AGENT,
            service="edge-gw",
            region="us-east-1",
            pop="POP-12",
            window_start=window_start,
            window_end=window_start + timedelta(minutes=4),
            opened_by="operator",
            investigating_reason="on-call acknowledged the page; correlating POP-12 heartbeats with the 5xx burst",
            notes=(
                "Paged at 14:01 UTC by the edge-gw 5xx alert. edge-use1-pop12-a reports failing with over 10% errors; "
                "edge-use1-pop12-b is degraded but serving. Captured the 14:00-14:04 UTC window.",
                f"Under {BASELINE_LABEL} the BGP session flap and the DNS SERVFAILs at POP-12 paged as separate "
                f"incidents. {CANDIDATE_LABEL} joins them per POP; a dry-run replay of this window against it "
                "should tell whether one page would have been enough.",
            ),
        ),
    )


# --- applying the plan ----------------------------------------------------------------------------------------------


@dataclass
class SeedReport:
    """What apply_plan found and made; `created` counts only rows this run wrote."""

    plan: DemoPlan
    created: Counter[str] = field(default_factory=Counter)
    incident: Incident | None = None
    deployments: dict[str, Deployment] = field(default_factory=dict)


def _ensure_users(plan: DemoPlan, report: SeedReport) -> dict[str, AbstractUser]:
    user_model = get_user_model()
    users: dict[str, AbstractUser] = {}
    for spec in plan.users:
        user = user_model.objects.filter(username=spec.username).first()
        if user is None:
            make = user_model.objects.create_superuser if spec.superuser else user_model.objects.create_user
            # The password is set only here: re-running the seed must not undo a password someone changed.
            user = make(username=spec.username, email=f"{spec.username}@example.test", password=spec.password,
                        is_staff=True)
            report.created["users"] += 1
        users[spec.username] = user
    return users


def _ensure_groups(plan: DemoPlan, users: dict[str, AbstractUser]) -> None:
    for name, codenames in plan.group_permissions.items():
        group, _ = Group.objects.get_or_create(name=name)
        permissions = Permission.objects.filter(content_type__app_label="incidents", codename__in=codenames)
        missing = set(codenames) - {p.codename for p in permissions}
        if missing:
            raise LookupError(f"permissions {sorted(missing)} do not exist; has `manage.py migrate` run?")
        # add(), not set(): permissions an admin gave the group since the last seed are kept.
        group.permissions.add(*permissions)
    for spec in plan.users:
        for name in spec.groups:
            users[spec.username].groups.add(Group.objects.get(name=name))


def _ensure_environments(plan: DemoPlan, admin: AbstractUser, report: SeedReport) -> dict[str, Environment]:
    environments: dict[str, Environment] = {}
    for spec in plan.environments:
        environment = Environment.objects.filter(slug=spec.slug).first()
        if environment is None:
            environment = services.environment_create(
                slug=spec.slug, name=spec.name, actor=admin, replay_policy=spec.replay_policy,
                execute_policy=spec.execute_policy, deploy_policy=spec.deploy_policy,
                required_approvals=spec.required_approvals, approval_ttl=spec.approval_ttl,
            )
            report.created["environments"] += 1
        environments[spec.slug] = environment
    return environments


def _grant_environments(plan: DemoPlan, users: dict[str, AbstractUser], environments: dict[str, Environment]) -> None:
    for spec in plan.users:
        for slug, perms in spec.grants:
            for perm in perms:
                # assign_perm is get-or-create, so a re-run adds nothing.
                assign_perm(perm, users[spec.username], environments[slug])


def _ensure_agents(plan: DemoPlan, admin: AbstractUser, environments: dict[str, Environment],
                   report: SeedReport) -> dict[str, Agent]:
    agents: dict[str, Agent] = {}
    for spec in plan.agents:
        agent = Agent.objects.filter(name=spec.name).first()
        if agent is None:
            agent = services.agent_create(
                environment=environments[spec.environment], name=spec.name, hostname=spec.hostname, actor=admin,
                version=spec.version, region=spec.region, pop=spec.pop, services=spec.services,
            )
            report.created["agents"] += 1
        agents[spec.name] = agent
    return agents


def _ensure_pipeline_versions(plan: DemoPlan, admin: AbstractUser, report: SeedReport) -> dict[str, PipelineVersion]:
    versions: dict[str, PipelineVersion] = {}
    for spec in plan.pipeline_versions:  # parents come first in the plan
        version = PipelineVersion.objects.filter(label=spec.label).first()
        if version is None:
            version = services.pipeline_version_create(
                label=spec.label, spec=spec.spec, actor=admin,
                parent=versions[spec.parent] if spec.parent else None, notes=spec.notes,
            )
            report.created["pipeline versions"] += 1
        versions[spec.label] = version
    return versions


def _ensure_baseline_deployments(
    plan: DemoPlan, admin: AbstractUser, environments: dict[str, Environment], baseline: PipelineVersion,
    report: SeedReport,
) -> dict[str, Deployment]:
    deployments: dict[str, Deployment] = {}
    for slug, environment in environments.items():
        # The natural key of a demo deployment is (environment, version); whatever became of it since is kept.
        existing = Deployment.objects.filter(environment=environment, pipeline_version=baseline)
        deployment = existing.order_by("pk").first()
        if deployment is None:
            deployment = services.deployment_request(
                environment=environment, pipeline_version=baseline, actor=admin,
                reason=f"roll out the baseline correlation policy {baseline.label} to {slug}",
            )
            steps: list[tuple[str, str]] = []
            if deployment.status == DeploymentStatus.PENDING_APPROVAL:
                # Approval requests with a quorum arrive in a later issue; until then the admin approves directly.
                steps.append((DeploymentStatus.APPROVED, "approved by admin while seeding the demo"))
            targets = deployment.target_agents().count()
            steps += [
                (DeploymentStatus.DEPLOYING, f"rolling out to {targets} agents"),
                (DeploymentStatus.ACTIVE, f"all {targets} target agents acknowledged {baseline.label}"),
            ]
            for to, reason in steps:
                services.deployment_transition(deployment=deployment, to=to, actor=admin, reason=reason)
            report.created["deployments"] += 1
        deployments[slug] = deployment
    return deployments


def _ensure_heartbeats(plan: DemoPlan, agents: dict[str, Agent], deployments: dict[str, Deployment],
                       report: SeedReport) -> None:
    for spec in plan.agents:
        agent = agents[spec.name]
        beats = plan.heartbeats[spec.name]
        if agent.heartbeats.exists() or not beats:
            continue
        deployment = deployments[spec.environment]
        Heartbeat.objects.bulk_create(
            Heartbeat(agent=agent, received_at=beat.received_at, status=beat.status, version=spec.version,
                      deployment=deployment, details=beat.details)
            for beat in beats
        )
        # Telemetry, not a change anyone made: update() keeps it out of the history on purpose.
        last_seen = max(beat.received_at for beat in beats)
        Agent.objects.filter(pk=agent.pk).update(last_seen_at=last_seen)
        agent.last_seen_at = last_seen
        report.created["heartbeats"] += len(beats)


def _ensure_incident(plan: DemoPlan, users: dict[str, AbstractUser], environments: dict[str, Environment],
                     agents: dict[str, Agent], deployments: dict[str, Deployment], report: SeedReport) -> Incident:
    spec = plan.incident
    actor = users[spec.opened_by]
    incident = Incident.objects.filter(ref=spec.ref).first()
    if incident is None:
        incident = services.incident_open(
            ref=spec.ref, title=spec.title, environment=environments[spec.environment],
            window_start=spec.window_start, window_end=spec.window_end, actor=actor, severity=spec.severity,
            source_agent=agents[spec.source_agent], deployment=deployments[spec.environment],
            service=spec.service, region=spec.region, pop=spec.pop,
        )
        report.created["incidents"] += 1
    # Each step converges on its own, so a plan extended with a note later adds just that note to an old demo.
    if incident.status == IncidentStatus.OPEN:
        services.incident_transition(incident=incident, to=IncidentStatus.INVESTIGATING, actor=actor,
                                     reason=spec.investigating_reason)
    for body in spec.notes:
        if not incident.notes.filter(body=body).exists():
            services.incident_note_add(incident=incident, author=actor, body=body)
            report.created["notes"] += 1
    return incident


@transaction.atomic
def apply_plan(plan: DemoPlan) -> SeedReport:
    """Write what is missing, in one transaction: a failure part-way leaves the database as it was."""
    report = SeedReport(plan=plan)
    users = _ensure_users(plan, report)
    admin = next(users[u.username] for u in plan.users if u.superuser)
    _ensure_groups(plan, users)
    environments = _ensure_environments(plan, admin, report)
    _grant_environments(plan, users, environments)
    agents = _ensure_agents(plan, admin, environments, report)
    versions = _ensure_pipeline_versions(plan, admin, report)
    report.deployments = _ensure_baseline_deployments(plan, admin, environments, versions[plan.baseline], report)
    _ensure_heartbeats(plan, agents, report.deployments, report)
    report.incident = _ensure_incident(plan, users, environments, agents, report.deployments, report)
    return report


def seed_demo(*, seed: int = DEFAULT_SEED, heartbeat_minutes: int = DEFAULT_HEARTBEAT_MINUTES) -> SeedReport:
    return apply_plan(build_plan(seed=seed, heartbeat_minutes=heartbeat_minutes))
