"""Replay tasks. Each only calls a service; the services are idempotent, so a redelivered task is harmless."""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from .services import replay_reap, replay_run


# No queue= here: the `replays` queue comes from CELERY_TASK_ROUTES. Celery lets a task's own queue option win over
# task_routes, so naming it here too would make the setting (and any operator's re-routing) silently ineffective.
@shared_task(
    bind=True,
    name="replays.tasks.run_replay",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.TRACEFLUX_REPLAY_SOFT_TIME_LIMIT,
    time_limit=settings.TRACEFLUX_REPLAY_TIME_LIMIT,
)
def run_replay(self, execution_id: int) -> str | None:
    try:
        execution = replay_run(execution_id=execution_id, task_id=self.request.id or "")
    except SoftTimeLimitExceeded:  # pragma: no cover - replay_run fails the run itself; this is the last resort
        return "timed out"
    return execution.status if execution is not None else None


@shared_task(name="replays.tasks.reap")
def reap() -> dict[str, int]:
    return replay_reap()
