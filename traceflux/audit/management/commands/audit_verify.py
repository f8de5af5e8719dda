"""`manage.py audit_verify`: exit 0 with the count when the chain is intact, non-zero naming the first broken seq.

The chain is also checked against the latest anchor (`manage.py audit_anchor`, traceflux.audit.anchor).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from traceflux.audit.services import audit_verification_record, audit_verify


class Command(BaseCommand):
    help = "Verify the audit log's hash chain, and check it against the latest anchor."

    def handle(self, *args, **options) -> None:
        result = audit_verify()
        audit_verification_record(verification=result, source="command")  # the audit explorer shows the newest
        if not result.ok:
            raise CommandError(f"audit chain broken at seq {result.broken_seq}: {result.problem}", returncode=1)
        self.stdout.write(f"audit chain intact: {result.count} events; {result.anchor}")
