"""Read access to the audit log, narrowed by environment slugs the caller has already resolved."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Q, QuerySet

from .models import AuditEvent


def visible_audit_events(*, environment_slugs: Iterable[str], include_global: bool) -> QuerySet[AuditEvent]:
    """Events of the given environments; events with no environment only when include_global (superusers)."""
    condition = Q(environment__in=list(environment_slugs))
    if include_global:
        condition |= Q(environment="")
    return AuditEvent.objects.filter(condition).order_by("-seq")


def events_for_targets(*, targets: Iterable[Any]) -> QuerySet[AuditEvent]:
    """Every event about any of these objects (model instances, or (label_lower, pk) pairs), newest first.

    The caller has already decided the user may see the objects; the target index serves each (type, id) pair.
    """
    condition = Q(pk__in=[])
    for target in targets:
        if isinstance(target, tuple):
            target_type, target_id = target
        else:
            target_type, target_id = target._meta.label_lower, target.pk
        condition |= Q(target_type=target_type, target_id=str(target_id))
    return AuditEvent.objects.filter(condition).order_by("-seq")
