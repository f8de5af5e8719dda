"""Enrollment: an agent trades a limited-use, expiring token for its identity and a key, exactly once per use."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from incidents import services
from incidents.models import Agent, AgentKey, EnrollmentToken
from tests.concurrency import race
from tests.factories import AgentFactory
from traceflux.audit import SYSTEM
from traceflux.audit.models import AuditEvent

ENROLL = "/api/v1/agent/enroll/"


def a_token(environment, *, uses: int = 1, expires_in: timedelta = timedelta(hours=1)) -> str:
    return services.enrollment_token_create(
        environment=environment, actor=SYSTEM, uses=uses, expires_at=timezone.now() + expires_in
    )[1]


def enroll(client, token: str, name: str = "edge-prod-7", **extra):
    body = {"token": token, "name": name, "hostname": f"{name}.example.test", **extra}
    return client.post(ENROLL, body, format="json")


@pytest.mark.django_db
def test_it_enrolls_an_agent_in_the_tokens_environment_with_a_key_that_works(api_client, environments):
    token = a_token(environments["prod"], uses=2)
    response = enroll(api_client, token, version="1.6.0", region="eu-west-1", pop="POP-3", services=["edge-gw"])
    assert response.status_code == 201
    body = response.json()
    agent = Agent.objects.get(name="edge-prod-7")
    assert body["agent"] == {
        "id": agent.pk,
        "name": "edge-prod-7",
        "environment": "prod",
        "hostname": "edge-prod-7.example.test",
        "version": "1.6.0",
        "region": "eu-west-1",
        "pop": "POP-3",
        "services": ["edge-gw"],
        "enabled": True,
        "created_at": body["agent"]["created_at"],
    }
    assert body["scopes"] == ["artifacts:write", "commands:read", "heartbeats:write"]
    key = AgentKey.objects.get(agent=agent)
    assert body["key"].startswith(f"tfk_{key.prefix}_")
    assert EnrollmentToken.objects.get().uses_left == 1

    heartbeat = api_client.post(
        "/api/v1/agent/heartbeats/", {"status": "ok"}, format="json", HTTP_AUTHORIZATION=f"Bearer {body['key']}"
    )
    assert heartbeat.status_code == 201

    actions = list(AuditEvent.objects.order_by("seq").values_list("action", "actor_kind"))
    assert actions[-3:] == [
        ("agent.created", "enrollment"),
        ("agent_key.created", "enrollment"),
        ("agent.enrolled", "agent"),
    ]
    enrolled = AuditEvent.objects.get(action="agent.enrolled")
    assert enrolled.data["uses_left"] == 1
    assert enrolled.environment == "prod"


@pytest.mark.django_db
def test_it_refuses_a_used_up_token_with_401(api_client, environments):
    token = a_token(environments["prod"])
    assert enroll(api_client, token, name="first").status_code == 201
    response = enroll(api_client, token, name="second")
    assert response.status_code == 401
    assert response.json() == {"detail": "this enrollment token has been used up"}
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not Agent.objects.filter(name="second").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("token", "detail"),
    [
        ("nonsense", "malformed enrollment token: expected tfe_<prefix>_<secret>"),
        ("tfe_0123456789ab_" + "s" * 43, "unknown enrollment token"),
    ],
)
def test_it_refuses_a_malformed_or_unknown_token_with_401(api_client, environments, token, detail):
    a_token(environments["prod"])
    response = enroll(api_client, token)
    assert response.status_code == 401
    assert response.json() == {"detail": detail}
    assert not Agent.objects.exists()
    assert EnrollmentToken.objects.get().uses_left == 1


@pytest.mark.django_db
def test_it_refuses_a_known_prefix_with_the_wrong_secret(api_client, environments):
    token = a_token(environments["prod"])
    response = enroll(api_client, token[:-6] + "ZZZZZZ")
    assert response.status_code == 401
    assert response.json() == {"detail": "unknown enrollment token"}
    assert EnrollmentToken.objects.get().uses_left == 1


@pytest.mark.django_db
def test_it_refuses_an_expired_token_with_401(api_client, environments):
    token = a_token(environments["prod"])
    EnrollmentToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = enroll(api_client, token)
    assert response.status_code == 401
    assert response.json() == {"detail": "this enrollment token has expired"}
    assert not Agent.objects.exists()


@pytest.mark.django_db
def test_it_answers_400_naming_a_taken_name_and_gives_the_use_back(api_client, environments):
    AgentFactory(name="edge-prod-7", environment=environments["staging"])
    token = a_token(environments["prod"])
    response = enroll(api_client, token, name="edge-prod-7")
    assert response.status_code == 400
    assert response.json()["detail"] == "name: an agent named 'edge-prod-7' already exists"
    assert response.json()["field"] == "name"
    token_row = EnrollmentToken.objects.get()
    assert token_row.uses_left == 1
    assert token_row.history.count() == 1
    assert not AgentKey.objects.exists()
    assert not AuditEvent.objects.filter(action="agent.enrolled").exists()
    assert enroll(api_client, token, name="edge-prod-8").status_code == 201


@pytest.mark.django_db
def test_it_answers_400_naming_a_missing_field(api_client, environments):
    token = a_token(environments["prod"])
    response = api_client.post(ENROLL, {"token": token, "name": "x"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "hostname: This field is required."
    assert EnrollmentToken.objects.get().uses_left == 1


@pytest.mark.django_db
def test_it_answers_415_and_413_before_looking_at_the_token(api_client, environments, settings):
    token = a_token(environments["prod"])
    assert api_client.post(ENROLL, f"token={token}", content_type="text/plain").status_code == 415
    settings.TRACEFLUX_MAX_JSON_BODY = 1024
    assert enroll(api_client, token, hostname="h" * 2000).status_code == 413
    assert EnrollmentToken.objects.get().uses_left == 1


@pytest.mark.django_db
def test_it_rate_limits_enrollment_attempts_per_client_address(environments, settings):
    settings.TRACEFLUX_RATE_LIMITS = {**settings.TRACEFLUX_RATE_LIMITS, "enroll": "2/m"}
    token = a_token(environments["prod"], uses=5)
    guesser = APIClient(REMOTE_ADDR="203.0.113.9")
    assert enroll(guesser, "tfe_0123456789ab_" + "s" * 43).status_code == 401
    assert enroll(guesser, "tfe_0123456789ab_" + "t" * 43).status_code == 401
    response = enroll(guesser, token)
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert response.json()["retry_after"] == int(response["Retry-After"])
    assert "rate limit for enroll exceeded (2/m)" in response.json()["detail"]
    assert EnrollmentToken.objects.get().uses_left == 5
    assert enroll(APIClient(REMOTE_ADDR="198.51.100.4"), token).status_code == 201


@pytest.mark.django_db
def test_it_records_each_use_in_the_tokens_history(api_client, environments):
    token = a_token(environments["prod"], uses=3)
    enroll(api_client, token, name="a1")
    enroll(api_client, token, name="a2")
    history = EnrollmentToken.objects.get().history.order_by("history_id")
    assert [(h.uses_left, h.history_change_reason) for h in history] == [
        (3, None),
        (2, "used to enroll agent a1"),
        (1, "used to enroll agent a2"),
    ]


@pytest.mark.django_db
def test_it_refuses_to_create_a_token_without_uses_or_already_expired(environments):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="at least one use"):
        services.enrollment_token_create(
            environment=environments["prod"], actor=SYSTEM, uses=0, expires_at=timezone.now() + timedelta(hours=1)
        )
    with pytest.raises(ValidationError, match="past"):
        services.enrollment_token_create(
            environment=environments["prod"], actor=SYSTEM, expires_at=timezone.now() - timedelta(seconds=1)
        )
    assert not EnrollmentToken.objects.exists()


@pytest.mark.needs("postgresql")
@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_one_of_two_concurrent_enrollments_use_a_one_use_token(environments):
    token = a_token(environments["prod"], uses=1)
    answers, errors = race(
        [lambda name=name: (name, enroll(APIClient(), token, name=name).status_code) for name in ("racer-a", "racer-b")]
    )
    assert errors == []
    results = dict(answers)
    assert sorted(results.values()) == [201, 401]
    winner = next(name for name, code in results.items() if code == 201)
    assert list(Agent.objects.filter(name__startswith="racer").values_list("name", flat=True)) == [winner]
    assert EnrollmentToken.objects.get().uses_left == 0
    assert AgentKey.objects.filter(agent__name=winner).count() == 1
    assert AuditEvent.objects.filter(action="agent.enrolled").count() == 1


@pytest.mark.needs("postgresql")
@pytest.mark.django_db(transaction=True)
def test_it_lets_concurrent_enrollments_use_every_use_of_a_token_and_no_more(environments):
    token = a_token(environments["prod"], uses=3)
    answers, errors = race(
        [lambda name=f"racer-{i}": (name, enroll(APIClient(), token, name=name).status_code) for i in range(5)]
    )
    assert errors == []
    results = dict(answers)
    assert sorted(results.values()) == [201, 201, 201, 401, 401]
    assert Agent.objects.filter(name__startswith="racer").count() == 3
    assert EnrollmentToken.objects.get().uses_left == 0
