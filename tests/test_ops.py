"""The operations endpoints: /readyz (database, cache, broker) and /metrics (Prometheus text, behind a token)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from approvals.models import ApprovalRequest
from replays.signals import replay_finished
from tests.approvals.conftest import approve_all, request_for
from tests.artifacts.conftest import post_upload, snapshot_bytes
from tests.conftest import broker_url, redis_url
from tests.factories import DeploymentFactory
from tests.net import free_port
from tests.test_settings import clean_env
from traceflux import ops

ROOT = Path(__file__).resolve().parent.parent
METRIC_NAMES = {
    "traceflux_http_responses",
    "traceflux_artifact_upload_bytes",
    "traceflux_artifact_dedup_hits",
    "traceflux_replay_duration_seconds",
    "traceflux_approvals_pending",
    "traceflux_queue_depth",
    "traceflux_agent_api_failures_last_hour",
}


def scrape(client: Client, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one /metrics answer, by (sample name, sorted labels)."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """A counter's sample, 0 while it has not been counted yet (prometheus-client exports a label set once used)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def exported(samples: dict, name: str, **labels: str) -> float:
    """A sample that must be in the scrape (a gauge set on every scrape): absent is a failure, not a zero."""
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} is not in the scrape"
    return samples[key]


# --- /readyz -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_ready_when_the_database_and_cache_answer_and_tasks_run_eagerly(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok", "broker": "eager"}}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_it_answers_503_naming_the_cache_when_redis_is_unreachable(client):
    port = free_port()
    unreachable = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",  # what settings use when REDIS_URL is set
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
        }
    }
    with override_settings(CACHES=unreachable):
        started = time.monotonic()
        response = client.get("/readyz")
        took = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["cache"].startswith("error: ")
    assert (body["checks"]["database"], body["checks"]["broker"]) == ("ok", "eager")
    assert took < 5


@pytest.mark.needs("redis")
@pytest.mark.django_db
def test_it_answers_ready_with_a_redis_cache_that_answers(client):
    with override_settings(CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_url(),
                                               "KEY_PREFIX": f"readyz-{uuid.uuid4().hex[:8]}"}}):
        response = client.get("/readyz")
    assert (response.status_code, response.json()["checks"]["cache"]) == (200, "ok")


@pytest.mark.django_db
def test_it_answers_503_naming_the_broker_when_it_is_unreachable(client, settings):
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["broker"].startswith("error: ")
    assert checks["database"] == checks["cache"] == "ok"


@pytest.mark.needs("rabbitmq")
@pytest.mark.django_db
def test_it_answers_ready_with_a_broker_that_answers_and_reads_a_queue_depth(client, settings):
    settings.CELERY_BROKER_URL = broker_url()
    response = client.get("/readyz")
    assert (response.status_code, response.json()["checks"]["broker"]) == (200, "ok")

    queue = f"traceflux-test-depth-{uuid.uuid4().hex[:12]}"
    assert ops.queue_depth(queue) is None  # no such queue yet: unknown, and the scrape goes on
    with ops._broker_connection() as connection, connection.SimpleQueue(queue) as waiting:
        waiting.put({"task": 1})
        waiting.put({"task": 2})
    try:
        deadline = time.monotonic() + 5
        while ops.queue_depth(queue) != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ops.queue_depth(queue) == 2
    finally:
        with ops._broker_connection() as connection:
            connection.default_channel.queue_delete(queue)


# --- /metrics ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_exposes_the_metrics_in_prometheus_text_format(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert families >= METRIC_NAMES
    assert exported(scrape(client), "traceflux_queue_depth", queue="replays") == 0  # eager: nothing waits


@pytest.mark.django_db
def test_it_counts_a_401_of_the_agent_api_by_group_and_in_the_last_hours_buckets(client, api_client):
    before = scrape(client)
    response = api_client.post("/api/v1/agent/heartbeats/", {"status": "ok"}, format="json",
                               HTTP_AUTHORIZATION="Bearer tfa_0123456789ab_not-a-key")
    assert response.status_code == 401
    after = scrape(client)
    counted = "traceflux_http_responses_total"
    assert value(after, counted, group="agent-api", status="401") == value(before, counted, group="agent-api",
                                                                         status="401") + 1
    assert exported(after, "traceflux_agent_api_failures_last_hour", status="401") == 1
    assert exported(after, "traceflux_agent_api_failures_last_hour", status="429") == 0
    assert value(after, counted, group="ops", status="200") >= value(before, counted, group="ops", status="200") + 1


@pytest.mark.django_db
def test_it_counts_the_bytes_of_an_upload_and_a_dedup_hit(client, artifact_store, agent_key):
    key = agent_key
    content = snapshot_bytes()
    before = scrape(client)

    assert post_upload(client, key, content, kind="snapshot", filename="s.json").status_code == 201
    assert post_upload(client, key, content, kind="snapshot", filename="s.json").status_code == 200

    after = scrape(client)
    uploaded = value(after, "traceflux_artifact_upload_bytes_total", kind="snapshot") - value(
        before, "traceflux_artifact_upload_bytes_total", kind="snapshot")
    dedup = value(after, "traceflux_artifact_dedup_hits_total", kind="snapshot") - value(
        before, "traceflux_artifact_dedup_hits_total", kind="snapshot")
    assert (uploaded, dedup) == (2 * len(content), 1)


@pytest.mark.django_db
def test_it_gauges_the_pending_approvals_as_the_database_counts_them(client, operator, approver1, environments):
    request_for(DeploymentFactory(environment=environments["prod"]), by=operator)
    request_for(DeploymentFactory(environment=environments["prod"]), by=operator)
    approve_all(request_for(DeploymentFactory(environment=environments["staging"]), by=operator), approver1)
    pending = ApprovalRequest.objects.filter(status="pending").count()
    assert pending == 2
    assert value(scrape(client), "traceflux_approvals_pending") == pending


def test_it_observes_a_finished_replays_duration_by_mode_and_status():
    from prometheus_client import REGISTRY

    labels = {"mode": "dry_run", "status": "succeeded"}
    count = REGISTRY.get_sample_value("traceflux_replay_duration_seconds_count", labels) or 0.0
    under_a_minute = REGISTRY.get_sample_value("traceflux_replay_duration_seconds_bucket", {**labels, "le": "60.0"})
    finished = timezone.now()
    execution = SimpleNamespace(mode="dry_run", status="succeeded", started_at=finished - timedelta(seconds=42),
                                finished_at=finished)
    replay_finished.send(sender=None, execution=execution)
    replay_finished.send(sender=None, execution=SimpleNamespace(**{**vars(execution), "started_at": None}))
    assert REGISTRY.get_sample_value("traceflux_replay_duration_seconds_count", labels) == count + 1
    assert REGISTRY.get_sample_value("traceflux_replay_duration_seconds_bucket", {**labels, "le": "60.0"}) == (
        (under_a_minute or 0.0) + 1
    )


@pytest.mark.django_db
def test_it_protects_the_metrics_with_the_token_when_one_is_set(client, settings):
    settings.TRACEFLUX_METRICS_TOKEN = "metrics-token-0123456789"
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Basic bWV0cmljcw=="}).status_code == 401
    scrape(client, Authorization="Bearer metrics-token-0123456789")


@pytest.mark.django_db
def test_it_refuses_the_metrics_in_production_without_a_token(client, settings):
    settings.PRODUCTION = True
    settings.TRACEFLUX_METRICS_TOKEN = ""
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response.json() == {"detail": "metrics are disabled: set TRACEFLUX_METRICS_TOKEN"}


def test_it_adds_up_every_process_in_multiprocess_mode(tmp_path):
    """Two processes (as two gunicorn workers would) each answer a request; the second's /metrics counts both."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    code = (
        "from django.test import Client; c = Client(); assert c.get('/healthz').status_code == 200; "
        "import sys; sys.stdout.write(c.get('/metrics').content.decode())"
    )
    env = clean_env(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(directory))
    outputs = []
    for _ in range(2):
        result = subprocess.run([sys.executable, "manage.py", "shell", "--no-startup", "--verbosity", "0", "-c", code],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert 'traceflux_http_responses_total{group="ops",status="200"} 1.0' in outputs[0]
    # The first process's /healthz and /metrics (counted once answered), and the second's /healthz.
    assert 'traceflux_http_responses_total{group="ops",status="200"} 3.0' in outputs[1]
    assert len(list(directory.glob("counter_*.db"))) == 2
