from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from incidents import services
from incidents.models import AgentKey
from tests.factories import AgentFactory
from traceflux.audit.models import AuditEvent


@pytest.mark.django_db
def test_it_stores_only_the_prefix_and_an_hmac_of_the_secret(admin_user):
    agent = AgentFactory()
    key, plaintext = services.agent_key_create(agent=agent, actor=admin_user)
    _, prefix, secret = plaintext.split("_", 2)
    key.refresh_from_db()
    assert key.prefix == prefix
    assert key.secret_hmac == services.agent_key_digest(secret)
    assert secret not in key.secret_hmac
    assert key.scopes == ["artifacts:write", "commands:read", "heartbeats:write"]
    assert secret not in str(AuditEvent.objects.get(action="agent_key.created").data)


@pytest.mark.django_db
def test_it_refuses_unknown_scopes_and_past_expiry(admin_user):
    agent = AgentFactory()
    with pytest.raises(ValidationError, match="unknown scopes"):
        services.agent_key_create(agent=agent, actor=admin_user, scopes=["root"])
    with pytest.raises(ValidationError, match="past"):
        services.agent_key_create(agent=agent, actor=admin_user, expires_at=timezone.now() - timedelta(seconds=1))
    assert not AgentKey.objects.exists()


@pytest.mark.django_db
def test_it_revokes_once_and_audits_once(admin_user):
    key, _ = services.agent_key_create(agent=AgentFactory(), actor=admin_user)
    services.agent_key_revoke(key=key, actor=admin_user, reason="leaked")
    first = AgentKey.objects.get().revoked_at
    services.agent_key_revoke(key=key, actor=admin_user, reason="again")
    assert AgentKey.objects.get().revoked_at == first
    assert AuditEvent.objects.filter(action="agent_key.revoked").count() == 1
