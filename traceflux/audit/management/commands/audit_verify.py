"""`manage.py audit_verify`: exit 0 with the count when the chain is intact, non-zero naming the first broken seq."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from traceflux.audit.services import audit_verify


class Command(BaseCommand):
    help = "Verify the audit log's hash chain."

    def handle(self, *args, **options) -> None:
        result = audit_verify()
        if not result.ok:
            raise CommandError(f"audit chain broken at seq {result.broken_seq}: {result.problem}", returncode=1)
        self.stdout.write(f"audit chain intact: {result.count} events")
