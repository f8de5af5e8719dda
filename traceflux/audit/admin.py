"""The audit log in the console: browse and search, never add, change or delete."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.module_loading import import_string

from .models import AuditEvent
from .selectors import visible_audit_events


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("seq", "created_at", "actor_kind", "actor_name", "action", "target_repr", "environment", "outcome")
    list_filter = ("outcome", "actor_kind", "environment", "action")
    search_fields = ("action", "actor_name", "target_repr", "target_id", "reason", "request_id")
    date_hierarchy = "created_at"
    ordering = ("-seq",)
    show_full_result_count = False  # COUNT(*) over millions of rows on every page is the slow part
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        if request.user.is_superuser:
            return super().get_queryset(request)
        # The audit layer imports no app, so the app that owns environments is named in settings instead.
        slugs = import_string(settings.TRACEFLUX_AUDIT_VISIBLE_ENVIRONMENTS)(user=request.user)
        return visible_audit_events(environment_slugs=slugs, include_global=False)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False
