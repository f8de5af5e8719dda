"""The portal's Prometheus metrics that code increments as things happen (prometheus-client). Imports no app.

Apps call the small functions here (an upload, a finished replay); the middleware counts every response. Figures
computed at scrape time from the database, the cache and the broker are in traceflux.ops, which also serves them.

Under gunicorn with several workers, set PROMETHEUS_MULTIPROC_DIR (an empty directory, the same for every worker,
before they start): prometheus-client then keeps each process's values in files there and /metrics adds them up,
so the figures are totals and not one worker's share (docs/operations.md, gunicorn.conf.py).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase
from prometheus_client import Counter, Histogram, disable_created_metrics

disable_created_metrics()  # no *_created series: a series per label set is enough

# The first path segment, named: a bounded label, whatever paths are requested.
ENDPOINT_GROUPS = (
    ("/api/v1/agent/", "agent-api"),
    ("/api/", "api"),
    ("/admin/", "admin"),
    ("/replays/", "replays"),
    ("/approvals/", "approvals"),
    ("/incidents/", "incidents"),
    ("/audit/", "audit"),
)
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

http_responses = Counter(
    "traceflux_http_responses",
    "HTTP responses by endpoint group (agent-api, api, admin, replays, approvals, incidents, audit, ops, other) and "
    "status code.",
    ["group", "status"],
)
artifact_upload_bytes = Counter(
    "traceflux_artifact_upload_bytes",
    "Bytes of artifact files accepted by the upload API, duplicates included.",
    ["kind"],
)
artifact_dedup_hits = Counter(
    "traceflux_artifact_dedup_hits",
    "Uploads whose bytes were already stored in the agent's environment (answered 200 with duplicate: true).",
    ["kind"],
)
replay_duration = Histogram(
    "traceflux_replay_duration_seconds",
    "How long replays ran, from leaving the queue to their final status, by mode and final status.",
    ["mode", "status"],
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, float("inf")),
)


def endpoint_group(path: str) -> str:
    if path in OPS_PATHS:
        return "ops"
    for prefix, group in ENDPOINT_GROUPS:
        if path.startswith(prefix):
            return group
    return "other"


def artifact_uploaded(*, kind: str, size: int, duplicate: bool) -> None:
    """Count one accepted upload (the upload API calls it after the service stored or matched the file)."""
    artifact_upload_bytes.labels(kind=kind).inc(size)
    if duplicate:
        artifact_dedup_hits.labels(kind=kind).inc()


def replay_finished(*, mode: str, status: str, seconds: float) -> None:
    """Observe one replay's duration (a receiver of replays.signals.replay_finished calls it)."""
    replay_duration.labels(mode=mode, status=status).observe(max(seconds, 0.0))


class ResponseMetricsMiddleware:
    """Counts every response by endpoint group and status code, refusals (401, 403, 429) and errors included.

    First in MIDDLEWARE, so it also sees the answers of the middleware below it and the 500 of an unhandled error.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        http_responses.labels(group=endpoint_group(request.path_info), status=str(response.status_code)).inc()
        return response
