"""Pages that span apps: the dashboard and the ops endpoints."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

from approvals.selectors import pending_for, visible_requests
from incidents import selectors
from incidents.models import Incident, IncidentStatus
from replays.models import ReplayStatus
from replays.selectors import visible_replays
from traceflux.audit.models import Outcome
from traceflux.audit.selectors import visible_audit_events

OPEN_INCIDENTS_SHOWN = 50
LIST_SHOWN = 10
AGENTS_SHOWN = 20


@login_required
@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    """What needs attention now, in the environments the user may see: each list is one bounded query."""
    user = request.user
    environments = selectors.environments_with_decisions(user=user)
    open_incidents = selectors.visible_incidents(user=user).exclude(status=IncidentStatus.RESOLVED)
    open_counts = {
        row["environment__slug"]: row["count"]
        for row in open_incidents.order_by().values("environment__slug").annotate(count=Count("pk"))
    }
    by_environment: dict[str, list[Incident]] = {}
    for incident in open_incidents.order_by("-window_start", "-pk")[:OPEN_INCIDENTS_SHOWN]:
        by_environment.setdefault(incident.environment.slug, []).append(incident)
    events = visible_audit_events(
        environment_slugs=[env.slug for env, _ in environments], include_global=user.is_superuser
    )
    replays = visible_replays(user=user)
    context = {
        "environments": environments,
        "incidents_by_environment": [
            (slug, open_counts.get(slug, len(rows)), rows) for slug, rows in sorted(by_environment.items())
        ],
        "open_incident_total": sum(open_counts.values()),
        "my_approvals": pending_for(user=user)[:LIST_SHOWN],
        "recent_replays": replays.order_by("-created_at", "-pk")[:LIST_SHOWN],
        "stale_agents": selectors.visible_agents(user=user).filter(enabled=True).stale().order_by(
            F("last_seen_at").asc(nulls_first=True), "name"
        )[:AGENTS_SHOWN],
        "rejected_replays": replays.filter(status=ReplayStatus.REJECTED).order_by("-created_at", "-pk")[:LIST_SHOWN],
        # replay.rejected events are the rejected replays above: the rest are the other refusals.
        "denied_events": events.filter(outcome=Outcome.DENIED).exclude(action="replay.rejected")[:LIST_SHOWN],
        "agents": selectors.visible_agents(user=user)[:AGENTS_SHOWN],
        "deployments": selectors.visible_deployments(user=user)[:LIST_SHOWN],
        # Break-glass stands in for a quorum: it must be impossible to miss, so it leads the page.
        "break_glass": visible_requests(user=user)
        .filter(break_glass=True)
        .select_related("environment", "break_glass_by")
        .order_by("-break_glass_at")[:LIST_SHOWN],
        "audit_events": events[:15],
    }
    return render(request, "traceflux/dashboard.html", context)


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Readiness and metrics arrive with the operator-surfaces issue."""
    return JsonResponse({"status": "ok"})


# The tab icon: a pulse on the console's dark blue. Served as SVG at the address browsers ask of every page, the
# admin's included, so no page logs a 404 for it and nothing has to be collected first (like the inline CSS).
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1d2330"/>'
    '<path d="M2 9h3l2-5 2 8 2-3h3" fill="none" stroke="#6ea8ff" stroke-width="1.6" stroke-linejoin="round"/></svg>'
)


@require_safe
@cache_control(public=True, max_age=86400)
def favicon(request: HttpRequest) -> HttpResponse:
    return HttpResponse(FAVICON_SVG, content_type="image/svg+xml")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404 for a URL that matches no route. Under /api/ the answer is JSON with a `detail`, like every other API
    error, so an agent or a script never has to parse an HTML page; elsewhere it is Django's own page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"no API endpoint at {request.path[:200]}"}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)
