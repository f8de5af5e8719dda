"""The world an incident happens in: environments and their posture, agents, pipeline versions, deployments."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from replays.engine import window_problem
from traceflux.audit import AuditActor

# --- posture -----------------------------------------------------------------------------------------------------


class ReplayPolicy(models.TextChoices):
    DISABLED = "disabled"
    DRY_RUN_ONLY = "dry_run_only"
    ALLOWED = "allowed"


class GatePolicy(models.TextChoices):
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"
    ALLOW = "allow"


class PostureAction(models.TextChoices):
    DRY_RUN = "dry_run"
    EXECUTE = "execute"
    DEPLOY = "deploy"


class PostureDecision(models.TextChoices):
    ALLOW = "allow"
    DRY_RUN_ONLY = "dry_run_only"
    REQUIRE_APPROVAL = "require_approval"
    DENY = "deny"


def posture_problems(
    *, replay_policy: str, execute_policy: str, deploy_policy: str, required_approvals: int, approval_ttl: timedelta
) -> dict[str, str]:
    """Every reason a posture is contradictory or out of range, keyed by field. Empty when the posture is sound."""
    problems: dict[str, str] = {}
    if replay_policy not in ReplayPolicy.values:
        problems["replay_policy"] = f"{replay_policy!r} is not one of {', '.join(ReplayPolicy.values)}"
    if execute_policy not in GatePolicy.values:
        problems["execute_policy"] = f"{execute_policy!r} is not one of {', '.join(GatePolicy.values)}"
    if deploy_policy not in GatePolicy.values:
        problems["deploy_policy"] = f"{deploy_policy!r} is not one of {', '.join(GatePolicy.values)}"
    if replay_policy != ReplayPolicy.ALLOWED and execute_policy != GatePolicy.DENY:
        problems["execute_policy"] = (
            f"execute_policy must be deny when replay_policy is {replay_policy}: "
            "an environment that does not allow replays cannot allow executing them"
        )
    if required_approvals is None or required_approvals < 1:
        problems["required_approvals"] = "required_approvals must be at least 1"
    if approval_ttl is None or approval_ttl <= timedelta(0):
        problems["approval_ttl"] = "approval_ttl must be a positive duration"
    return problems


def _default_ttl() -> timedelta:
    return settings.TRACEFLUX_DEFAULT_APPROVAL_TTL


class Environment(models.Model):
    """A place agents run in (dev, staging, prod), with the posture that governs what may happen there."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    replay_policy = models.CharField(max_length=20, choices=ReplayPolicy.choices, default=ReplayPolicy.DRY_RUN_ONLY)
    execute_policy = models.CharField(max_length=20, choices=GatePolicy.choices, default=GatePolicy.DENY)
    deploy_policy = models.CharField(max_length=20, choices=GatePolicy.choices, default=GatePolicy.REQUIRE_APPROVAL)
    required_approvals = models.PositiveSmallIntegerField(default=1)
    approval_ttl = models.DurationField(default=_default_ttl)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["slug"]
        permissions = [
            ("operate_environment", "Can investigate and replay in this environment"),
            ("approve_environment", "Can approve execute-mode replays and deployments in this environment"),
            ("replay_dry_run", "Can dry-run replays in this environment"),
            ("replay_execute", "Can request approval for and execute replays in this environment"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(replay_policy="allowed") | Q(execute_policy="deny"),
                name="environment_execute_needs_replay",
                violation_error_message="execute_policy must be deny unless replay_policy is allowed",
            ),
            models.CheckConstraint(condition=Q(required_approvals__gte=1), name="environment_quorum_positive"),
        ]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        problems = posture_problems(
            replay_policy=self.replay_policy,
            execute_policy=self.execute_policy,
            deploy_policy=self.deploy_policy,
            required_approvals=self.required_approvals,
            approval_ttl=self.approval_ttl,
        )
        if problems:
            raise ValidationError(problems)

    def audit_environment(self) -> str:
        return self.slug


# --- agents ------------------------------------------------------------------------------------------------------


class AgentQuerySet(models.QuerySet):
    def stale(self, *, now: datetime | None = None) -> AgentQuerySet:
        """Agents with no heartbeat within TRACEFLUX_AGENT_STALE_AFTER, including those never seen."""
        cutoff = (now or timezone.now()) - settings.TRACEFLUX_AGENT_STALE_AFTER
        return self.filter(Q(last_seen_at__isnull=True) | Q(last_seen_at__lt=cutoff))

    def live(self, *, now: datetime | None = None) -> AgentQuerySet:
        cutoff = (now or timezone.now()) - settings.TRACEFLUX_AGENT_STALE_AFTER
        return self.filter(last_seen_at__gte=cutoff)


class Agent(models.Model):
    """A process next to the infrastructure that captures evidence; it belongs to exactly one environment."""

    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="agents")
    name = models.CharField(max_length=100, unique=True)
    hostname = models.CharField(max_length=255)
    version = models.CharField(max_length=50, blank=True)
    enabled = models.BooleanField(default=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    region = models.CharField(max_length=50, blank=True, db_index=True)
    pop = models.CharField(max_length=50, blank=True, db_index=True)
    services = models.JSONField(default=list, blank=True, help_text="Service names this agent watches.")
    created_at = models.DateTimeField(auto_now_add=True)
    # last_seen_at is telemetry, written on every heartbeat: keeping it in history would drown the real changes.
    history = HistoricalRecords(excluded_fields=["last_seen_at"])

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_stale(self) -> bool:
        """No heartbeat within TRACEFLUX_AGENT_STALE_AFTER (an agent never seen is stale too)."""
        if self.last_seen_at is None:
            return True
        return self.last_seen_at < timezone.now() - settings.TRACEFLUX_AGENT_STALE_AFTER

    def audit_actor(self) -> AuditActor:
        return AuditActor(kind="agent", id=str(self.pk), name=self.name)

    def audit_environment(self) -> str:
        return self.environment.slug


class AgentScope(models.TextChoices):
    HEARTBEATS_WRITE = "heartbeats:write"
    ARTIFACTS_WRITE = "artifacts:write"
    COMMANDS_READ = "commands:read"


class AgentKey(models.Model):
    """An API key bound to one agent. Only a public prefix and an HMAC-SHA256 of the secret are stored."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="keys")
    prefix = models.CharField(max_length=16, unique=True)
    secret_hmac = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords(excluded_fields=["last_used_at"])

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.agent})"

    def audit_environment(self) -> str:
        return self.agent.environment.slug


class EnrollmentToken(models.Model):
    """A limited-use, expiring secret an agent trades for its identity and first key in one environment.

    Stored like keys: a public prefix and an HMAC-SHA256 of the secret, never the token itself.
    """

    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="enrollment_tokens")
    prefix = models.CharField(max_length=16, unique=True)
    secret_hmac = models.CharField(max_length=64)
    uses_left = models.PositiveIntegerField()
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=Q(uses_left__gte=0), name="enrollment_token_uses_not_negative")]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.environment})"

    def audit_environment(self) -> str:
        return self.environment.slug

    @property
    def is_usable(self) -> bool:
        return self.uses_left > 0 and self.expires_at > timezone.now()


class HeartbeatStatus(models.TextChoices):
    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"


class Heartbeat(models.Model):
    """One liveness report from an agent. High-frequency telemetry: no history, no audit event."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="heartbeats")
    received_at = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=10, choices=HeartbeatStatus.choices)
    version = models.CharField(max_length=50, blank=True)
    deployment = models.ForeignKey(
        "Deployment", on_delete=models.SET_NULL, null=True, blank=True, related_name="heartbeats"
    )
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["agent", "-received_at"], name="heartbeat_agent_recent_idx")]

    def __str__(self) -> str:
        return f"{self.agent} {self.status} at {self.received_at:%Y-%m-%d %H:%M:%S}"


class CommandStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"


# delivered → pending is not a move: an unacknowledged command whose lease ran out is simply offered again.
COMMAND_TRANSITIONS: dict[str, set[str]] = {
    CommandStatus.PENDING: {CommandStatus.DELIVERED, CommandStatus.EXPIRED},
    CommandStatus.DELIVERED: {CommandStatus.SUCCEEDED, CommandStatus.FAILED, CommandStatus.EXPIRED},
}


class CommandQuerySet(models.QuerySet):
    def for_agent(self, agent: Agent) -> CommandQuerySet:
        """The one place the agent API narrows commands: an agent only ever sees its own."""
        return self.filter(agent=agent)

    def leasable(self, *, now: datetime) -> CommandQuerySet:
        """Pending commands, and delivered ones whose lease has ended; never one already past its deadline."""
        waiting = Q(status=CommandStatus.PENDING) | Q(status=CommandStatus.DELIVERED, lease_until__lte=now)
        return self.filter(waiting).exclude(deadline__lte=now)

    def overdue(self, *, now: datetime) -> CommandQuerySet:
        """Past their deadline and not being worked on: pending, or delivered with the lease ended."""
        idle = Q(status=CommandStatus.PENDING) | Q(status=CommandStatus.DELIVERED, lease_until__lte=now)
        return self.filter(idle, deadline__lte=now)


class Command(models.Model):
    """An instruction for one agent, created at most once per idempotency key and leased to it until acknowledged."""

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="commands")
    kind = models.CharField(max_length=50)
    payload = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=128, unique=True)
    status = models.CharField(max_length=20, choices=CommandStatus.choices, default=CommandStatus.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    deadline = models.DateTimeField(null=True, blank=True, help_text="After this the command expires undelivered.")
    status_changed_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_count = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    output = models.JSONField(default=dict, blank=True)
    history = HistoricalRecords()

    objects = CommandQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["agent", "status"], name="command_agent_status_idx")]

    def __str__(self) -> str:
        return f"{self.kind} → {self.agent} ({self.idempotency_key})"

    def audit_environment(self) -> str:
        return self.agent.environment.slug


# --- pipeline versions and deployments ---------------------------------------------------------------------------


class PipelineVersion(models.Model):
    """An immutable, versioned correlation policy, identified by the spec hash of its canonical JSON."""

    label = models.CharField(max_length=50, unique=True, help_text="For example v2.14.3")
    spec = models.JSONField()
    spec_hash = models.CharField(max_length=71, unique=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="children")
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.label

    def save(self, *args, **kwargs):
        if not self._state.adding:
            stored = type(self)._default_manager.filter(pk=self.pk).values("spec", "spec_hash").first()
            if stored and (stored["spec"] != self.spec or stored["spec_hash"] != self.spec_hash):
                raise ValidationError("a pipeline version's spec and spec hash cannot change; create a new version")
        super().save(*args, **kwargs)


class DeploymentStatus(models.TextChoices):
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    DENIED = "denied"
    DEPLOYING = "deploying"
    ACTIVE = "active"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    SUPERSEDED = "superseded"


DEPLOYMENT_TRANSITIONS: dict[str, set[str]] = {
    DeploymentStatus.PENDING_APPROVAL: {DeploymentStatus.APPROVED, DeploymentStatus.DENIED},
    DeploymentStatus.APPROVED: {DeploymentStatus.DEPLOYING},
    DeploymentStatus.DEPLOYING: {DeploymentStatus.ACTIVE, DeploymentStatus.FAILED},
    DeploymentStatus.ACTIVE: {DeploymentStatus.ROLLING_BACK, DeploymentStatus.SUPERSEDED},
    DeploymentStatus.ROLLING_BACK: {DeploymentStatus.ROLLED_BACK, DeploymentStatus.FAILED},
}


class Deployment(models.Model):
    """A pipeline version rolled out to an environment, targeting the agents that match its scope."""

    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="deployments")
    pipeline_version = models.ForeignKey(PipelineVersion, on_delete=models.PROTECT, related_name="deployments")
    target_regions = models.JSONField(default=list, blank=True, help_text="Empty means every region.")
    target_pops = models.JSONField(default=list, blank=True, help_text="Empty means every POP.")
    target_services = models.JSONField(default=list, blank=True, help_text="Empty means every service.")
    status = models.CharField(
        max_length=20, choices=DeploymentStatus.choices, default=DeploymentStatus.PENDING_APPROVAL
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment"], condition=Q(status="active"), name="deployment_one_active_per_environment"
            )
        ]

    def __str__(self) -> str:
        return f"{self.pipeline_version} → {self.environment} #{self.pk}"

    def audit_environment(self) -> str:
        return self.environment.slug

    def target_agents(self) -> models.QuerySet[Agent]:
        agents = Agent.objects.filter(environment_id=self.environment_id, enabled=True)
        if self.target_regions:
            agents = agents.filter(region__in=self.target_regions)
        if self.target_pops:
            agents = agents.filter(pop__in=self.target_pops)
        if self.target_services:
            wanted = set(self.target_services)
            # services is a JSON list; filtering in Python keeps this portable between SQLite and PostgreSQL.
            return agents.filter(pk__in=[a.pk for a in agents if wanted & set(a.services)])
        return agents


# --- incidents ---------------------------------------------------------------------------------------------------


class Severity(models.TextChoices):
    SEV1 = "sev1", "SEV1 (critical)"
    SEV2 = "sev2", "SEV2 (major)"
    SEV3 = "sev3", "SEV3 (minor)"
    SEV4 = "sev4", "SEV4 (low)"


class IncidentStatus(models.TextChoices):
    OPEN = "open"
    INVESTIGATING = "investigating"
    MITIGATING = "mitigating"
    MONITORING = "monitoring"
    RESOLVED = "resolved"


INCIDENT_TRANSITIONS: dict[str, set[str]] = {
    IncidentStatus.OPEN: {IncidentStatus.INVESTIGATING},
    IncidentStatus.INVESTIGATING: {IncidentStatus.MITIGATING},
    IncidentStatus.MITIGATING: {IncidentStatus.MONITORING},
    # A fix that does not hold sends the incident back to mitigation.
    IncidentStatus.MONITORING: {IncidentStatus.RESOLVED, IncidentStatus.MITIGATING},
}


class Incident(models.Model):
    """A production incident: where it happened, what was running, and the captured telemetry window."""

    ref = models.CharField(max_length=40, unique=True, help_text="For example INC-2026-0226-001")
    title = models.CharField(max_length=200)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.SEV3)
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="incidents")
    source_agent = models.ForeignKey(Agent, on_delete=models.PROTECT, null=True, blank=True, related_name="incidents")
    deployment = models.ForeignKey(
        Deployment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="incidents",
        help_text="The deployment active when the incident began.",
    )
    service = models.CharField(max_length=100, blank=True)
    region = models.CharField(max_length=50, blank=True)
    pop = models.CharField(max_length=50, blank=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    status = models.CharField(max_length=20, choices=IncidentStatus.choices, default=IncidentStatus.OPEN)
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-window_start"]
        constraints = [
            models.CheckConstraint(condition=Q(window_end__gt=models.F("window_start")), name="incident_window_order")
        ]

    def __str__(self) -> str:
        return self.ref

    def clean(self) -> None:
        if self.window_start and self.window_end:
            problem = window_problem(self.window_start, self.window_end)
            if problem:
                raise ValidationError({"window_end": problem})
        if self.source_agent_id and self.environment_id and self.source_agent.environment_id != self.environment_id:
            raise ValidationError({"source_agent": "the source agent belongs to another environment"})
        if self.deployment_id and self.environment_id and self.deployment.environment_id != self.environment_id:
            raise ValidationError({"deployment": "the deployment belongs to another environment"})

    def audit_environment(self) -> str:
        return self.environment.slug

    @property
    def url_key(self) -> str:
        """How a URL names this incident (/incidents/<key>/): its ref, or its id when the ref would be read as an id
        or could not be one path segment."""
        ref = self.ref
        if not ref or "/" in ref or ref in (".", "..") or (ref.isascii() and ref.isdigit()):
            return str(self.pk)
        return ref


class IncidentNote(models.Model):
    """One entry in an incident's journal. Append-only: notes are added, never edited."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"note on {self.incident} at {self.created_at:%Y-%m-%d %H:%M}"

    def audit_environment(self) -> str:
        return self.incident.environment.slug
