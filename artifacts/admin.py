"""Artifacts in the operator's console: read-only, narrowed to the user's visible environments, downloadable by staff.

Artifacts are written only by the upload API (artifacts.services); the console neither adds, changes nor deletes them.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from incidents.admin import ConsolePaginator, NoRevertMixin
from incidents.selectors import visible_environments

from .models import Artifact, artifact_storage
from .selectors import visible_artifacts

# The file name a download gets, by detected type: the stored name is the bare hash.
EXTENSIONS = {"tar.gz": ".tar.gz", "zip": ".zip", "json": ".json"}


def _link(obj: models.Model | None, label: Any = None) -> str:
    if obj is None:
        return "-"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, obj if label is None else label)


class VisibleEnvironmentFilter(admin.RelatedFieldListFilter):
    """The environment sidebar filter, offering only environments the user may see."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[Any, str]]:
        return [(env.pk, str(env)) for env in visible_environments(user=request.user)]


@admin.register(Artifact)
class ArtifactAdmin(NoRevertMixin, SimpleHistoryAdmin):
    list_display = (
        "short_sha256",
        "kind",
        "environment",
        "agent_link",
        "incident_link",
        "pipeline_version_link",
        "size",
        "captured_at",
        "uploaded_at",
        "duplicate_count",
        "download_link",
    )
    list_select_related = ("environment", "agent", "incident", "pipeline_version")
    list_filter = ("kind", ("environment", VisibleEnvironmentFilter), "detected_type")
    search_fields = ("sha256", "incident__ref", "agent__name")
    date_hierarchy = "uploaded_at"
    paginator = ConsolePaginator
    show_full_result_count = False  # the second COUNT(*), over the unfiltered table, on every changelist page
    fields = (
        "sha256",
        "download_link",
        "kind",
        "detected_type",
        "size",
        "environment",
        "agent_link",
        "incident_link",
        "captured_at",
        "window_start",
        "window_end",
        "service",
        "region",
        "pop",
        "spec_hash",
        "pipeline_version_link",
        "signal_counts",
        "validation",
        "uploaded_at",
        "duplicate_count",
    )
    readonly_fields = fields

    # --- scope: the one place the console narrows artifacts ----------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Artifact]:
        return visible_artifacts(user=request.user)

    def _in_scope(self, request: HttpRequest, obj: Artifact | None) -> bool:
        return obj is None or self.get_queryset(request).filter(pk=obj.pk).exists()

    def has_view_permission(self, request: HttpRequest, obj: Artifact | None = None) -> bool:
        return super().has_view_permission(request, obj) and self._in_scope(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Artifact | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Artifact | None = None) -> bool:
        return False

    # --- columns -----------------------------------------------------------------------------------------------

    @admin.display(description="SHA-256", ordering="sha256")
    def short_sha256(self, artifact: Artifact) -> str:
        return format_html('<code title="{}">{}…</code>', artifact.sha256, artifact.sha256[:12])

    @admin.display(description="agent", ordering="agent__name")
    def agent_link(self, artifact: Artifact) -> str:
        return _link(artifact.agent)

    @admin.display(description="incident", ordering="incident__ref")
    def incident_link(self, artifact: Artifact) -> str:
        return _link(artifact.incident)

    @admin.display(description="pipeline version", ordering="pipeline_version__label")
    def pipeline_version_link(self, artifact: Artifact) -> str:
        return _link(artifact.pipeline_version)

    @admin.display(description="file")
    def download_link(self, artifact: Artifact) -> str:
        url = reverse("admin:artifacts_artifact_download", args=[artifact.pk])
        return format_html('<a href="{}">download</a>', url)

    # --- download ----------------------------------------------------------------------------------------------

    def get_urls(self) -> list:
        download = path(
            "<int:object_id>/download/",
            self.admin_site.admin_view(self.download_view),  # staff only
            name="artifacts_artifact_download",
        )
        return [download, *super().get_urls()]

    def download_view(self, request: HttpRequest, object_id: int) -> FileResponse:
        """The stored bytes, for an artifact in an environment the user may see (else 404, as if it did not exist)."""
        artifact = self.get_queryset(request).filter(pk=object_id).first()
        if artifact is None or not self.has_view_permission(request, artifact):
            raise Http404("no such artifact")
        try:
            handle = artifact_storage().open(artifact.file.name, "rb")
        except FileNotFoundError:
            raise Http404(f"the stored file of artifact {artifact.pk} is missing") from None
        filename = artifact.sha256 + EXTENSIONS.get(artifact.detected_type, "")
        return FileResponse(handle, as_attachment=True, filename=filename, content_type="application/octet-stream")
