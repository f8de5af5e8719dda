"""The one place that decides which replays a user sees and what they may do with them (HTML and API alike).

Not visible (the environment is not one the user may see) → Http404. Visible but not allowed to act → PermissionDenied
(403). Both views and API views call replay_for / incident_for and never filter on their own.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from artifacts.models import Artifact, ArtifactKind
from incidents.models import Environment, Incident
from incidents.selectors import (
    OPERATE as OPERATE_PERM,
)
from incidents.selectors import (
    REPLAY_DRY_RUN,
    REPLAY_EXECUTE,
    can_in_environment,
    visible_environments,
    visible_incidents,
)

from .models import ReplayExecution, ReplayMode

VIEW = "view"
DRY_RUN = "dry_run"
EXECUTE = "execute"
OPERATE = "operate"  # work on an incident itself: move it along its lifecycle, write in its journal
_PERMS = {DRY_RUN: REPLAY_DRY_RUN, EXECUTE: REPLAY_EXECUTE, OPERATE: OPERATE_PERM}
_WHAT = {DRY_RUN: "dry-run replays", EXECUTE: "execute replays", OPERATE: "operate on incidents"}


def visible_replays(*, user: Any) -> QuerySet[ReplayExecution]:
    return ReplayExecution.objects.filter(environment__in=visible_environments(user=user)).select_related(
        "incident", "environment", "artifact", "pipeline_version", "compare_version", "triggered_by", "approval"
    )


def may(*, user: Any, environment: Environment, action: str) -> bool:
    """May the user dry-run or execute replays, or operate on incidents, in this environment (which they can see)?"""
    return can_in_environment(user=user, environment=environment, perm=_PERMS[action])


def require(*, user: Any, environment: Environment, action: str) -> None:
    if not may(user=user, environment=environment, action=action):
        raise PermissionDenied(f"you may not {_WHAT[action]} in {environment.slug}")


def replay_for(*, user: Any, pk: Any, action: str = VIEW) -> ReplayExecution:
    """The replay, if the user can see it (else Http404) and, for an action, may do it (else PermissionDenied)."""
    try:
        execution = visible_replays(user=user).get(pk=int(pk))
    except (ReplayExecution.DoesNotExist, TypeError, ValueError):
        raise Http404(f"no replay #{pk} that you can see") from None
    if action != VIEW:
        require(user=user, environment=execution.environment, action=action)
    return execution


def action_for_mode(mode: str) -> str:
    return EXECUTE if mode == ReplayMode.EXECUTE else DRY_RUN


def incident_for(*, user: Any, key: Any, action: str = VIEW) -> Incident:
    """An incident by id or ref, if the user can see it (else Http404) and may do `action` there (else 403)."""
    incidents = visible_incidents(user=user)
    text = str(key)
    numeric = text.isascii() and text.isdigit() and len(text) < 19
    found = incidents.filter(pk=int(text)).first() if numeric else incidents.filter(ref=text).first()
    if found is None:
        raise Http404(f"no incident {key} that you can see")
    if action != VIEW:
        require(user=user, environment=found.environment, action=action)
    return found


def incident_bundles(incident: Incident) -> QuerySet[Artifact]:
    return Artifact.objects.filter(incident=incident, kind=ArtifactKind.INCIDENT_BUNDLE).select_related(
        "pipeline_version"
    ).order_by("-captured_at", "-pk")
