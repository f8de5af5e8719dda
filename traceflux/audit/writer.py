"""Appends events to the chain. Runs inside the caller's transaction: a rolled-back change leaves no event, and an
event the database refuses raises AuditWriteFailed, which rolls the change back with it (the audit fails closed)."""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.utils import timezone

from . import AuditWriteFailed, chain, context
from .actors import resolve_actor, resolve_environment, resolve_target
from .models import AuditChainHead, AuditEvent, Outcome


def _locked_head() -> AuditChainHead:
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        # The head row is created by a migration; a flushed test database may have lost it.
        AuditChainHead.objects.get_or_create(pk=1, defaults={"seq": 0, "hash": ""})
        head = AuditChainHead.objects.select_for_update().get(pk=1)
    return head


def write(
    *,
    action: str,
    actor: Any = None,
    target: Any = None,
    environment: Any = None,
    outcome: str = Outcome.SUCCESS,
    reason: str = "",
    data: Any = None,
) -> AuditEvent:
    if outcome not in Outcome.values:
        raise ValueError(f"unknown audit outcome {outcome!r}")
    if not action or "." not in action:
        raise ValueError(f"audit action {action!r} must be a dotted verb such as 'incident.opened'")
    actor_kind, actor_id, actor_name = resolve_actor(actor)
    target_type, target_id, target_repr = resolve_target(target)
    ctx = context.current()
    try:
        with transaction.atomic():
            head = _locked_head()
            prev_hash = head.hash or chain.GENESIS
            fields: dict[str, Any] = {
                "seq": head.seq + 1,
                "created_at": timezone.now(),
                "actor_kind": actor_kind,
                "actor_id": actor_id,
                "actor_name": actor_name,
                "action": action,
                "target_type": target_type,
                "target_id": target_id,
                "target_repr": target_repr,
                "environment": resolve_environment(environment, target),
                "outcome": outcome,
                "reason": reason or "",
                "request_id": ctx.request_id,
                "ip": ctx.ip or None,
                "data": chain.normalise_data(data),
            }
            digest = chain.event_hash(prev_hash, fields)
            event = AuditEvent(**fields, prev_hash=prev_hash, hash=digest)
            event.save()
            # A plain UPDATE is safe: we hold the row lock, so nobody else can have moved the head.
            AuditChainHead.objects.filter(pk=1).update(seq=event.seq, hash=digest)
    except (OperationalError, InterfaceError):
        raise  # the database itself (a lost connection, a timeout), not the audit log: left as it is
    except DatabaseError as exc:
        # Refused by the database (a constraint, a trigger, a permission): the caller's change must not commit.
        raise AuditWriteFailed(f"the audit event {action!r} could not be written: {exc}") from exc
    return event
