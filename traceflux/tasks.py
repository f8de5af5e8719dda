"""Project-level Celery tasks. `ping` proves that a worker takes tasks from the broker and answers."""

from __future__ import annotations

from celery import shared_task

from traceflux.audit.anchor import audit_anchor_write


@shared_task(name="traceflux.tasks.ping")
def ping() -> str:
    return "pong"


@shared_task(name="traceflux.tasks.anchor_audit_chain")
def anchor_audit_chain() -> int | None:
    """The beat task: append the chain head to TRACEFLUX_AUDIT_ANCHOR_FILE when it moved since the latest anchor."""
    anchor = audit_anchor_write(only_if_moved=True)
    return anchor.seq if anchor else None
