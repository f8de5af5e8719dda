"""Periodic work for the agent fleet (scheduled in settings.CELERY_BEAT_SCHEDULE). Each task only calls a service."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from .services import command_expire_overdue, heartbeat_prune


@shared_task(name="incidents.tasks.prune_heartbeats")
def prune_heartbeats() -> int:
    return heartbeat_prune(older_than=settings.TRACEFLUX_HEARTBEAT_RETENTION)


@shared_task(name="incidents.tasks.expire_overdue_commands")
def expire_overdue_commands() -> int:
    return command_expire_overdue()
