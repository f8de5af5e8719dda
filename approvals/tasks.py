"""Periodic approval work (scheduled in settings.CELERY_BEAT_SCHEDULE). Each task only calls a service."""

from __future__ import annotations

from celery import shared_task

from .services import approval_expire_overdue


@shared_task(name="approvals.tasks.expire_overdue_approvals")
def expire_overdue_approvals() -> int:
    return approval_expire_overdue()
