"""Project-level Celery tasks. `ping` proves that a worker takes tasks from the broker and answers."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="traceflux.tasks.ping")
def ping() -> str:
    return "pong"
