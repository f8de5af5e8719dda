"""Compare-and-swap status transitions shared by every governed model. Imports no app.

A transition is data (a dict of allowed moves) plus one conditional UPDATE: the row moves only if it is still in
the state the caller saw. The history record is written explicitly, because QuerySet.update() sends no signal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models
from django.db.models.signals import post_save
from django.utils import timezone


class TransitionError(Exception):
    """The move is not allowed from the current state, or another writer moved the row first."""

    def __init__(self, message: str, *, current: str | None = None) -> None:
        super().__init__(message)
        self.current = current


def check_allowed(allowed: Mapping[str, set[str]], old: str, new: str, *, label: str) -> None:
    if new not in allowed.get(old, set()):
        permitted = ", ".join(sorted(allowed.get(old, set()))) or "nothing (final state)"
        raise TransitionError(
            f"{label} cannot move from {old} to {new}; from {old} it may move to {permitted}", current=old
        )


def transition(
    instance: models.Model,
    *,
    allowed: Mapping[str, set[str]],
    new: str,
    actor: Any = None,
    reason: str = "",
    field: str = "status",
    changed_at_field: str | None = "status_changed_at",
    extra: Mapping[str, Any] | None = None,
) -> models.Model:
    """Move `instance` from the status it was read with to `new`, or raise TransitionError. Returns it refreshed."""
    old = getattr(instance, field)
    label = f"{instance._meta.verbose_name} {instance}"
    check_allowed(allowed, old, new, label=label)
    values: dict[str, Any] = {field: new, **(extra or {})}
    if changed_at_field:
        values[changed_at_field] = timezone.now()
    moved = type(instance)._default_manager.filter(pk=instance.pk, **{field: old}).update(**values)
    if moved != 1:
        current = type(instance)._default_manager.filter(pk=instance.pk).values_list(field, flat=True).first()
        raise TransitionError(f"{label} was moved to {current} by someone else; it is no longer {old}", current=current)
    instance.refresh_from_db()
    if hasattr(actor, "get_username"):
        instance._history_user = actor  # type: ignore[attr-defined]
    instance._change_reason = reason or f"{old} → {new}"  # type: ignore[attr-defined]
    # Lets django-simple-history (and any other listener) see the change that update() made silently.
    post_save.send(
        sender=type(instance),
        instance=instance,
        created=False,
        update_fields=set(values),
        raw=False,
        using=instance._state.db,
    )
    for attr in ("_history_user", "_change_reason"):
        instance.__dict__.pop(attr, None)
    return instance
