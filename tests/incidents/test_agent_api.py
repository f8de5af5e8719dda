"""The agent API's shared behaviour: authentication, scopes, refusals, body checks, rate limits, failure counting,
the error shape, secrecy of keys, and the OpenAPI schema and docs."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from incidents import failures, services
from incidents.models import Agent, AgentKey, EnrollmentToken, Heartbeat
from tests.factories import AgentFactory
from traceflux.audit import SYSTEM
from traceflux.audit.models import AuditEvent

HEARTBEATS = "/api/v1/agent/heartbeats/"
COMMANDS = "/api/v1/agent/commands/"
OK = {"status": "ok", "version": "1.4.0"}


def beat(client, body=None, **extra):
    return client.post(HEARTBEATS, body if body is not None else OK, format="json", **extra)


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def a_key(agent, **kwargs) -> str:
    return services.agent_key_create(agent=agent, actor=SYSTEM, **kwargs)[1]


# --- routes ------------------------------------------------------------------------------------------------------


def test_it_mounts_the_agent_api_under_api_v1_agent():
    assert reverse("agent_api:heartbeats") == HEARTBEATS
    assert reverse("agent_api:commands") == COMMANDS
    assert reverse("agent_api:command-ack", args=[7]) == "/api/v1/agent/commands/7/ack/"
    assert reverse("agent_api:enroll") == "/api/v1/agent/enroll/"


# --- 401: who is calling -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_401_with_a_bearer_challenge_when_the_key_is_missing(api_client, prod_agent):
    response = beat(api_client)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "missing Authorization header" in response.json()["detail"]
    assert not Heartbeat.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Basic dXNlcjpwdw==", "malformed Authorization header"),
        ("Bearer", "malformed Authorization header"),
        ("Bearer not-a-key", "malformed agent key"),
        ("Bearer tfk_XYZ_short", "malformed agent key"),
    ],
)
def test_it_answers_401_naming_a_malformed_authorization(api_client, prod_agent, header, detail):
    response = beat(api_client, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert detail in response.json()["detail"]


@pytest.mark.django_db
def test_it_answers_401_for_an_unknown_key_and_for_a_known_prefix_with_a_wrong_secret(api_client, prod_agent_key):
    unknown = beat(api_client, **bearer("tfk_0123456789ab_" + "x" * 43))
    prefix = prod_agent_key.split("_")[1]
    wrong_secret = beat(api_client, **bearer(f"tfk_{prefix}_" + "y" * 43))
    for response in (unknown, wrong_secret):
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert response.json() == {"detail": "unknown agent key"}
    assert not Heartbeat.objects.exists()


@pytest.mark.django_db
def test_it_answers_401_for_an_expired_key(api_client, prod_agent):
    key = a_key(prod_agent, expires_at=timezone.now() + timedelta(minutes=1))
    AgentKey.objects.filter(agent=prod_agent).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = beat(api_client, **bearer(key))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json() == {"detail": "this agent key has expired"}


@pytest.mark.django_db
def test_it_answers_401_for_a_revoked_key(api_client, prod_agent, prod_agent_key):
    services.agent_key_revoke(key=AgentKey.objects.get(agent=prod_agent), actor=SYSTEM, reason="leaked")
    response = beat(api_client, **bearer(prod_agent_key))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json() == {"detail": "this agent key has been revoked"}
    prod_agent.refresh_from_db()
    assert prod_agent.last_seen_at is None


@pytest.mark.django_db
def test_it_never_audits_a_401(api_client, prod_agent, prod_agent_key):
    before = AuditEvent.objects.count()
    beat(api_client)
    beat(api_client, **bearer("tfk_0123456789ab_" + "x" * 43))
    services.agent_key_revoke(key=AgentKey.objects.get(agent=prod_agent), actor=SYSTEM)
    beat(api_client, **bearer(prod_agent_key))
    assert AuditEvent.objects.count() == before + 1  # the revocation itself, nothing for the three refusals


# --- 403: who may do what ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_403_when_the_key_lacks_the_scope_and_audits_the_refusal(api_client, prod_agent):
    key = a_key(prod_agent, scopes=["heartbeats:write"])
    response = api_client.get(COMMANDS, **bearer(key))
    assert response.status_code == 403
    assert response.json() == {"detail": "this key lacks the scope commands:read"}
    event = AuditEvent.objects.get(action="agent.request_denied")
    assert (event.outcome, event.actor_kind, event.actor_name) == ("denied", "agent", "edge-prod-1")
    assert event.environment == "prod"
    assert event.reason == "this key lacks the scope commands:read"
    assert beat(api_client, **bearer(key)).status_code == 201  # the scope it has still works


@pytest.mark.django_db
def test_it_answers_403_for_a_disabled_agent(api_client, prod_agent, agent_client):
    services.agent_set_enabled(agent=prod_agent, enabled=False, actor=SYSTEM, reason="decommissioned")
    response = beat(agent_client)
    assert response.status_code == 403
    assert response.json() == {"detail": "agent edge-prod-1 is disabled"}
    assert not Heartbeat.objects.exists()
    prod_agent.refresh_from_db()
    assert prod_agent.last_seen_at is None
    assert AuditEvent.objects.filter(action="agent.request_denied", outcome="denied").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("claim", "named"),
    [({"environment": "staging"}, "environment 'staging'"), ({"agent": "edge-staging-9"}, "agent 'edge-staging-9'")],
)
def test_it_answers_403_when_the_request_names_another_environment_or_agent(agent_client, prod_agent, claim, named):
    response = beat(agent_client, {**OK, **claim})
    assert response.status_code == 403
    assert named in response.json()["detail"]
    assert not Heartbeat.objects.exists()
    event = AuditEvent.objects.get(outcome="denied")
    assert event.actor_name == "edge-prod-1"
    assert named in event.reason


@pytest.mark.django_db
def test_it_accepts_a_request_that_names_the_keys_own_environment_and_agent(agent_client, prod_agent):
    response = beat(agent_client, {**OK, "environment": "prod", "agent": "edge-prod-1"})
    assert response.status_code == 201
    assert not AuditEvent.objects.filter(outcome="denied").exists()


@pytest.mark.django_db
def test_it_audits_a_repeated_refusal_once_a_minute_but_counts_every_one(api_client, prod_agent):
    key = a_key(prod_agent, scopes=["heartbeats:write"])
    for _ in range(5):
        assert api_client.get(COMMANDS, **bearer(key)).status_code == 403
    assert AuditEvent.objects.filter(action="agent.request_denied").count() == 1
    assert failures.failure_counts(agent_id=prod_agent.pk)[403] == 5


# --- the body: 400, 413, 415 -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_400_with_a_detail_naming_the_bad_field(agent_client):
    response = beat(agent_client, {"status": "sleepy"})
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == 'status: "sleepy" is not a valid choice.'
    assert body["field"] == "status"
    assert body["errors"] == {"status": ['"sleepy" is not a valid choice.']}


@pytest.mark.django_db
def test_it_names_a_missing_field_and_a_nested_one(agent_client, api_client):
    assert beat(agent_client, {"version": "1.5.0"}).json()["detail"] == "status: This field is required."
    response = api_client.post(
        "/api/v1/agent/enroll/",
        {"token": "tfe_x", "name": "n", "hostname": "h", "services": ["edge", 5, ""]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "services.2"


@pytest.mark.django_db
def test_it_answers_400_for_a_body_that_is_not_json_or_not_an_object(agent_client):
    broken = agent_client.post(HEARTBEATS, data="{not json", content_type="application/json")
    assert broken.status_code == 400
    assert "JSON parse error" in broken.json()["detail"]
    listed = agent_client.post(HEARTBEATS, data="[1, 2]", content_type="application/json")
    assert listed.status_code == 400
    assert "Expected a dictionary" in listed.json()["detail"]


@pytest.mark.django_db
def test_it_ignores_unknown_fields(agent_client):
    response = beat(agent_client, {**OK, "uptime_s": 1234, "colour": "blue"})
    assert response.status_code == 201
    assert Heartbeat.objects.get().details == {}


@pytest.mark.django_db
def test_it_answers_413_for_a_body_over_the_limit_before_reading_it(agent_client, settings):
    settings.TRACEFLUX_MAX_JSON_BODY = 1024
    response = beat(agent_client, {**OK, "details": {"blob": "x" * 2000}})
    assert response.status_code == 413
    assert "limit is 1024 bytes (TRACEFLUX_MAX_JSON_BODY)" in response.json()["detail"]
    assert not Heartbeat.objects.exists()
    assert beat(agent_client, {**OK, "details": {"blob": "x" * 100}}).status_code == 201


@pytest.mark.django_db
def test_it_judges_the_size_by_content_length_alone(agent_client, settings):
    settings.TRACEFLUX_MAX_JSON_BODY = 1024
    response = agent_client.post(
        HEARTBEATS, data=json.dumps(OK), content_type="application/json", CONTENT_LENGTH="5000000"
    )
    assert response.status_code == 413
    assert response.json()["detail"].startswith("the request body is 5000000 bytes")


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_it_answers_415_for_a_body_that_is_not_json(agent_client, content_type):
    response = agent_client.post(HEARTBEATS, data="status=ok", content_type=content_type)
    assert response.status_code == 415
    assert f"Content-Type is {content_type}" in response.json()["detail"]
    assert not Heartbeat.objects.exists()


@pytest.mark.django_db
def test_it_accepts_json_with_a_charset(agent_client):
    response = agent_client.post(HEARTBEATS, data=json.dumps(OK), content_type="application/json; charset=utf-8")
    assert response.status_code == 201


# --- 429 ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_429_with_retry_after_once_a_key_is_over_its_rate(agent_client, prod_agent, settings):
    settings.TRACEFLUX_RATE_LIMITS = {**settings.TRACEFLUX_RATE_LIMITS, "heartbeats": "2/m"}
    assert [beat(agent_client).status_code for _ in range(2)] == [201, 201]
    response = beat(agent_client)
    assert response.status_code == 429
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    assert response.json() == {
        "detail": f"rate limit for heartbeats exceeded (2/m); retry in {retry_after} s",
        "retry_after": retry_after,
    }
    assert Heartbeat.objects.count() == 2
    assert failures.failure_counts(agent_id=prod_agent.pk)[429] == 1
    assert not AuditEvent.objects.filter(outcome="denied").exists()


@pytest.mark.django_db
def test_it_keeps_a_separate_budget_per_key_and_per_group(agent_client, prod_agent, api_client, settings):
    settings.TRACEFLUX_RATE_LIMITS = {**settings.TRACEFLUX_RATE_LIMITS, "heartbeats": "1/m"}
    assert beat(agent_client).status_code == 201
    assert beat(agent_client).status_code == 429
    assert agent_client.get(COMMANDS).status_code == 200  # another group
    other = AgentFactory(environment=prod_agent.environment)
    assert beat(api_client, **bearer(a_key(other))).status_code == 201  # another key


# --- failure counting --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_counts_401s_per_key_prefix_and_per_agent(api_client, prod_agent, prod_agent_key):
    stranger = "tfk_0123456789ab_" + "x" * 43
    for _ in range(3):
        beat(api_client, **bearer(stranger))
    beat(api_client)
    services.agent_key_revoke(key=AgentKey.objects.get(agent=prod_agent), actor=SYSTEM)
    beat(api_client, **bearer(prod_agent_key))
    assert failures.failure_counts(prefix="0123456789ab") == {401: 3, 403: 0, 429: 0}
    assert failures.failure_counts(prefix=None) == {401: 1, 403: 0, 429: 0}  # no key at all
    # A revoked key still names its agent, so the 401 is the agent's.
    assert failures.failure_counts(agent_id=prod_agent.pk) == {401: 1, 403: 0, 429: 0}


@pytest.mark.django_db
def test_it_does_not_count_successes_or_other_errors(agent_client, prod_agent):
    beat(agent_client)
    beat(agent_client, {"status": "sleepy"})
    assert failures.failure_counts(agent_id=prod_agent.pk) == {401: 0, 403: 0, 429: 0}


def test_it_keeps_the_last_hour_in_rolling_minute_buckets():
    start = 1_800_000_000.0 - (1_800_000_000.0 % 60)
    failures.failure_record(code=401, agent_id=7, now=start)
    failures.failure_record(code=401, agent_id=7, now=start + 59)
    failures.failure_record(code=403, agent_id=7, now=start + 60)
    failures.failure_record(code=500, agent_id=7, now=start + 60)
    failures.failure_record(code=401, prefix="0123456789ab", now=start)
    assert failures.failure_counts(agent_id=7, now=start + 60) == {401: 2, 403: 1, 429: 0}
    assert failures.failure_counts(agent_id=7, now=start + 59 * 60) == {401: 2, 403: 1, 429: 0}
    # An hour after the first minute, its bucket has rolled out of the window; the next minute's has not.
    assert failures.failure_counts(agent_id=7, now=start + 60 * 60) == {401: 0, 403: 1, 429: 0}
    assert failures.failure_counts(agent_id=7, now=start + 61 * 60) == {401: 0, 403: 0, 429: 0}
    assert failures.failure_counts(agent_id=7, minutes=120, now=start + 61 * 60) == {401: 2, 403: 1, 429: 0}
    assert failures.failure_counts(prefix="0123456789ab", now=start) == {401: 1, 403: 0, 429: 0}
    assert failures.failure_counts(agent_id=8, now=start) == {401: 0, 403: 0, 429: 0}


# --- keys: secrecy and last use ----------------------------------------------------------------------------------


def _every_stored_value() -> str:
    models = [AgentKey, AgentKey.history.model, EnrollmentToken, EnrollmentToken.history.model, AuditEvent,
              Agent, Agent.history.model]
    return json.dumps([list(model.objects.values()) for model in models], default=str)


@pytest.mark.django_db
def test_it_never_stores_a_key_or_enrollment_token_in_plaintext(api_client, environments, prod_agent, caplog):
    caplog.set_level(logging.DEBUG)
    direct = a_key(prod_agent)
    token = services.enrollment_token_create(
        environment=environments["prod"], actor=SYSTEM, expires_at=timezone.now() + timedelta(hours=1)
    )[1]
    enrolled = api_client.post(
        "/api/v1/agent/enroll/", {"token": token, "name": "edge-prod-2", "hostname": "h2"}, format="json"
    ).json()["key"]
    services.agent_key_revoke(key=AgentKey.objects.get(prefix=direct.split("_")[1]), actor=SYSTEM)
    beat(api_client, **bearer(direct))  # a 401 with a revoked key
    beat(api_client, **bearer(enrolled))
    beat(api_client, **bearer(enrolled[:-4] + "AAAA"))  # a wrong secret
    stored = _every_stored_value()
    for plaintext in (direct, token, enrolled):
        secret = plaintext.split("_", 2)[2]
        assert plaintext not in stored
        assert secret not in stored
        assert secret not in caplog.text
    assert "AAAA" not in caplog.text


@pytest.mark.django_db
def test_it_updates_last_used_at_at_most_once_a_minute(agent_client, prod_agent):
    key = AgentKey.objects.get(agent=prod_agent)
    assert key.last_used_at is None
    beat(agent_client)
    key.refresh_from_db()
    first = key.last_used_at
    assert first is not None
    beat(agent_client)
    key.refresh_from_db()
    assert key.last_used_at == first
    AgentKey.objects.filter(pk=key.pk).update(last_used_at=first - timedelta(seconds=61))
    beat(agent_client)
    key.refresh_from_db()
    assert key.last_used_at > first
    assert key.history.count() == 1  # last use is telemetry, never a history row


# --- OpenAPI -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_serves_an_openapi_schema_listing_the_agent_endpoints_and_their_answers(client):
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    paths = schema["paths"]
    expected = {
        ("/api/v1/agent/enroll/", "post"): {"201", "400", "401", "413", "415", "429"},
        ("/api/v1/agent/heartbeats/", "post"): {"201", "400", "401", "403", "413", "415", "429"},
        ("/api/v1/agent/commands/", "get"): {"200", "401", "403", "429"},
        ("/api/v1/agent/commands/{id}/ack/", "post"): {
            "200", "400", "401", "403", "404", "409", "413", "415", "429",
        },
    }
    for (path, method), codes in expected.items():
        assert set(paths[path][method]["responses"]) == codes, path
    heartbeat = paths["/api/v1/agent/heartbeats/"]["post"]
    assert heartbeat["security"] == [{"agentKey": []}]
    assert heartbeat["responses"]["429"]["headers"]["Retry-After"]
    assert "security" not in paths["/api/v1/agent/enroll/"]["post"]
    assert schema["components"]["securitySchemes"]["agentKey"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "tfk_<prefix>_<secret>",
        "description": "An agent key: `Authorization: Bearer tfk_<prefix>_<secret>`.",
    }
    rate_limited = schema["components"]["schemas"]["RateLimited"]
    assert set(rate_limited["properties"]) == {"detail", "retry_after"}


@pytest.mark.django_db
def test_it_renders_the_api_docs_from_local_files_only(client):
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()
    assert not re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, flags=re.IGNORECASE)
    assert '"validatorUrl": null' in html


def test_it_counts_with_the_clock_when_no_time_is_given():
    failures.failure_record(code=429, prefix="abcdefabcdef")
    assert failures.failure_counts(prefix="abcdefabcdef", now=time.time())[429] == 1
