"""POST /api/v1/agent/artifacts/: what is stored, what is refused and why, and that a refusal leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest

from artifacts.models import Artifact
from artifacts.uploads import FORM_ALLOWANCE, ArtifactUploadHandler
from incidents import services as incident_services
from incidents.models import Deployment, Incident
from replays.engine.samples import sample_spec
from tests.artifacts.conftest import (
    AGENT_NAME,
    assert_nothing_stored,
    bundle_bytes,
    content_path,
    files_under,
    multipart_body,
    post_raw,
    post_upload,
    snapshot_bytes,
)
from tests.factories import (
    AgentFactory,
    DeploymentFactory,
    EnvironmentFactory,
    HeartbeatFactory,
    IncidentFactory,
    PipelineVersionFactory,
)
from traceflux.audit.models import AuditEvent

pytestmark = pytest.mark.django_db

CAPTURED_AT = datetime(2026, 2, 26, 14, 4, 30, tzinfo=UTC)  # the sample bundle's: 30 s after its 4-minute window


def rejection() -> AuditEvent:
    return AuditEvent.objects.get(action="artifact.rejected")


# --- stored --------------------------------------------------------------------------------------------------------


def test_it_stores_a_new_tar_gz_bundle_and_opens_its_incident(client, agent, agent_key, media_root):
    content = bundle_bytes(fmt="tar.gz")
    digest = hashlib.sha256(content).hexdigest()

    response = post_upload(client, agent_key, content)

    assert response.status_code == 201, response.json()
    body = response.json()
    artifact = Artifact.objects.get()
    assert body == {
        "id": artifact.pk,
        "kind": "incident_bundle",
        "sha256": digest,
        "size": len(content),
        "duplicate": False,
        "incident": "INC-2026-0226-001",
        "captured_at": "2026-02-26T14:04:30Z",
        "spec_hash": artifact.spec_hash,
        "pipeline_version": None,
        "validation": artifact.validation,
    }
    artifact.refresh_from_db()
    assert (artifact.environment, artifact.agent, artifact.kind) == (agent.environment, agent, "incident_bundle")
    assert (artifact.sha256, artifact.size, artifact.detected_type) == (digest, len(content), "tar.gz")
    assert artifact.captured_at == CAPTURED_AT
    assert artifact.window_start == datetime(2026, 2, 26, 14, 0, tzinfo=UTC)
    assert artifact.window_end == datetime(2026, 2, 26, 14, 4, tzinfo=UTC)
    assert (artifact.service, artifact.region, artifact.pop) == ("edge-gw", "us-east-1", "POP-12")
    assert artifact.spec_hash.startswith("sha256:")
    assert sum(artifact.signal_counts.values()) == 60
    assert artifact.validation["result"] == "accepted"
    assert artifact.validation["signal_count"] == 60
    assert artifact.duplicate_count == 0
    assert artifact.file.name == f"artifacts/sha256/{digest[:2]}/{digest[2:4]}/{digest}"
    assert content_path(media_root, digest).read_bytes() == content
    assert files_under(media_root) == [artifact.file.name]  # the temporary file is gone

    incident = Incident.objects.get()
    assert artifact.incident == incident
    assert (incident.ref, incident.title, incident.severity) == (
        "INC-2026-0226-001", "edge-gw 5xx burst at POP-12", "sev2",
    )
    assert (incident.environment, incident.source_agent) == (agent.environment, agent)
    assert (incident.service, incident.region, incident.pop) == ("edge-gw", "us-east-1", "POP-12")
    assert (incident.window_start, incident.window_end) == (artifact.window_start, artifact.window_end)

    uploaded = AuditEvent.objects.get(action="artifact.uploaded")
    assert (uploaded.actor_kind, uploaded.actor_name, uploaded.environment) == ("agent", AGENT_NAME, "staging")
    assert uploaded.target_id == str(artifact.pk)
    assert uploaded.data["sha256"] == digest
    assert AuditEvent.objects.filter(action="incident.opened", target_id=str(incident.pk)).exists()
    assert artifact.history.count() == 1


def test_it_stores_a_zip_bundle_and_links_the_incident_that_exists(client, agent, agent_key, media_root):
    incident = IncidentFactory(ref="INC-2026-0226-001", environment=agent.environment, source_agent=agent)
    content = bundle_bytes(fmt="zip")

    response = post_upload(client, agent_key, content, filename="bundle.zip")

    assert response.status_code == 201, response.json()
    artifact = Artifact.objects.get()
    assert artifact.detected_type == "zip"
    assert artifact.incident == incident
    assert Incident.objects.count() == 1
    assert content_path(media_root, artifact.sha256).read_bytes() == content


def test_it_judges_the_type_by_the_bytes_not_the_name_or_content_type(client, agent_key):
    response = post_upload(client, agent_key, bundle_bytes(), filename="notes.json", content_type="application/json")

    assert response.status_code == 201, response.json()
    assert Artifact.objects.get().detected_type == "tar.gz"


def test_it_names_the_pipeline_version_with_the_manifests_spec_hash(client, agent_key):
    version = PipelineVersionFactory(label="v2.14.3", spec=sample_spec())

    response = post_upload(client, agent_key, bundle_bytes())

    assert response.status_code == 201
    assert response.json()["pipeline_version"] == "v2.14.3"
    assert Artifact.objects.get().pipeline_version == version


def test_it_opens_the_incident_on_the_deployment_the_agent_reported_before_capture(client, agent, agent_key):
    reported = DeploymentFactory(environment=agent.environment, status="superseded")
    later = DeploymentFactory(environment=agent.environment, status="active")
    HeartbeatFactory(agent=agent, received_at=CAPTURED_AT - timedelta(minutes=3), deployment=reported)
    HeartbeatFactory(agent=agent, received_at=CAPTURED_AT + timedelta(minutes=1), deployment=later)

    assert post_upload(client, agent_key, bundle_bytes()).status_code == 201

    assert Incident.objects.get().deployment == reported


def test_it_falls_back_to_the_deployment_active_in_the_environment_at_capture(client, agent, agent_key):
    then = DeploymentFactory(environment=agent.environment, status="active")
    Deployment.history.filter(id=then.pk).update(history_date=CAPTURED_AT - timedelta(days=1))
    incident_services.deployment_transition(deployment=then, to="superseded", actor=None, reason="replaced")
    now = DeploymentFactory(environment=agent.environment, status="active")

    assert post_upload(client, agent_key, bundle_bytes()).status_code == 201

    incident = Incident.objects.get()
    assert incident.deployment == then
    assert incident.deployment != now


def test_it_stores_a_snapshot_linked_to_no_incident(client, agent, agent_key, media_root):
    content = snapshot_bytes()

    response = post_upload(client, agent_key, content, kind="snapshot", filename="state.bin")

    assert response.status_code == 201, response.json()
    artifact = Artifact.objects.get()
    assert (artifact.kind, artifact.detected_type, artifact.incident) == ("snapshot", "json", None)
    assert response.json()["incident"] is None
    assert artifact.captured_at == datetime(2026, 2, 26, 14, 5, tzinfo=UTC)
    assert content_path(media_root, artifact.sha256).read_bytes() == content
    assert not Incident.objects.exists()


# --- wrong type: 415 ---------------------------------------------------------------------------------------------


def test_it_refuses_a_snapshot_posted_as_a_bundle(client, agent_key, media_root):
    response = post_upload(client, agent_key, snapshot_bytes(), kind="incident_bundle")

    assert response.status_code == 415
    assert "expected an incident bundle" in response.json()["detail"]
    assert "got JSON" in response.json()["detail"]
    assert_nothing_stored(media_root)
    assert rejection().outcome == "failed"


def test_it_refuses_random_bytes_as_either_kind(client, agent_key, media_root):
    noise = os.urandom(4096)
    for kind in ("incident_bundle", "snapshot"):
        response = post_upload(client, agent_key, noise, kind=kind, filename="bundle.tar.gz")
        assert response.status_code == 415, response.json()
        assert response.json()["detail"]
    assert_nothing_stored(media_root)


def test_it_refuses_a_bundle_named_json_posted_as_a_snapshot(client, agent_key, media_root):
    response = post_upload(
        client, agent_key, bundle_bytes(), kind="snapshot", filename="snapshot.json", content_type="application/json"
    )

    assert response.status_code == 415
    assert "expected a snapshot" in response.json()["detail"]
    assert_nothing_stored(media_root)


def test_it_refuses_a_body_that_is_not_multipart(client, agent_key, media_root):
    response = client.post(
        "/api/v1/agent/artifacts/", {"kind": "snapshot"}, content_type="application/json",
        headers={"Authorization": f"Bearer {agent_key}"},
    )
    bare = client.generic("POST", "/api/v1/agent/artifacts/", headers={"Authorization": f"Bearer {agent_key}"})

    assert response.status_code == 415
    assert "expected multipart/form-data" in response.json()["detail"]
    assert bare.status_code == 415
    assert bare.json()["detail"].endswith("got no Content-Type")
    assert_nothing_stored(media_root)


# --- too large: 413 ----------------------------------------------------------------------------------------------


def test_it_refuses_an_announced_length_over_the_limit_without_reading_the_body(
    client, settings, agent_key, media_root
):
    settings.TRACEFLUX_MAX_UPLOAD_BYTES = 1000
    body = multipart_body(bundle_bytes())

    response, stream = post_raw(client, agent_key, body, content_length=1000 + FORM_ALLOWANCE + 1)

    assert response.status_code == 413
    assert "nothing was read" in response.json()["detail"]
    assert stream.bytes_read == 0
    assert_nothing_stored(media_root)
    assert rejection().data["status"] == 413


def test_it_cuts_off_a_file_that_grows_past_the_limit_while_streaming(
    client, settings, monkeypatch, agent_key, media_root
):
    settings.TRACEFLUX_MAX_UPLOAD_BYTES = 16 * 1024
    monkeypatch.setattr(ArtifactUploadHandler, "chunk_size", 4 * 1024)
    body = multipart_body(os.urandom(60 * 1024))
    assert len(body) <= settings.TRACEFLUX_MAX_UPLOAD_BYTES + FORM_ALLOWANCE  # the announced length passes

    response, stream = post_raw(client, agent_key, body)

    assert response.status_code == 413
    assert response.json() == {
        "detail": "file: the upload is larger than the limit of 16384 bytes (TRACEFLUX_MAX_UPLOAD_BYTES)",
        "field": "file",
    }
    assert stream.bytes_read < len(body) // 2  # stopped a read or two past the limit; the rest was never read
    assert_nothing_stored(media_root)


def test_it_refuses_a_snapshot_over_the_json_limit(client, settings, agent_key, media_root):
    settings.TRACEFLUX_MAX_JSON_BODY = 1024
    padded = snapshot_bytes().replace(b'"state": {', b'"state": {"pad": "' + b"x" * 2048 + b'", ')

    response = post_upload(client, agent_key, padded, kind="snapshot")

    assert response.status_code == 413
    assert_nothing_stored(media_root)


# --- content errors: 400 -----------------------------------------------------------------------------------------


def test_it_names_the_manifest_field_that_is_wrong(client, agent_key, media_root):
    bad_window = {"start": "2026-02-26T14:04:00Z", "end": "2026-02-26T14:00:00Z"}
    response = post_upload(client, agent_key, bundle_bytes(manifest_changes={"window": bad_window}))

    assert response.status_code == 400
    assert response.json()["field"] == "manifest.window.end"
    assert response.json()["detail"].startswith("manifest.json: $.window.end")
    assert_nothing_stored(media_root)
    assert rejection().reason == response.json()["detail"]


def test_it_names_a_missing_manifest_field(client, agent_key, media_root):
    manifest_changes = {"scope": {"service": "edge-gw", "region": "us-east-1"}}
    response = post_upload(client, agent_key, bundle_bytes(manifest_changes=manifest_changes))

    assert response.status_code == 400
    assert response.json()["field"] == "manifest.scope.pop"
    assert_nothing_stored(media_root)


def test_it_names_the_signal_lines_outside_the_window(client, agent_key, media_root):
    def late(lines):
        for number in (3, 5):
            lines[number - 1] = {**lines[number - 1], "ts": "2026-02-26T15:00:00Z"}
        return lines

    response = post_upload(client, agent_key, bundle_bytes(signal_changes=late))

    assert response.status_code == 400
    body = response.json()
    assert body["lines"] == [3, 5]
    assert body["more_lines"] == 0
    assert "2 lines have timestamps outside the window" in body["detail"]
    assert_nothing_stored(media_root)


def test_it_refuses_a_window_too_short_to_open_the_incident(client, agent_key, media_root):
    response = post_upload(client, agent_key, bundle_bytes(minutes=1))

    assert response.status_code == 400
    assert response.json()["field"] == "manifest.window"
    assert "between 2 and 10 minutes" in response.json()["detail"]
    assert not Incident.objects.exists()
    assert_nothing_stored(media_root)


def test_it_accepts_a_short_window_for_an_incident_that_exists(client, agent, agent_key):
    IncidentFactory(ref="INC-2026-0226-001", environment=agent.environment, source_agent=agent)

    response = post_upload(client, agent_key, bundle_bytes(minutes=1))

    assert response.status_code == 201, response.json()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "incident_bundle"}, "file"),
        ({"file": "not a file part", "kind": "incident_bundle"}, "file"),
        ({"kind": "video"}, "kind"),
        ({}, "kind"),
    ],
)
def test_it_names_a_missing_or_wrong_form_part(client, agent_key, media_root, data, field):
    from django.core.files.uploadedfile import SimpleUploadedFile

    if "kind" not in data or data.get("kind") == "video":
        data = {**data, "file": SimpleUploadedFile("b.tar.gz", bundle_bytes())}

    response = client.post("/api/v1/agent/artifacts/", data, headers={"Authorization": f"Bearer {agent_key}"})

    assert response.status_code == 400
    assert response.json()["field"] == field
    assert_nothing_stored(media_root)


def test_it_refuses_a_second_file_part(client, agent_key, media_root):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {"file": SimpleUploadedFile("a.tar.gz", bundle_bytes()), "extra": SimpleUploadedFile("b", b"xx"),
            "kind": "incident_bundle"}
    response = client.post("/api/v1/agent/artifacts/", data, headers={"Authorization": f"Bearer {agent_key}"})

    assert response.status_code == 400
    assert response.json()["field"] == "extra"
    assert_nothing_stored(media_root)


# --- claims the key may not make: 403 ----------------------------------------------------------------------------


def test_it_denies_a_manifest_naming_another_environment(client, agent_key, media_root):
    EnvironmentFactory(slug="prod")

    response = post_upload(client, agent_key, bundle_bytes(environment="prod"))

    assert response.status_code == 403
    assert response.json()["field"] == "manifest.environment"
    assert_nothing_stored(media_root)
    event = rejection()
    assert (event.outcome, event.actor_name, event.environment) == ("denied", AGENT_NAME, "staging")
    assert event.reason == response.json()["detail"]


def test_it_denies_a_manifest_naming_another_agent(client, agent, agent_key, media_root):
    AgentFactory(environment=agent.environment, name="edge-agent-02")

    response = post_upload(client, agent_key, bundle_bytes(agent="edge-agent-02"))

    assert response.status_code == 403
    assert response.json()["field"] == "manifest.agent"
    assert_nothing_stored(media_root)
    assert rejection().outcome == "denied"


def test_it_denies_a_snapshot_of_another_agent(client, agent_key, media_root):
    response = post_upload(client, agent_key, snapshot_bytes(agent="someone-else"), kind="snapshot")

    assert response.status_code == 403
    assert response.json()["field"] == "snapshot.agent"
    assert_nothing_stored(media_root)


def test_it_denies_evidence_for_an_incident_of_another_environment(client, agent_key, media_root):
    IncidentFactory(ref="INC-2026-0226-001", environment=EnvironmentFactory(slug="prod"))

    response = post_upload(client, agent_key, bundle_bytes())

    assert response.status_code == 403
    assert response.json()["field"] == "manifest.incident.ref"
    assert Incident.objects.count() == 1
    assert_nothing_stored(media_root)
    assert rejection().outcome == "denied"


# --- key, scope, rate --------------------------------------------------------------------------------------------


def test_it_requires_a_key(client, media_root):
    response = post_upload(client, None, bundle_bytes())

    assert response.status_code == 401
    assert response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert_nothing_stored(media_root)


def test_it_requires_the_upload_scope(client, agent, media_root):
    _, heartbeat_only = incident_services.agent_key_create(agent=agent, actor=None, scopes=["heartbeats:write"])

    response = post_upload(client, heartbeat_only, bundle_bytes())

    assert response.status_code == 403
    assert "artifacts:write" in response.json()["detail"]
    assert_nothing_stored(media_root)


def test_it_rate_limits_uploads_with_retry_after(client, settings, agent_key, media_root):
    settings.TRACEFLUX_RATE_LIMITS = {**settings.TRACEFLUX_RATE_LIMITS, "uploads": "2/m"}
    content = snapshot_bytes()
    answers = [post_upload(client, agent_key, content, kind="snapshot").status_code for _ in range(2)]

    response = post_upload(client, agent_key, content, kind="snapshot")

    assert answers == [201, 200]
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert response.json()["retry_after"] == int(response["Retry-After"])
    assert Artifact.objects.get().duplicate_count == 1
    assert [p for p in files_under(media_root) if p.startswith("tmp")] == []


def test_it_refuses_oversized_form_fields_besides_the_file(client, settings, agent_key, media_root):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {"file": SimpleUploadedFile("b.tar.gz", bundle_bytes()), "kind": "incident_bundle", "note": "x" * 4096}
    response = client.post("/api/v1/agent/artifacts/", data, headers={"Authorization": f"Bearer {agent_key}"})

    assert response.status_code == 413
    assert_nothing_stored(media_root)


def test_it_refuses_a_multipart_body_without_a_boundary(client, agent_key, media_root):
    response, _ = post_raw(client, agent_key, b"--x\r\n\r\n", content_type="multipart/form-data")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("the multipart body could not be parsed")
    assert_nothing_stored(media_root)
