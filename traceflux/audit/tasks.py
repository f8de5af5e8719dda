"""Periodic audit tasks: thin wrappers around traceflux.audit.services."""

from __future__ import annotations

from celery import shared_task

from .services import audit_verification_record, audit_verify


@shared_task(name="traceflux.audit.tasks.verify_chain", acks_late=True)
def verify_chain(source: str = "task") -> bool:
    """Verify the whole chain and record the result; the beat schedule runs it, the explorer's button enqueues it."""
    result = audit_verify()
    audit_verification_record(verification=result, source=source)
    return result.ok
