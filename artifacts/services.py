"""Every write to artifacts: typed, keyword-only, audited in the same transaction as the change.

An upload is checked whole before anything is written: content (replays.engine), the manifest's claims against the
key, the incident it names. Then the bytes move to their content-addressed name and one transaction records the row,
the incident it opened (if any) and the audit event. When that transaction fails, the bytes are removed again unless a
committed row references them. Refusals are audited too, outside the transaction, so they survive it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F

from incidents import services as incident_services
from incidents.models import Agent, Incident
from incidents.selectors import pipeline_version_for
from replays.engine import (
    BundleInfo,
    FormatError,
    Limits,
    SnapshotInfo,
    validate_bundle,
    validate_snapshot,
    window_problem,
)
from traceflux import audit

from . import storage
from .errors import UploadRefused
from .models import Artifact, ArtifactKind
from .selectors import deployment_at

logger = logging.getLogger(__name__)


def engine_limits() -> Limits:
    """The engine's defaults, with the JSON document bound taken from settings."""
    return Limits(max_json_bytes=settings.TRACEFLUX_MAX_JSON_BODY)


# --- what an upload claims -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    """What the checks established about an upload's content, in the shape an Artifact row stores."""

    kind: str
    detected_type: str
    agent: str
    captured_at: datetime
    environment: str | None = None
    incident: dict[str, str] | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    scope: dict[str, str] = field(default_factory=dict)
    spec_hash: str = ""
    signal_counts: dict[str, int] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)


def _from_bundle(info: BundleInfo) -> Content:
    return Content(
        kind=ArtifactKind.INCIDENT_BUNDLE,
        detected_type=info.kind,
        agent=info.agent,
        environment=info.environment,
        captured_at=info.captured_at,
        incident=dict(info.incident),
        window_start=info.window_start,
        window_end=info.window_end,
        scope=dict(info.scope),
        spec_hash=info.spec_hash,
        signal_counts=dict(sorted(info.counts_by_source.items())),
        validation=_summary(info.as_dict(), detected_type=info.kind),
    )


def _summary(checked: dict[str, Any], *, detected_type: str) -> dict[str, Any]:
    """What the checks found, as stored in Artifact.validation (the engine's "kind" is the detected type here)."""
    checked = {key: value for key, value in checked.items() if key != "kind"}
    return {"result": "accepted", "detected_type": detected_type, **checked}


def _from_snapshot(info: SnapshotInfo) -> Content:
    return Content(
        kind=ArtifactKind.SNAPSHOT,
        detected_type="json",
        agent=info.agent,
        captured_at=info.captured_at,
        validation=_summary(info.as_dict(), detected_type="json"),
    )


def check_content(*, kind: str, path: Path) -> Content:
    """Judge the file by its bytes as the declared kind; the engine's refusals become 415, 413 or 400."""
    try:
        if kind == ArtifactKind.INCIDENT_BUNDLE:
            return _from_bundle(validate_bundle(path, limits=engine_limits()))
        if kind == ArtifactKind.SNAPSHOT:
            return _from_snapshot(validate_snapshot(path, limits=engine_limits()))
    except FormatError as exc:
        refusal = UploadRefused.from_format_error(exc)
        if exc.status == 415:
            refusal.detail = refusal.body["detail"] = f"kind {kind}: {exc.detail}"
        raise refusal from None
    raise UploadRefused(
        f"kind: {str(kind)[:40]!r} is not one of {', '.join(ArtifactKind.values)}", status=400, field="kind"
    )


def check_claims(*, agent: Agent, content: Content) -> None:
    """The manifest speaks for the key's own agent and environment, or the upload is denied."""
    root = "manifest" if content.kind == ArtifactKind.INCIDENT_BUNDLE else "snapshot"
    if content.environment is not None and content.environment != agent.environment.slug:
        raise UploadRefused(
            f"{root}.environment: {content.environment!r} is not the environment of this key's agent "
            f"({agent.environment.slug})",
            status=403,
            outcome="denied",
            field=f"{root}.environment",
        )
    if content.agent != agent.name:
        raise UploadRefused(
            f"{root}.agent: {content.agent!r} is not this key's agent ({agent.name})",
            status=403,
            outcome="denied",
            field=f"{root}.agent",
        )


def _incident_in_environment(*, agent: Agent, ref: str) -> Incident | None:
    """The incident with this ref in the agent's environment, None when there is none; 403 when it is elsewhere."""
    found = Incident.objects.filter(ref=ref).first()
    if found is not None and found.environment_id != agent.environment_id:
        raise UploadRefused(
            f"manifest.incident.ref: incident {ref} belongs to another environment; "
            f"an agent of {agent.environment.slug} cannot add evidence to it",
            status=403,
            outcome="denied",
            field="manifest.incident.ref",
        )
    return found


def check_incident(*, agent: Agent, content: Content) -> None:
    """Refuse early (before the bytes move) a bundle whose incident cannot be linked or opened."""
    if content.incident is None:
        return
    if _incident_in_environment(agent=agent, ref=content.incident["ref"]) is None:
        assert content.window_start is not None and content.window_end is not None
        problem = window_problem(content.window_start, content.window_end)
        if problem:
            raise UploadRefused(
                f"manifest.window: incident {content.incident['ref']} does not exist yet and cannot be opened from "
                f"this bundle: {problem}",
                status=400,
                field="manifest.window",
            )


# The incident fields incident_open names in its errors, and where they come from in the manifest.
_MANIFEST_FIELD = {
    "ref": "manifest.incident.ref",
    "title": "manifest.incident.title",
    "severity": "manifest.incident.severity",
    "window_end": "manifest.window",
    "window_start": "manifest.window",
    "service": "manifest.scope.service",
    "region": "manifest.scope.region",
    "pop": "manifest.scope.pop",
}


def _incident_for(*, agent: Agent, content: Content) -> Incident | None:
    """Link the incident the manifest names, or open it. Runs inside the upload's transaction."""
    if content.incident is None:
        return None
    ref = content.incident["ref"]
    found = _incident_in_environment(agent=agent, ref=ref)
    if found is not None:
        return found
    assert content.window_start is not None and content.window_end is not None
    try:
        with transaction.atomic():
            return incident_services.incident_open(
                ref=ref,
                title=content.incident["title"],
                severity=content.incident["severity"],
                environment=agent.environment,
                window_start=content.window_start,
                window_end=content.window_end,
                actor=agent,
                source_agent=agent,
                deployment=deployment_at(agent=agent, moment=content.captured_at),
                service=content.scope.get("service", ""),
                region=content.scope.get("region", ""),
                pop=content.scope.get("pop", ""),
            )
    except (IntegrityError, ValidationError) as exc:
        # Another upload naming the same incident opened it first: link that one.
        found = _incident_in_environment(agent=agent, ref=ref)
        if found is not None:
            return found
        if isinstance(exc, ValidationError):
            name, message = _first_problem(exc)
            where = _MANIFEST_FIELD.get(name, "manifest.incident")
            raise UploadRefused(
                f"{where}: incident {ref} cannot be opened from this bundle: {message}", status=400, field=where
            ) from None
        raise


def _first_problem(exc: ValidationError) -> tuple[str, str]:
    if hasattr(exc, "error_dict"):
        name, messages = next(iter(exc.message_dict.items()))
        return name, " ".join(messages)
    return "", " ".join(exc.messages)


# --- audit helpers -------------------------------------------------------------------------------------------------


def _audit_data(artifact: Artifact) -> dict[str, Any]:
    return {
        "kind": artifact.kind,
        "sha256": artifact.sha256,
        "size": artifact.size,
        "detected_type": artifact.detected_type,
        "incident": artifact.incident.ref if artifact.incident else None,
        "spec_hash": artifact.spec_hash,
        "pipeline_version": artifact.pipeline_version.label if artifact.pipeline_version else None,
        "captured_at": artifact.captured_at.isoformat(),
    }


def artifact_reject(
    *, agent: Agent, kind: str, refusal: UploadRefused, sha256: str = "", size: int | None = None
) -> None:
    """Record a refused upload (`artifact.rejected`, outcome failed or denied, reason = the detail). Writes nothing
    else: call it outside the transaction that was refused, so the record survives it."""
    data: dict[str, Any] = {"kind": str(kind)[:40], "status": refusal.status}
    if refusal.field:
        data["field"] = refusal.field
    if sha256:
        data["sha256"] = sha256
    if size is not None:
        data["size"] = size
    audit.record(
        actor=agent,
        action="artifact.rejected",
        target=("artifacts.artifact", "", sha256[:12] or "upload"),
        environment=agent.environment,
        outcome=refusal.outcome,
        reason=refusal.detail,
        data=data,
    )
    refusal.audited = True


@transaction.atomic
def artifact_record_duplicate(*, artifact: Artifact, agent: Agent) -> Artifact:
    """Count one more upload of bytes already stored (F() update, so concurrent repeats never lose a count)."""
    Artifact.objects.filter(pk=artifact.pk).update(duplicate_count=F("duplicate_count") + 1)
    artifact.refresh_from_db()
    audit.record(
        actor=agent,
        action="artifact.duplicate",
        target=artifact,
        data={"sha256": artifact.sha256, "kind": artifact.kind, "duplicate_count": artifact.duplicate_count},
    )
    return artifact


# --- the upload ----------------------------------------------------------------------------------------------------


def artifact_upload(*, agent: Agent, kind: str, temp_path: Path, sha256: str, size: int) -> tuple[Artifact, bool]:
    """Store an uploaded file (already on disk at `temp_path`, hashed while it streamed) and return (artifact,
    duplicate). Raises UploadRefused (audited) for anything wrong with it.

    Call it outside a transaction: the bytes are placed before the row commits and removed again if it does not.
    `temp_path` is the caller's to remove afterwards; when it was moved into place it is simply gone.
    """
    # Bytes this agent already stored as this kind were validated and claimed then: the same bytes give the same
    # verdict, so a repeat is answered without re-reading a 64 MiB archive. Another agent's repeat is judged whole.
    known = Artifact.objects.filter(
        environment_id=agent.environment_id, sha256=sha256, kind=kind, agent_id=agent.pk
    ).first()
    if known is not None:
        return artifact_record_duplicate(artifact=known, agent=agent), True
    try:
        content = check_content(kind=kind, path=temp_path)
        check_claims(agent=agent, content=content)
        existing = Artifact.objects.filter(environment_id=agent.environment_id, sha256=sha256).first()
        if existing is not None:
            return artifact_record_duplicate(artifact=existing, agent=agent), True
        check_incident(agent=agent, content=content)
    except UploadRefused as refusal:
        artifact_reject(agent=agent, kind=kind, refusal=refusal, sha256=sha256, size=size)
        raise

    name, moved = storage.place(temp_path=temp_path, sha256=sha256)
    try:
        artifact, duplicate = _artifact_insert(
            agent=agent, content=content, name=name, sha256=sha256, size=size, keep=None if moved else temp_path
        )
    except BaseException as exc:
        if moved:
            _remove_quietly(sha256=sha256)
        if isinstance(exc, UploadRefused):
            artifact_reject(agent=agent, kind=kind, refusal=exc, sha256=sha256, size=size)
        raise
    return artifact, duplicate


def _remove_quietly(*, sha256: str) -> None:
    """Undo a placement after a failed transaction, without hiding the failure that caused it."""
    try:
        storage.remove_if_unreferenced(sha256=sha256)
    except Exception:
        logger.exception("could not remove the stored bytes of failed upload %s", sha256)


@transaction.atomic
def _artifact_insert(
    *, agent: Agent, content: Content, name: str, sha256: str, size: int, keep: Path | None
) -> tuple[Artifact, bool]:
    incident = _incident_for(agent=agent, content=content)
    artifact = Artifact(
        environment=agent.environment,
        agent=agent,
        incident=incident,
        kind=content.kind,
        size=size,
        sha256=sha256,
        detected_type=content.detected_type,
        captured_at=content.captured_at,
        window_start=content.window_start,
        window_end=content.window_end,
        service=content.scope.get("service", ""),
        region=content.scope.get("region", ""),
        pop=content.scope.get("pop", ""),
        spec_hash=content.spec_hash,
        signal_counts=content.signal_counts,
        pipeline_version=pipeline_version_for(content.spec_hash),  # an unknown hash is stored unlinked
        validation=content.validation,
        file=name,
    )
    # Agents are not users: history records no user (the audit event names the agent). Set explicitly, because on
    # the agent API request.user is the key's principal, which simple-history would otherwise try to store.
    artifact._history_user = None  # type: ignore[attr-defined]
    try:
        with transaction.atomic():
            artifact.save()
    except IntegrityError:
        # The same bytes committed by a concurrent upload in this environment: one row, this one is a duplicate.
        existing = Artifact.objects.filter(environment_id=agent.environment_id, sha256=sha256).first()
        if existing is None:
            raise
        return artifact_record_duplicate(artifact=existing, agent=agent), True
    audit.record(actor=agent, action="artifact.uploaded", target=artifact, data=_audit_data(artifact))
    if keep is not None:
        # The bytes were already in place (another environment's upload, or a racing one). Should a failed upload
        # remove them before this commit lands, put them back from this upload's own temporary copy.
        transaction.on_commit(lambda: storage.ensure_placed(temp_path=keep, sha256=sha256), robust=True)
    return artifact, False
