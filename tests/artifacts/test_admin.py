"""Artifacts in the console: read-only, narrowed to the environments a user may see, downloadable by staff."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from guardian.shortcuts import assign_perm

from artifacts.models import Artifact
from incidents import services as incident_services
from tests.artifacts.conftest import bundle_bytes, post_upload
from tests.factories import AgentFactory, EnvironmentFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_artifacts(client, agent_key) -> dict[str, tuple[Artifact, bytes]]:
    """One bundle uploaded in staging, one in prod, through the real API."""
    prod_agent = AgentFactory(environment=EnvironmentFactory(slug="prod"), name="prod-agent-01")
    _, prod_key = incident_services.agent_key_create(agent=prod_agent, actor=None, scopes=["artifacts:write"])
    staging_bytes = bundle_bytes()
    prod_bytes = bundle_bytes(environment="prod", agent="prod-agent-01", ref="INC-2026-0226-900")
    assert post_upload(client, agent_key, staging_bytes).status_code == 201
    assert post_upload(client, prod_key, prod_bytes).status_code == 201
    return {
        "staging": (Artifact.objects.get(environment__slug="staging"), staging_bytes),
        "prod": (Artifact.objects.get(environment__slug="prod"), prod_bytes),
    }


@pytest.fixture
def staging_viewer(staging):
    user = UserFactory(username="staging-viewer")
    user.user_permissions.add(Permission.objects.get(content_type__app_label="artifacts", codename="view_artifact"))
    assign_perm("incidents.view_environment", user, staging)
    return user


def download_url(artifact: Artifact) -> str:
    return reverse("admin:artifacts_artifact_download", args=[artifact.pk])


def test_it_lists_artifacts_with_links_and_finds_them_by_hash_ref_or_agent(client, admin_user, two_artifacts):
    staging, _ = two_artifacts["staging"]
    client.force_login(admin_user)
    changelist = reverse("admin:artifacts_artifact_changelist")

    page = client.get(changelist).content.decode()
    assert reverse("admin:incidents_agent_change", args=[staging.agent_id]) in page
    assert reverse("admin:incidents_incident_change", args=[staging.incident_id]) in page
    assert download_url(staging) in page
    for term in (staging.sha256[:16], "INC-2026-0226-001", "edge-agent-01"):
        found = client.get(changelist, {"q": term}).context["cl"].result_list
        assert list(found) == [staging], term


def test_it_shows_only_the_environments_a_user_may_see(client, staging_viewer, two_artifacts):
    staging, _ = two_artifacts["staging"]
    prod, _ = two_artifacts["prod"]
    client.force_login(staging_viewer)

    listed = client.get(reverse("admin:artifacts_artifact_changelist")).context["cl"].result_list
    assert list(listed) == [staging]
    assert client.get(reverse("admin:artifacts_artifact_change", args=[staging.pk])).status_code == 200
    assert client.get(reverse("admin:artifacts_artifact_change", args=[prod.pk])).status_code == 302
    assert client.get(reverse("admin:artifacts_artifact_history", args=[prod.pk])).status_code == 403


def test_it_downloads_the_stored_bytes_for_a_visible_artifact_only(client, staging_viewer, two_artifacts):
    staging, staging_bytes = two_artifacts["staging"]
    prod, _ = two_artifacts["prod"]
    client.force_login(staging_viewer)

    response = client.get(download_url(staging))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == staging_bytes
    assert response["Content-Disposition"] == f'attachment; filename="{staging.sha256}.tar.gz"'
    assert client.get(download_url(prod)).status_code == 404


def test_it_sends_a_visitor_who_is_not_staff_to_the_login(client, two_artifacts):
    staging, _ = two_artifacts["staging"]
    response = client.get(download_url(staging))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_it_neither_adds_changes_nor_deletes(client, admin_user, two_artifacts):
    staging, _ = two_artifacts["staging"]
    client.force_login(admin_user)

    assert client.get(reverse("admin:artifacts_artifact_add")).status_code == 403
    assert client.post(reverse("admin:artifacts_artifact_change", args=[staging.pk]), {"kind": "snapshot"}
                       ).status_code == 403
    assert client.get(reverse("admin:artifacts_artifact_delete", args=[staging.pk])).status_code == 403
    staging.refresh_from_db()
    assert staging.kind == "incident_bundle"
