"""Replay executions in the operator's console: read-only, scoped to visible environments, cancelled by an action
that calls replays.services. Runs are requested on the replay pages (/replays/new/), never added here."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from incidents.admin import ConsoleAdmin, VisibleEnvironmentFilter, reason_action

from . import services
from .models import ReplayExecution


def _cancel(request: HttpRequest, execution: ReplayExecution, reason: str) -> ReplayExecution:
    return services.replay_cancel(execution=execution, actor=request.user, reason=reason)


@admin.register(ReplayExecution)
class ReplayExecutionAdmin(ConsoleAdmin):
    environment_path = "environment"
    list_display = ("__str__", "run_link", "incident", "environment", "mode", "pipeline_version", "status",
                    "triggered_by", "created_at", "parity")
    list_select_related = ("incident", "environment", "pipeline_version", "triggered_by")
    list_filter = ("mode", "status", ("environment", VisibleEnvironmentFilter), "pipeline_version")
    search_fields = ("incident__ref", "triggered_by__username", "task_id", "request_digest")
    date_hierarchy = "created_at"
    change_fields = ("run_link", "incident", "environment", "artifact", "pipeline_version", "compare_version", "mode",
                     "dry_run", "scope", "window_start", "window_end", "controls", "status", "status_changed_at",
                     "checks", "triggered_by", "task_id", "enqueue_count", "request_digest", "approval", "created_at",
                     "started_at", "finished_at", "summary", "report_sha256", "evidence_sha256", "audit_record",
                     "error")
    actions = [reason_action(name="cancel_replays", description="Cancel the selected replays", apply=_cancel,
                             reason_required=True)]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="run view")
    def run_link(self, obj: ReplayExecution) -> str:
        return format_html('<a href="{}">open run view</a>', reverse("replays:detail", args=[obj.pk]))

    @admin.display(description="parity")
    def parity(self, obj: ReplayExecution) -> str:
        score = (obj.summary or {}).get("parity_score")
        return "-" if score is None else f"{score:.2f} ({obj.summary.get('confidence')})"
