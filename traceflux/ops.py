"""Operations endpoints: readiness (/readyz) and Prometheus metrics (/metrics). /healthz (liveness) is in views.

/readyz answers 200 when the database, the cache and the broker answer within a short timeout, else 503 naming what
failed. /metrics serves, through prometheus-client, what code counted as it happened (traceflux.metrics: responses,
uploads, replay durations; summed over every process in multiprocess mode) and what is read at scrape time (pending
approvals, the replays queue's depth, the agent API's refusals in the last hour).
"""

from __future__ import annotations

import hmac
import logging
import os
import uuid
from collections.abc import Callable, Iterator

from django.conf import settings
from django.core.cache import caches
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from kombu import Connection
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from approvals.models import ApprovalRequest, ApprovalStatus
from incidents.failures import failure_totals

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0  # seconds, for each check that can wait on the network
READY = frozenset({"ok", "eager"})


# --- readiness ---------------------------------------------------------------------------------------------------


def _broker_connection() -> Connection:
    """A connection to the configured broker that gives up quickly (connect, then every read and write)."""
    from traceflux.celery import app

    timeouts = {"read_timeout": CHECK_TIMEOUT, "write_timeout": CHECK_TIMEOUT,  # amqp
                "socket_timeout": CHECK_TIMEOUT, "socket_connect_timeout": CHECK_TIMEOUT}  # redis
    return app.connection_for_read(settings.CELERY_BROKER_URL, connect_timeout=CHECK_TIMEOUT,
                                   transport_options=timeouts)


def check_database() -> str:
    # The connection's own connect timeout applies: with PostgreSQL, add ?connect_timeout=2 to DATABASE_URL.
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def check_cache() -> str:
    # The Redis cache's socket timeouts are 2 s (settings.CACHES).
    cache = caches["default"]
    key = f"readyz:{uuid.uuid4().hex}"
    cache.set(key, "1", timeout=10)
    try:
        if cache.get(key) != "1":
            return "error: a value set in the cache was not read back"
    finally:
        cache.delete(key)
    return "ok"


def check_broker() -> str:
    if not settings.CELERY_BROKER_URL:
        return "eager"  # the embedded mode: tasks run in-process, there is no broker to reach
    with _broker_connection() as connection:
        connection.ensure_connection(max_retries=0, timeout=CHECK_TIMEOUT)
    return "ok"


CHECKS: dict[str, Callable[[], str]] = {"database": check_database, "cache": check_cache, "broker": check_broker}


def _run(name: str, check: Callable[[], str]) -> str:
    try:
        return check()
    except Exception as exc:
        # The endpoint is unauthenticated: it names the failing part and the kind of error, the log has the details.
        log.warning("readyz: the %s check failed: %s: %s", name, type(exc).__name__, exc)
        return f"error: {type(exc).__name__}"


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when the database, the cache and the broker answer; 503 naming each part that does not."""
    checks = {name: _run(name, check) for name, check in CHECKS.items()}
    ready = all(result in READY for result in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


# --- metrics read at scrape time ---------------------------------------------------------------------------------


def replay_queue() -> str:
    return settings.CELERY_TASK_ROUTES["replays.tasks.run_replay"]["queue"]


def queue_depth(queue: str) -> int | None:
    """Messages waiting in a broker queue (a passive declare: nothing is created); 0 without a broker, None when the
    broker does not answer or has no such queue yet."""
    if not settings.CELERY_BROKER_URL:
        return 0
    try:
        with _broker_connection() as connection:
            connection.ensure_connection(max_retries=0, timeout=CHECK_TIMEOUT)
            _, messages, _ = connection.default_channel.queue_declare(queue=queue, passive=True)
            return int(messages)
    except Exception as exc:
        log.warning("metrics: the depth of queue %s is unknown: %s: %s", queue, type(exc).__name__, exc)
        return None


class OpsCollector:
    """Gauges computed at scrape time. Each is left out, with a warning in the log, when its source fails."""

    def collect(self) -> Iterator[Metric]:
        for build in (self._pending_approvals, self._queue_depth, self._agent_failures):
            try:
                metric = build()
            except Exception as exc:
                log.warning("metrics: %s failed: %s: %s", build.__name__, type(exc).__name__, exc)
                continue
            if metric is not None:
                yield metric

    def _pending_approvals(self) -> Metric:
        gauge = GaugeMetricFamily("traceflux_approvals_pending", "Approval requests waiting for a decision.")
        gauge.add_metric([], ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING).count())
        return gauge

    def _queue_depth(self) -> Metric | None:
        queue = replay_queue()
        depth = queue_depth(queue)
        if depth is None:
            return None
        gauge = GaugeMetricFamily("traceflux_queue_depth", "Tasks waiting in a broker queue (0 without a broker).",
                                  labels=["queue"])
        gauge.add_metric([queue], depth)
        return gauge

    def _agent_failures(self) -> Metric:
        gauge = GaugeMetricFamily(
            "traceflux_agent_api_failures_last_hour",
            "401, 403 and 429 answers of the agent API in the last hour, from its per-minute buckets "
            "(incidents.failures).",
            labels=["status"],
        )
        for code, count in sorted(failure_totals(minutes=60).items()):
            gauge.add_metric([str(code)], count)
        return gauge


class _ProcessMetrics:
    """This process's registry, when there is one process (no PROMETHEUS_MULTIPROC_DIR)."""

    def collect(self) -> Iterator[Metric]:
        return REGISTRY.collect()


def registry() -> CollectorRegistry:
    """What one scrape reads: every process's counted metrics, and the gauges computed now."""
    scrape = CollectorRegistry(auto_describe=False)  # no collect() at registration: the gauges are read once
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(scrape)
    else:
        scrape.register(_ProcessMetrics())  # type: ignore[arg-type]
    scrape.register(OpsCollector())  # type: ignore[arg-type]
    return scrape


# --- the endpoint ------------------------------------------------------------------------------------------------


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """TRACEFLUX_METRICS_TOKEN set: a matching `Authorization: Bearer` is required. Unset: open in the embedded mode,
    refused in production."""
    token: str = settings.TRACEFLUX_METRICS_TOKEN
    if not token:
        if settings.PRODUCTION:
            return JsonResponse({"detail": "metrics are disabled: set TRACEFLUX_METRICS_TOKEN"}, status=403)
        return None
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        response = JsonResponse({"detail": "metrics need an Authorization: Bearer token"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        return JsonResponse({"detail": "the metrics token does not match"}, status=403)
    return None


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry()), content_type=content_type)

