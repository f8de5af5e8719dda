"""Read-side services of the audit log."""

from __future__ import annotations

from .chain import Verification, verify
from .models import AuditChainHead, AuditEvent


def audit_verify() -> Verification:
    """Verify the whole chain, streaming rows in seq order so memory stays flat at millions of events."""
    events = AuditEvent.objects.order_by("seq").iterator(chunk_size=5000)
    return verify(events, AuditChainHead.objects.filter(pk=1).first())
