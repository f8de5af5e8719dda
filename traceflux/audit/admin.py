"""The audit log in the console: browse and search, never add, change or delete.

At millions of events nothing on the changelist may read the whole table: the paginator never runs COUNT(*) over it,
the environment filter offers the environments from settings instead of SELECT DISTINCT over the log, dates are
filtered by ranges instead of date_hierarchy's DISTINCT over every year and month, and filter facets are off.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Max, QuerySet
from django.http import HttpRequest
from django.utils.module_loading import import_string

from .models import AuditEvent
from .selectors import visible_audit_events


def _visible_environment_slugs(user: Any) -> list[str]:
    # The audit layer imports no app, so the app that owns environments is named in settings instead.
    return list(import_string(settings.TRACEFLUX_AUDIT_VISIBLE_ENVIRONMENTS)(user=user))


class AuditEventPaginator(Paginator):
    """Counts without COUNT(*) over the log.

    The whole log: `seq` is gap-free from 1 (the chain), so its highest value is the count, read from the end of the
    primary key. A filtered list: counted up to CAP + 1 rows only (`SELECT COUNT(*) FROM (… LIMIT 10001)`), so the
    cost is bounded by the cap whatever the filter matches; beyond it the page says "more than 10,000".
    """

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        events = self.object_list.order_by()
        if not events.query.where:
            return events.aggregate(last=Max("seq"))["last"] or 0
        return events[: self.CAP + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > self.CAP


class EnvironmentFilter(admin.SimpleListFilter):
    """The environments the user can see, from the environments table: never a DISTINCT over the log."""

    title = "environment"
    parameter_name = "environment"
    GLOBAL = "-"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        choices = [(slug, slug) for slug in _visible_environment_slugs(request.user)]
        if request.user.is_superuser:
            choices.append((self.GLOBAL, "none (global events)"))
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(environment="" if value == self.GLOBAL else value)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("seq", "created_at", "actor_kind", "actor_name", "action", "target_repr", "environment", "outcome")
    list_filter = ("outcome", "actor_kind", EnvironmentFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("action", "actor_name", "target_repr", "target_id", "reason", "request_id")
    ordering = ("-seq",)
    paginator = AuditEventPaginator
    show_full_result_count = False  # COUNT(*) over millions of rows on every page is the slow part
    show_facets = admin.ShowFacets.NEVER  # facets count every filter choice over the whole log
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        if request.user.is_superuser:
            return super().get_queryset(request)
        slugs = _visible_environment_slugs(request.user)
        return visible_audit_events(environment_slugs=slugs, include_global=False)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

