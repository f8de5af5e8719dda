"""Replay executions: a tracked run of an incident's captured window through a pinned pipeline version."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from approvals.models import ApprovalRequest
from artifacts.models import Artifact
from incidents.models import Environment, Incident, PipelineVersion


class ReplayMode(models.TextChoices):
    DRY_RUN = "dry_run", "dry run"
    EXECUTE = "execute", "execute"


class ReplayStatus(models.TextChoices):
    QUEUED = "queued"
    VALIDATING = "validating"
    RUNNING = "running"
    DISPATCHING = "dispatching"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


# rejected is also where a request that failed preflight is born (an insert, not a move). dispatching ends only
# through its commands (acknowledged or expired), never by the reaper or a cancel: commands may already be running.
REPLAY_TRANSITIONS: dict[str, set[str]] = {
    ReplayStatus.QUEUED: {ReplayStatus.VALIDATING, ReplayStatus.FAILED, ReplayStatus.CANCELLED},
    ReplayStatus.VALIDATING: {
        ReplayStatus.RUNNING,
        ReplayStatus.REJECTED,
        ReplayStatus.FAILED,
        ReplayStatus.CANCELLED,
    },
    ReplayStatus.RUNNING: {
        ReplayStatus.DISPATCHING,
        ReplayStatus.SUCCEEDED,
        ReplayStatus.FAILED,
        ReplayStatus.CANCELLED,
    },
    ReplayStatus.DISPATCHING: {ReplayStatus.SUCCEEDED, ReplayStatus.FAILED},
}

FINAL_STATUSES = (ReplayStatus.SUCCEEDED, ReplayStatus.FAILED, ReplayStatus.REJECTED, ReplayStatus.CANCELLED)
ACTIVE_STATUSES = (ReplayStatus.QUEUED, ReplayStatus.VALIDATING, ReplayStatus.RUNNING, ReplayStatus.DISPATCHING)

STAGES_DRY_RUN = ("ingest", "correlate", "aggregate", "report")
STAGES_EXECUTE = (*STAGES_DRY_RUN, "dispatch")


class ReplayExecution(models.Model):
    """One replay of an incident bundle under a pinned pipeline version: a dry run, or an execute promoting one.

    Inputs are fixed at request time and never change. `stages` is progress written as each stage happens
    ({name: {status, started_at, finished_at, counts}}); it is kept out of history, which records the status moves.
    """

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="replays")
    environment = models.ForeignKey(
        Environment, on_delete=models.PROTECT, related_name="replays",
        help_text="The incident's source environment: its posture governs the run.",
    )
    artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="replays")
    pipeline_version = models.ForeignKey(PipelineVersion, on_delete=models.PROTECT, related_name="replays")
    compare_version = models.ForeignKey(
        PipelineVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="compared_in_replays"
    )
    mode = models.CharField(max_length=10, choices=ReplayMode.choices)
    dry_run = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="promotions",
        help_text="For an execute: the dry run it promotes, whose inputs it inherits.",
    )
    scope = models.JSONField(default=dict, blank=True, help_text="Label equality filter: service, region, pop.")
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    controls = models.JSONField(default=dict, blank=True, help_text="Switches that only narrow the run.")

    status = models.CharField(max_length=20, choices=ReplayStatus.choices, default=ReplayStatus.QUEUED, db_index=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    stages = models.JSONField(default=dict, blank=True)
    checks = models.JSONField(default=list, blank=True, help_text="Preflight: [{name, ok, detail}].")

    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    task_id = models.CharField(max_length=64, blank=True)
    enqueue_count = models.PositiveSmallIntegerField(default=0)
    request_digest = models.CharField(max_length=64, blank=True)
    approval = models.ForeignKey(
        ApprovalRequest, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        help_text="The approval this execute consumed.",
    )

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    summary = models.JSONField(default=dict, blank=True)
    report_name = models.CharField(max_length=200, blank=True)
    report_sha256 = models.CharField(max_length=64, blank=True)
    evidence_name = models.CharField(max_length=200, blank=True)
    evidence_sha256 = models.CharField(max_length=64, blank=True)
    audit_record = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    history = HistoricalRecords(excluded_fields=["stages"])

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["environment", "-created_at"], name="replay_env_recent_idx"),
            models.Index(fields=["status", "status_changed_at"], name="replay_status_age_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(mode="dry_run", dry_run__isnull=True) | Q(mode="execute", dry_run__isnull=False),
                name="replay_execute_promotes_a_dry_run",
            ),
            models.CheckConstraint(
                condition=Q(window_start__isnull=True, window_end__isnull=True)
                | Q(window_end__gt=models.F("window_start")),
                name="replay_window_order",
            ),
        ]

    def __str__(self) -> str:
        return f"replay #{self.pk} ({self.get_mode_display()})"

    def audit_environment(self) -> str:
        return self.environment.slug

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def stage_names(self) -> tuple[str, ...]:
        return STAGES_EXECUTE if self.mode == ReplayMode.EXECUTE else STAGES_DRY_RUN

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    def window(self) -> tuple:
        """The selected sub-window, or the artifact's whole captured window."""
        if self.window_start and self.window_end:
            return self.window_start, self.window_end
        return self.artifact.window_start, self.artifact.window_end
