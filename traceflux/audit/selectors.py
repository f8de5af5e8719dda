"""Read access to the audit log, narrowed by environment slugs the caller has already resolved."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q, QuerySet

from .models import AuditEvent


def visible_audit_events(*, environment_slugs: Iterable[str], include_global: bool) -> QuerySet[AuditEvent]:
    """Events of the given environments; events with no environment only when include_global (superusers)."""
    condition = Q(environment__in=list(environment_slugs))
    if include_global:
        condition |= Q(environment="")
    return AuditEvent.objects.filter(condition).order_by("-seq")
