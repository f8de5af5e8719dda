"""Tampering with the audit log as a DBA would, for the tests that prove the chain notices."""

from __future__ import annotations

from io import StringIO

from django.core.management import call_command
from django.db import connection


def raw_sql(sql: str, params: list | None = None) -> None:
    """Run SQL on the audit table directly: on PostgreSQL the append-only trigger must be switched off first."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(sql, params or [])
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def command_output(name: str) -> str:
    """What a management command prints, as the operator reads it (without the final line break)."""
    out = StringIO()
    call_command(name, stdout=out)
    return out.getvalue().strip()
