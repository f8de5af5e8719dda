"""The append-only audit log. Services call `audit.record(...)` inside the transaction of the change they make."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .actors import SYSTEM, AuditActor

if TYPE_CHECKING:
    from .models import AuditEvent

__all__ = ["SYSTEM", "AuditActor", "AuditWriteFailed", "record"]


class AuditWriteFailed(Exception):
    """The database refused the audit event (a constraint, a trigger, a permission). It propagates through the
    caller's transaction, so the change the event records is rolled back with it: the audit fails closed. A lost
    connection is not wrapped: it stays the database's OperationalError or InterfaceError."""


def record(
    *,
    action: str,
    actor: Any = None,
    target: Any = None,
    environment: Any = None,
    outcome: str = "success",
    reason: str = "",
    data: Any = None,
) -> AuditEvent:
    """Append one event to the chain. Imported lazily so this package can be imported before apps are ready."""
    from .writer import write

    return write(
        action=action, actor=actor, target=target, environment=environment, outcome=outcome, reason=reason, data=data
    )
