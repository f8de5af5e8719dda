"""Content-hash deduplication, and what a failed commit leaves on disk."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from artifacts import storage
from artifacts.models import Artifact
from incidents.models import Incident
from tests.artifacts.conftest import (
    assert_nothing_stored,
    bundle_bytes,
    content_path,
    files_under,
    post_upload,
    snapshot_bytes,
)
from tests.concurrency import race
from tests.factories import AgentFactory, EnvironmentFactory
from traceflux import audit
from traceflux.audit.models import AuditEvent


@pytest.mark.django_db
def test_it_answers_the_same_bytes_with_the_artifact_already_stored(client, agent_key, media_root):
    content = bundle_bytes()
    first = post_upload(client, agent_key, content)

    again = post_upload(client, agent_key, content, filename="renamed.zip")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {**first.json(), "duplicate": True}
    artifact = Artifact.objects.get()
    artifact.refresh_from_db()
    assert artifact.duplicate_count == 1
    assert files_under(media_root) == [artifact.file.name]  # one copy, no temporary file left
    duplicate = AuditEvent.objects.get(action="artifact.duplicate")
    assert duplicate.target_id == str(artifact.pk)
    assert duplicate.data["duplicate_count"] == 1
    assert AuditEvent.objects.filter(action="artifact.uploaded").count() == 1
    assert Incident.objects.count() == 1
    assert artifact.history.count() == 1  # the counter is not history


@pytest.mark.django_db
def test_it_keeps_an_artifact_as_it_was_uploaded(client, agent_key):
    post_upload(client, agent_key, snapshot_bytes(), kind="snapshot")
    artifact = Artifact.objects.get()
    artifact.size = 1

    with pytest.raises(ValidationError, match="cannot change after upload"):
        artifact.save()
    artifact.refresh_from_db()
    assert artifact.size == len(snapshot_bytes())


@pytest.mark.django_db
def test_it_counts_every_repeat(client, agent_key, media_root):
    content = snapshot_bytes()
    answers = [post_upload(client, agent_key, content, kind="snapshot") for _ in range(4)]

    assert [a.status_code for a in answers] == [201, 200, 200, 200]
    assert {a.json()["id"] for a in answers} == {Artifact.objects.get().pk}
    assert Artifact.objects.get().duplicate_count == 3
    assert AuditEvent.objects.filter(action="artifact.duplicate").count() == 3


@pytest.mark.django_db
def test_it_stores_different_bytes_separately(client, agent_key, media_root):
    one = post_upload(client, agent_key, bundle_bytes(seed=1))
    two = post_upload(client, agent_key, bundle_bytes(seed=2, ref="INC-2026-0226-002"))

    assert (one.status_code, two.status_code) == (201, 201)
    assert Artifact.objects.count() == 2
    assert len(files_under(media_root)) == 2


# --- a commit that fails after the bytes moved -------------------------------------------------------------------


def _failing_upload_audit(monkeypatch) -> None:
    """The upload's own audit write fails: the transaction that records the row rolls back after the move."""
    real = audit.record

    def record(**kwargs):
        if kwargs.get("action") == "artifact.uploaded":
            raise RuntimeError("audit log unavailable")
        return real(**kwargs)

    monkeypatch.setattr(audit, "record", record)


@pytest.mark.django_db
def test_it_removes_the_moved_file_when_the_commit_fails(client, monkeypatch, agent_key, media_root):
    _failing_upload_audit(monkeypatch)
    placed = []
    real_place = storage.place
    monkeypatch.setattr(storage, "place", lambda **kw: placed.append(real_place(**kw)) or placed[-1])

    with pytest.raises(RuntimeError, match="audit log unavailable"):
        post_upload(client, agent_key, bundle_bytes())

    assert placed and placed[0][1] is True  # the bytes did reach their content-addressed name first
    assert not Incident.objects.exists()  # opened in the same transaction, so rolled back with it
    assert_nothing_stored(media_root)


@pytest.mark.django_db
def test_it_keeps_the_file_when_a_committed_row_references_the_hash(client, monkeypatch, agent, agent_key, media_root):
    """Another upload of the same bytes (here: another environment's) commits while this one is failing."""
    _failing_upload_audit(monkeypatch)
    other_agent = AgentFactory(environment=EnvironmentFactory(slug="prod"), name="prod-agent-01")
    real_place = storage.place

    def place_then_someone_commits(*, temp_path, sha256):
        placed = real_place(temp_path=temp_path, sha256=sha256)
        row = Artifact(
            environment=other_agent.environment,
            agent=other_agent,
            kind="incident_bundle",
            size=1,
            sha256=sha256,
            detected_type="tar.gz",
            captured_at=agent.created_at,
            file=storage.content_name(sha256),
        )
        row._history_user = None
        row.save()
        return placed

    monkeypatch.setattr(storage, "place", place_then_someone_commits)
    content = bundle_bytes()

    with pytest.raises(RuntimeError, match="audit log unavailable"):
        post_upload(client, agent_key, content)

    survivor = Artifact.objects.get()
    assert survivor.environment.slug == "prod"
    assert content_path(media_root, survivor.sha256).read_bytes() == content
    assert files_under(media_root) == [survivor.file.name]  # and no temporary file


# --- twenty at once ----------------------------------------------------------------------------------------------


@pytest.mark.needs("postgresql")
@pytest.mark.django_db(transaction=True)
def test_it_stores_twenty_simultaneous_identical_uploads_once(agent_key, media_root):
    content = bundle_bytes()
    uploads = 20
    answers, errors = race([lambda: post_upload(Client(), agent_key, content) for _ in range(uploads)], timeout=120)

    assert not errors, errors
    artifact = Artifact.objects.get()
    assert sorted(a.status_code for a in answers) == [200] * (uploads - 1) + [201]
    assert {a.json()["id"] for a in answers} == {artifact.pk}
    assert artifact.duplicate_count == uploads - 1
    assert Incident.objects.count() == 1
    assert files_under(media_root) == [artifact.file.name]
    assert AuditEvent.objects.filter(action="artifact.duplicate").count() == uploads - 1


@pytest.mark.django_db
def test_it_answers_a_repeat_from_the_same_agent_without_validating_again(client, agent_key, monkeypatch):
    content = bundle_bytes()
    assert post_upload(client, agent_key, content).status_code == 201

    def must_not_run(*args, **kwargs):
        raise AssertionError("a repeat of stored bytes must not be validated again")

    monkeypatch.setattr("artifacts.services.validate_bundle", must_not_run)
    again = post_upload(client, agent_key, content)

    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert Artifact.objects.get().duplicate_count == 1


@pytest.mark.django_db
def test_it_judges_another_agents_repeat_whole_and_refuses_its_claim(client, agent_key, agent, media_root):
    from incidents import services

    content = bundle_bytes()
    assert post_upload(client, agent_key, content).status_code == 201
    other = AgentFactory(environment=agent.environment, name="edge-other")
    _, other_key = services.agent_key_create(agent=other, actor=None)

    response = post_upload(client, other_key, content)

    assert response.status_code == 403
    assert response.json()["field"] == "manifest.agent"
    artifact = Artifact.objects.get()
    artifact.refresh_from_db()
    assert artifact.duplicate_count == 0
