"""`manage.py audit_anchor`: append the chain head to the anchor file now (the beat task does it every minute)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from traceflux.audit.anchor import anchor_path, audit_anchor_write


class Command(BaseCommand):
    help = "Append the audit chain's head (seq, hash, time) to TRACEFLUX_AUDIT_ANCHOR_FILE."

    def handle(self, *args, **options) -> None:
        anchor = audit_anchor_write()
        if anchor is None:
            self.stdout.write("the audit chain is empty: nothing to anchor")
            return
        self.stdout.write(f"anchored #{anchor.seq} {anchor.hash} at {anchor.anchored_at} in {anchor_path()}")
