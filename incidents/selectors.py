"""The single place that decides what a user may see and act on, per environment (django-guardian)."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from guardian.shortcuts import get_objects_for_user

from .models import Agent, Deployment, Environment, Incident, PipelineVersion, PostureAction, PostureDecision
from .posture import posture_decision

VIEW = "incidents.view_environment"
OPERATE = "incidents.operate_environment"
APPROVE = "incidents.approve_environment"
REPLAY_DRY_RUN = "incidents.replay_dry_run"
REPLAY_EXECUTE = "incidents.replay_execute"


def visible_environments(*, user) -> QuerySet[Environment]:
    """Environments the user may see: superusers see all; others need view_environment (global or per object)."""
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated or not user.is_active:
        return Environment.objects.none()
    return get_objects_for_user(user, VIEW, klass=Environment, accept_global_perms=True)


def visible_environment_slugs(*, user) -> list[str]:
    return list(visible_environments(user=user).values_list("slug", flat=True))


def environments_where(*, user, perm: str) -> QuerySet[Environment]:
    """Visible environments where the user also holds `perm` (operate or approve)."""
    visible = visible_environments(user=user)
    if user.is_superuser:
        return visible
    return visible.filter(pk__in=get_objects_for_user(user, perm, klass=Environment, accept_global_perms=True))


def can_see_environment(*, user, environment: Environment) -> bool:
    return visible_environments(user=user).filter(pk=environment.pk).exists()


def can_in_environment(*, user, environment: Environment, perm: str) -> bool:
    return environments_where(user=user, perm=perm).filter(pk=environment.pk).exists()


def visible_agents(*, user) -> QuerySet[Agent]:
    return Agent.objects.filter(environment__in=visible_environments(user=user)).select_related("environment")


def visible_deployments(*, user) -> QuerySet[Deployment]:
    return Deployment.objects.filter(environment__in=visible_environments(user=user)).select_related(
        "environment", "pipeline_version", "requested_by"
    )


def visible_incidents(*, user) -> QuerySet[Incident]:
    return Incident.objects.filter(environment__in=visible_environments(user=user)).select_related(
        "environment", "source_agent", "deployment__pipeline_version"
    )


def visible_pipeline_versions(*, user) -> QuerySet[PipelineVersion]:
    """Pipeline versions are global policy, not environment data: any signed-in staff member may read them."""
    if user is None or not user.is_authenticated:
        return PipelineVersion.objects.none()
    return PipelineVersion.objects.select_related("created_by", "parent")


def pipeline_version_for(spec_hash: str) -> PipelineVersion | None:
    """The pipeline version with this spec hash, when the portal knows it (an artifact's manifest names one)."""
    return PipelineVersion.objects.filter(spec_hash=spec_hash).first() if spec_hash else None


def pipeline_versions_for(spec_hashes: Iterable[str]) -> dict[str, PipelineVersion]:
    """pipeline_version_for of many hashes in one query: {spec_hash: version} for the hashes the portal knows."""
    wanted = {value for value in spec_hashes if value}
    if not wanted:
        return {}
    return {version.spec_hash: version for version in PipelineVersion.objects.filter(spec_hash__in=wanted)}


def environments_with_decisions(*, user) -> list[tuple[Environment, dict[str, PostureDecision]]]:
    return [
        (env, {action: posture_decision(env, action) for action in PostureAction.values})
        for env in visible_environments(user=user)
    ]
