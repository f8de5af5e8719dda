"""Read-side services of the audit log."""

from __future__ import annotations

from dataclasses import replace

from .anchor import Anchor, anchor_path, read_latest_anchor
from .chain import Verification, verify
from .models import AuditChainHead, AuditEvent, AuditVerification


def audit_verify() -> Verification:
    """Verify the whole chain, streaming rows in seq order so memory stays flat at millions of events, then check it
    against the latest anchor written outside the database (traceflux.audit.anchor)."""
    anchor = read_latest_anchor()  # read first: it can only record a head that the walk below sees too
    events = AuditEvent.objects.order_by("seq").iterator(chunk_size=5000)
    result = verify(events, AuditChainHead.objects.filter(pk=1).first())
    return _check_anchor(result, anchor)


def _check_anchor(result: Verification, anchor: Anchor | None) -> Verification:
    """The chain alone cannot see its newest events removed along with a rewind of the head row; the anchor can."""
    if anchor is None:
        return replace(result, anchor=f"no anchor in {anchor_path()}")
    described = f"anchor #{anchor.seq} of {anchor.anchored_at}"
    if not result.ok:
        return replace(result, anchor=f"{described} not checked")
    if anchor.seq > result.count:
        problem = f"seq {result.count + 1} is missing: the {described} is beyond the log, which ends at #{result.count}"
        return replace(result, ok=False, broken_seq=result.count + 1, problem=problem, anchor=f"{described} fails")
    stored = AuditEvent.objects.filter(seq=anchor.seq).values_list("hash", flat=True).first()
    if stored != anchor.hash:
        problem = f"hash differs from the {described}: the event was rewritten or replaced"
        return replace(result, ok=False, broken_seq=anchor.seq, problem=problem, anchor=f"{described} fails")
    return replace(result, anchor=f"{described} matches")


def audit_verification_record(*, verification: Verification, source: str) -> AuditVerification:
    """Keep the result of one audit_verify() run (by the command, the beat task or the explorer's button).

    Not an audit event: a verification changes nothing and decides nothing; the explorer shows the newest as the
    chain's status.
    """
    return AuditVerification.objects.create(
        ok=verification.ok,
        count=verification.count,
        first_bad_seq=verification.broken_seq,
        # The problem when broken; otherwise what the anchor check said.
        detail=verification.problem or verification.anchor,
        source=source,
    )


def audit_verification_latest() -> AuditVerification | None:
    return AuditVerification.objects.order_by("-pk").first()
