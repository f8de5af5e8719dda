"""Pages that span apps: the dashboard and the ops endpoints."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from approvals.selectors import visible_requests
from incidents import selectors
from traceflux.audit.selectors import visible_audit_events


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    environments = selectors.environments_with_decisions(user=request.user)
    context = {
        "environments": environments,
        "incidents": selectors.visible_incidents(user=request.user).exclude(status="resolved")[:10],
        "agents": selectors.visible_agents(user=request.user)[:20],
        "deployments": selectors.visible_deployments(user=request.user)[:10],
        # Break-glass stands in for a quorum: it must be impossible to miss, so it leads the page.
        "break_glass": visible_requests(user=request.user)
        .filter(break_glass=True)
        .select_related("environment", "break_glass_by")
        .order_by("-break_glass_at")[:10],
        "audit_events": visible_audit_events(
            environment_slugs=[env.slug for env, _ in environments], include_global=request.user.is_superuser
        )[:15],
    }
    return render(request, "traceflux/dashboard.html", context)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Readiness and metrics arrive with the operator-surfaces issue."""
    return JsonResponse({"status": "ok"})
