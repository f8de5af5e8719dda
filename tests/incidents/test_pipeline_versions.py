from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from incidents import services
from incidents.models import PipelineVersion
from replays.engine import spec_hash
from traceflux.audit.models import AuditEvent


def policy(**sections) -> dict:
    return {"schema": "traceflux.policy/v1", **sections}


@pytest.mark.django_db
def test_it_stores_the_spec_hash_of_the_canonical_spec(admin_user):
    version = services.pipeline_version_create(
        label="v2.14.3", spec=policy(name="b", description="a"), actor=admin_user
    )
    version.refresh_from_db()
    assert version.spec_hash == spec_hash({"description": "a", "name": "b", "schema": "traceflux.policy/v1"})
    assert version.created_by == admin_user
    assert AuditEvent.objects.get(action="pipeline_version.created").data["spec_hash"] == version.spec_hash


@pytest.mark.django_db
def test_it_refuses_a_second_version_with_the_same_spec(admin_user):
    services.pipeline_version_create(label="v1", spec=policy(name="a", description="b"), actor=admin_user)
    with pytest.raises(ValidationError, match="already pipeline version v1"):
        services.pipeline_version_create(
            label="v2", spec={"description": "b", "schema": "traceflux.policy/v1", "name": "a"}, actor=admin_user
        )
    assert PipelineVersion.objects.count() == 1


@pytest.mark.django_db
def test_it_refuses_to_change_a_stored_spec(admin_user):
    version = services.pipeline_version_create(label="v1", spec=policy(name="one"), actor=admin_user)
    version.spec = policy(name="two")
    with pytest.raises(ValidationError, match="cannot change"):
        version.save()
    version.refresh_from_db()
    assert version.spec == policy(name="one")
    version.notes = "notes may change"
    version.save()
    assert PipelineVersion.objects.get().notes == "notes may change"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ([1, 2], "must be a JSON object"),
        ({"x": float("inf")}, "finite"),
        ({"name": "no marker"}, r"policy: \$\.schema: is required"),
        (policy(correlation={"window_s": -1}), r"\$\.correlation\.window_s: -1 is less than the minimum of 0"),
    ],
)
def test_it_refuses_a_spec_that_is_not_a_canonical_json_object(admin_user, spec, problem):
    with pytest.raises(ValidationError, match=problem):
        services.pipeline_version_create(label="bad", spec=spec, actor=admin_user)
    assert not PipelineVersion.objects.exists()
