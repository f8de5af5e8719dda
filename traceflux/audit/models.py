"""The append-only, hash-chained audit log. It stores values, never foreign keys, so it depends on no app."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AuditLogImmutable(Exception):
    """Raised on any attempt to change or remove an audit event through the ORM."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):  # type: ignore[override]
        raise AuditLogImmutable("audit events cannot be updated")

    def delete(self):  # type: ignore[override]
        raise AuditLogImmutable("audit events cannot be deleted")

    def bulk_update(self, *args, **kwargs):  # type: ignore[override]
        raise AuditLogImmutable("audit events cannot be updated")

    def bulk_create(self, *args, **kwargs):  # type: ignore[override]
        raise AuditLogImmutable("audit events are appended one at a time by traceflux.audit.record()")


class ActorKind(models.TextChoices):
    USER = "user"
    AGENT = "agent"
    SYSTEM = "system"


class Outcome(models.TextChoices):
    SUCCESS = "success"
    DENIED = "denied"
    FAILED = "failed"


class AuditEvent(models.Model):
    """One recorded state change or decision. `hash` chains it to the event before it (see traceflux.audit.chain)."""

    seq = models.PositiveBigIntegerField(primary_key=True)
    created_at = models.DateTimeField(db_index=True)
    actor_kind = models.CharField(max_length=10, choices=ActorKind.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=80)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    environment = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.SUCCESS)
    reason = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        # One index per filter of the audit explorer, each ending in -seq, so that a filtered page newest first is one
        # ordered range scan (`WHERE action = … AND seq < … ORDER BY seq DESC LIMIT 51`), never a sort of every match.
        # They also serve plain equality on their first column, so action and environment need no index of their own.
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
            models.Index(fields=["environment", "-seq"], name="audit_env_seq_idx"),
            models.Index(fields=["action", "-seq"], name="audit_action_seq_idx"),
            models.Index(fields=["actor_name", "-seq"], name="audit_actor_seq_idx"),
            models.Index(fields=["target_type", "-seq"], name="audit_ttype_seq_idx"),
            models.Index(fields=["outcome", "-seq"], name="audit_outcome_seq_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.target_repr}".strip()

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditLogImmutable("audit events cannot be updated")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditLogImmutable("audit events cannot be deleted")


class AuditChainHead(models.Model):
    """The single row writers lock (SELECT ... FOR UPDATE) so that the chain never forks."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="")

    def __str__(self) -> str:
        return f"audit chain head at #{self.seq}"


class AuditVerification(models.Model):
    """One run of `audit_verify()` and what it found: the explorer shows the newest as the chain's status."""

    at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    count = models.PositiveBigIntegerField(help_text="Events verified before the first problem (all of them when ok).")
    first_bad_seq = models.PositiveBigIntegerField(null=True, blank=True)
    detail = models.TextField(blank=True)
    source = models.CharField(max_length=20, blank=True, help_text="command, task or explorer")

    class Meta:
        ordering = ["-pk"]

    def __str__(self) -> str:
        state = "intact" if self.ok else f"broken at #{self.first_bad_seq}"
        return f"audit chain {state} ({self.count} events) at {self.at:%Y-%m-%d %H:%M:%S}"
