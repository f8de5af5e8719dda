"""The approver's pages: inbox, review, decide, and promoting a pipeline version. Thin: the selectors narrow what a
user sees (404 outside it), the services decide (PermissionDenied → 403, Conflict → 409, ValidationError → form)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from incidents.selectors import APPROVE, environments_where, visible_environments, visible_pipeline_versions

from .forms import DecisionForm, PromoteForm
from .models import ApprovalDecision, ApprovalRequest, ApprovalStatus, Decision
from .selectors import pending_for, visible_requests
from .services import Conflict, approval_decide, approver_is_eligible, deployment_promote


def why_not_decide(*, user, request: ApprovalRequest) -> tuple[int, str] | None:
    """None when the user may decide this request now, else (HTTP status, reason in words).

    403 for who the user is (the requester, not an approver), 409 for the state of the request (closed, expired,
    already decided by this user). The page shows the reason and no buttons.
    """
    if request.status != ApprovalStatus.PENDING:
        return 409, f"This request is {request.status}; only a pending request can be decided."
    if request.is_expired():
        return 409, f"This request expired at {request.expires_at:%Y-%m-%d %H:%M} UTC; it can no longer be decided."
    if user.pk == request.requested_by_id:
        return 403, "You requested this: the requester cannot decide their own request."
    if not approver_is_eligible(user=user, environment=request.environment):
        return 403, f"You are not an approver in {request.environment.slug}."
    mine = next((d for d in request.decisions.all() if d.approver_id == user.pk), None)
    if mine is not None:
        return 409, f"You already decided ({mine.decision}) on {mine.created_at:%Y-%m-%d %H:%M} UTC."
    return None


def _refused(request: HttpRequest, approval: ApprovalRequest, status: int, detail: str) -> HttpResponse:
    return render(request, "approvals/refused.html", {"approval": approval, "detail": detail, "status": status},
                  status=status)


@login_required
@require_safe
def inbox(request: HttpRequest) -> HttpResponse:
    user = request.user
    environments = visible_environments(user=user).order_by("slug")
    selected = request.GET.get("environment", "")
    pending = pending_for(user=user).select_related("environment", "requested_by")
    mine = visible_requests(user=user).filter(requested_by=user, status=ApprovalStatus.PENDING)
    decisions = (
        ApprovalDecision.objects.filter(request__in=visible_requests(user=user))
        .filter(Q(approver=user) | Q(request__environment__in=environments_where(user=user, perm=APPROVE)))
        .select_related("request__environment", "approver")
        .order_by("-created_at", "-pk")
    )
    if selected:
        pending = pending.filter(environment__slug=selected)
        mine = mine.filter(environment__slug=selected)
        decisions = decisions.filter(request__environment__slug=selected)
    context = {
        "environments": environments,
        "selected": selected,
        "pending": pending,
        "mine": mine,
        "decisions": decisions[:25],
        "now": timezone.now(),
    }
    return render(request, "approvals/inbox.html", context)


def _review_context(request: HttpRequest, approval: ApprovalRequest, **forms) -> dict:
    approval = visible_requests(user=request.user).prefetch_related("decisions__approver").get(pk=approval.pk)
    summary = approval.summary or {}
    links = summary.get("links") or []
    if isinstance(links, dict):
        links = [{"label": key, "url": value} for key, value in links.items()]
    shown = {"environment", "posture", "pipeline_version", "spec_hash", "artifact", "scope", "window", "targets",
             "planned_actions", "capabilities", "links", "reason", "requested_by"}
    version = summary.get("pipeline_version")
    return {
        "approval": approval,
        "summary": summary,
        "spec_hash": summary.get("spec_hash") or (version.get("spec_hash") if isinstance(version, dict) else None),
        "links": links,
        "other_summary": {key: value for key, value in summary.items() if key not in shown},
        "decisions": list(approval.decisions.all()),
        "why_not": (why_not_decide(user=request.user, request=approval) or (None, None))[1],
        "time_left": approval.expires_at - timezone.now(),
        "approve_form": forms.get("approve_form") or DecisionForm(decision=Decision.APPROVE, prefix="approve"),
        "deny_form": forms.get("deny_form") or DecisionForm(decision=Decision.DENY, prefix="deny"),
    }


@login_required
@require_safe
def review(request: HttpRequest, pk: int) -> HttpResponse:
    approval = get_object_or_404(visible_requests(user=request.user), pk=pk)
    return render(request, "approvals/review.html", _review_context(request, approval))


@login_required
@require_POST
def decide(request: HttpRequest, pk: int, decision: str) -> HttpResponse:
    approval = get_object_or_404(visible_requests(user=request.user), pk=pk)
    form = DecisionForm(request.POST, decision=decision, prefix=decision)
    if form.is_valid():
        try:
            approval = approval_decide(
                request=approval, approver=request.user, decision=decision, comment=form.cleaned_data["comment"]
            )
        except PermissionDenied as exc:
            return _refused(request, approval, 403, str(exc))
        except Conflict as exc:
            return _refused(request, approval, 409, str(exc))
        except ValidationError as exc:
            for message in exc.messages:
                form.add_error("comment", message)
        else:
            verb = "approved" if decision == Decision.APPROVE else "denied"
            messages.success(request, f"You {verb} request #{approval.pk}; it is now {approval.status}.")
            return redirect("approvals:review", pk=approval.pk)
    # The form is wrong; a person who may not decide at all is told that first, with the status that says it.
    refusal = why_not_decide(user=request.user, request=approval)
    if refusal:
        return _refused(request, approval, *refusal)
    forms = {f"{decision}_form": form}
    return render(request, "approvals/review.html", _review_context(request, approval, **forms), status=400)


@login_required
@require_http_methods(["GET", "POST"])
def promote(request: HttpRequest, pipeline_version_id: int) -> HttpResponse:
    version = get_object_or_404(visible_pipeline_versions(user=request.user), pk=pipeline_version_id)
    if request.method == "POST":
        form = PromoteForm(request.POST, user=request.user)
        if form.is_valid():
            environment = form.cleaned_data["environment"]
            try:
                deployment, approval = deployment_promote(
                    pipeline_version=version,
                    environment=environment,
                    requested_by=request.user,
                    reason=form.cleaned_data["reason"],
                )
            except ValidationError as exc:
                for message in exc.messages:
                    form.add_error(None, message)
            else:
                if approval is not None:
                    messages.success(
                        request,
                        f"Deployment #{deployment.pk} of {version.label} to {environment.slug} waits for "
                        f"{approval.required_approvals} approval(s): request #{approval.pk}.",
                    )
                    return redirect("approvals:review", pk=approval.pk)
                messages.success(
                    request,
                    f"Deployment #{deployment.pk} of {version.label} to {environment.slug} is {deployment.status}.",
                )
                return redirect(reverse("admin:incidents_deployment_change", args=[deployment.pk]))
        status = 400
    else:
        initial = {"environment": request.GET.get("environment")} if request.GET.get("environment") else {}
        form = PromoteForm(user=request.user, initial=initial)
        status = 200
    return render(request, "approvals/promote.html", {"version": version, "form": form}, status=status)
