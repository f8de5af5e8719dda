"""Redis restarted while replays are queued and running.

The portal's cache (rate limits, failure counters, refusal markers) and, here, Celery's result backend live in Redis;
the replays themselves live in PostgreSQL and travel through RabbitMQ. A private redis-server (never the shared one)
is killed while one replay runs and others wait in the queue, stays down for a while (replays are requested through
the API meanwhile), and starts again empty on the same port. Every replay must reach a final state: by finishing, or
by the reaper (run here as the beat would, with a clock past the timeouts) failing it with a reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from approvals.tokens import user_token_create
from incidents.services import agent_key_create
from replays.models import ACTIVE_STATUSES, ReplayExecution, ReplayStatus
from replays.services import replay_reap, replay_request_dry_run
from tests.replays.conftest import World
from traceflux.audit import SYSTEM

from .conftest import PrivateRedis, upload_big_bundle
from .test_worker_killed import running_stage
from .workers import SLOW_STAGES, fleet

pytestmark = [
    pytest.mark.faults,
    pytest.mark.xdist_group("faults"),
    pytest.mark.needs("postgresql", "rabbitmq", "redis"),
    pytest.mark.django_db(transaction=True),
]

QUEUED_AT_ONCE = 4
OUTAGE_SECONDS = 2.0


@pytest.fixture
def cache_on_private_redis(private_redis: PrivateRedis) -> Iterator[None]:
    """This process's cache on the private Redis, put back before the server is stopped (and before the suite's own
    cache clean-up runs, which must not reach for a server that is gone)."""
    cache = {**django_settings.CACHES["default"], "BACKEND": "django_redis.cache.RedisCache",
             "LOCATION": private_redis.url(0), "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1}}
    with override_settings(CACHES={"default": cache}):
        yield


def test_it_brings_every_replay_to_a_final_state_when_redis_restarts_mid_run(
    prod: World, operator, tmp_path, media_root, signing_key, private_redis: PrivateRedis, cache_on_private_redis,
    figure
):
    # This process (the portal) and the worker both use the private Redis: the cache, and the worker's results.
    bundle = upload_big_bundle(prod)
    _, token = user_token_create(user=operator, name="fault-test", actor=operator)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    _, key = agent_key_create(agent=prod.agent, actor=SYSTEM)
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION="Bearer tfk_nosuchkey_0000000000000000000000000000")

    with fleet(tmp_path, media_root, signing_key, app=SLOW_STAGES, REDIS_URL=private_redis.url(0),
               CELERY_RESULT_BACKEND=private_redis.url(1)) as workers:
        workers.start()
        executions = [replay_request_dry_run(incident=prod.incident, artifact=bundle, user=operator)
                      for _ in range(QUEUED_AT_ONCE)]
        first = workers.wait_for(executions[0], lambda e: running_stage(e) is not None or e.is_final,
                                 what="a stage to run", poll=0.01)
        assert running_stage(first) is not None, f"#{first.pk} finished before Redis could be restarted"

        private_redis.kill()
        when_down = sorted(ReplayExecution.objects.filter(pk__in=[e.pk for e in executions])
                           .values_list("status", flat=True))
        # Requested while Redis is down, through the real URL: the replay is in PostgreSQL and RabbitMQ, not Redis.
        response = api.post("/api/v1/replays/", {"mode": "dry_run", "incident": prod.incident.ref,
                                                 "artifact": bundle.pk}, format="json")
        assert response.status_code == 202, response.content
        executions.append(ReplayExecution.objects.get(pk=response.json()["id"]))
        # The agent API counts every request against its key's rate limit in Redis: while it is down, a clean 503
        # with Retry-After (not a 500), and an unknown key is still a 401 (its failure counter is skipped).
        heartbeat = agent.post("/api/v1/agent/heartbeats/", {"status": "ok"}, format="json")
        assert heartbeat.status_code == 503, heartbeat.content
        assert heartbeat["Retry-After"] == "5"
        assert heartbeat.json()["detail"] == "the cache that holds the rate limits did not answer; retry"
        assert stranger.post("/api/v1/agent/heartbeats/", {"status": "ok"}, format="json").status_code == 401
        time.sleep(max(0.0, OUTAGE_SECONDS))
        assert not private_redis.answers()
        private_redis.start()
        assert agent.post("/api/v1/agent/heartbeats/", {"status": "ok"}, format="json").status_code == 201

        settled_in = settle(executions, timeout=45)
        # The beat's sweep, with a clock past the timeouts: a run its worker never finished is requeued once, then
        # failed with a reason. (Here it finds nothing to do: the worker rode the outage out.)
        later = timezone.now() + django_settings.TRACEFLUX_REPLAY_RUNNING_TIMEOUT \
            + django_settings.TRACEFLUX_REPLAY_QUEUED_TIMEOUT
        reaped = [replay_reap(now=later), replay_reap(now=later + django_settings.TRACEFLUX_REPLAY_QUEUED_TIMEOUT)]
        worker_log = workers.logs()

    # What the outage did to the worker: results it could not store in Redis (the runs are in PostgreSQL all along).
    figure("results_not_stored_while_down", worker_log.count("Pool callback raised exception"))
    figure("statuses_when_redis_died", ",".join(when_down))
    figure("seconds_to_settle_after_restart", settled_in)
    figure("reaped", reaped)
    assert when_down.count(ReplayStatus.RUNNING) == 1 and when_down.count(ReplayStatus.QUEUED) >= 2, when_down

    final = {e.pk: (e.status, e.error) for e in ReplayExecution.objects.filter(pk__in=[e.pk for e in executions])}
    assert not [pk for pk, (status, _) in final.items() if status in ACTIVE_STATUSES], (final, worker_log)
    for status, error in final.values():
        assert status == ReplayStatus.SUCCEEDED or (status == ReplayStatus.FAILED and error), final
    # Nothing in a replay's path needs Redis, so each one finished on its own, and the reaper had nothing to do.
    assert settled_in is not None and reaped == [{"requeued": 0, "failed": 0}] * 2, (final, reaped, worker_log)
    assert {status for status, _ in final.values()} == {ReplayStatus.SUCCEEDED}, final


def settle(executions: list[ReplayExecution], *, timeout: float) -> float | None:
    """Seconds until every execution is final, or None when some still are not after `timeout`."""
    started = time.monotonic()
    pks = [execution.pk for execution in executions]
    while ReplayExecution.objects.filter(pk__in=pks, status__in=ACTIVE_STATUSES).exists():
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.2)
    return round(time.monotonic() - started, 1)
