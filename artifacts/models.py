"""What agents upload: incident bundles and snapshots, stored once per environment by content hash."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.files.storage import Storage, storages
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from incidents.models import Agent, Environment, Incident, PipelineVersion


def artifact_storage() -> Storage:
    """The storage artifacts live in: settings.STORAGES["artifacts"] (content-addressed, overwriting)."""
    return storages["artifacts"]


class ArtifactKind(models.TextChoices):
    INCIDENT_BUNDLE = "incident_bundle"
    SNAPSHOT = "snapshot"


class Artifact(models.Model):
    """One uploaded file and what its manifest says. Immutable once created, except the count of duplicates."""

    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="artifacts")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="artifacts")
    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, null=True, blank=True, related_name="artifacts")
    kind = models.CharField(max_length=20, choices=ArtifactKind.choices)
    size = models.PositiveBigIntegerField(help_text="Bytes, as uploaded.")
    sha256 = models.CharField(max_length=64, db_index=True, help_text="Hex SHA-256 of the uploaded bytes.")
    detected_type = models.CharField(max_length=30, help_text="What the content is (tar.gz, zip, json), by its bytes.")
    captured_at = models.DateTimeField()
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    service = models.CharField(max_length=100, blank=True)
    region = models.CharField(max_length=50, blank=True)
    pop = models.CharField(max_length=50, blank=True)
    spec_hash = models.CharField(max_length=71, blank=True, db_index=True)
    signal_counts = models.JSONField(default=dict, blank=True, help_text="Signal lines by source.")
    pipeline_version = models.ForeignKey(
        PipelineVersion,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="artifacts",
        help_text="The version whose spec hash the manifest names, when the server knows it.",
    )
    validation = models.JSONField(default=dict, blank=True, help_text="What the content checks found.")
    file = models.FileField(storage=artifact_storage, max_length=200)
    uploaded_at = models.DateTimeField(default=timezone.now, db_index=True)
    duplicate_count = models.PositiveIntegerField(default=0, help_text="Later uploads of the same bytes.")
    # duplicate_count is a counter bumped with F() on every repeat upload: history would only record noise.
    history = HistoricalRecords(excluded_fields=["duplicate_count"])

    class Meta:
        ordering = ["-uploaded_at"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "sha256"], name="artifact_one_copy_per_environment"),
            models.CheckConstraint(
                condition=Q(window_start__isnull=True) | Q(window_end__gt=models.F("window_start")),
                name="artifact_window_order",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.sha256[:12]}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValidationError("an artifact cannot change after upload; only its duplicate count moves")
        super().save(*args, **kwargs)

    def audit_environment(self) -> str:
        return self.environment.slug
