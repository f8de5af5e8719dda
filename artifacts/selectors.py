"""Reads the artifacts app needs: what an operator may see, and what was running where at a given moment."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from incidents.models import Agent, Deployment, DeploymentStatus, Heartbeat
from incidents.selectors import visible_environments

from .models import Artifact


def visible_artifacts(*, user) -> QuerySet[Artifact]:
    """Artifacts in the environments the user may see: the one place the console narrows them."""
    return Artifact.objects.filter(environment__in=visible_environments(user=user)).select_related(
        "environment", "agent", "incident", "pipeline_version"
    )


def deployment_at(*, agent: Agent, moment: datetime) -> Deployment | None:
    """The deployment running on `agent` at `moment`.

    First the agent's own word: its latest heartbeat at or before the moment that names a deployment of its
    environment. Else the environment's deployment that was active then, from the deployments' history. Else the one
    active now. None when the environment has never had an active deployment.
    """
    reported = (
        Heartbeat.objects.filter(
            agent=agent,
            received_at__lte=moment,
            deployment__isnull=False,
            deployment__environment_id=agent.environment_id,
        )
        .order_by("-received_at")
        .values_list("deployment_id", flat=True)
        .first()
    )
    if reported is not None:
        return Deployment.objects.get(pk=reported)
    then = (
        Deployment.history.as_of(moment)
        .filter(environment_id=agent.environment_id, status=DeploymentStatus.ACTIVE)
        .order_by("-id")
        .first()
    )
    if then is not None:
        found = Deployment.objects.filter(pk=then.pk).first()
        if found is not None:
            return found
    return Deployment.objects.filter(environment_id=agent.environment_id, status=DeploymentStatus.ACTIVE).first()
