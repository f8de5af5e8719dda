"""The replay pages: run history, new replay, the run view (with its live stages partial), compare, and downloads.

Thin: replays.selectors decides what a user sees (Http404 outside it) and may do (PermissionDenied → 403 page);
replays.services does every write (ValidationError → the form again, naming the field; Conflict or TransitionError →
409 with the reason). Reading the stored report and drawing it is presentation, done here and in timeline_svg.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from approvals.models import ApprovalStatus
from approvals.services import Conflict
from artifacts.models import artifact_storage
from incidents.models import PostureAction, PostureDecision
from incidents.posture import posture_decision
from incidents.selectors import pipeline_version_for, visible_environments, visible_pipeline_versions
from traceflux.audit.selectors import events_for_targets
from traceflux.statemachine import TransitionError

from . import selectors, services
from .forms import HistoryFilterForm, NewReplayForm, ReasonForm
from .models import ReplayExecution, ReplayMode, ReplayStatus
from .timeline_svg import incident_name, parse_ts, timeline_svg

PAGE_SIZE = 50
COMPARE_CANDIDATES = 10

View = Callable[..., HttpResponse]


def refusal_pages(*, subject: str, links: Callable[[dict[str, Any]], list[tuple[str, str]]]) -> Callable[[View], View]:
    """A view decorator: PermissionDenied → 403 page, Conflict/TransitionError → 409 page, each with the reason and
    the links `links(view kwargs)` gives back to where the user came from. `subject` names what is in a state
    ("run", "incident")."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                return view(request, *args, **kwargs)
            except PermissionDenied as exc:
                status, detail = 403, str(exc)
            except (Conflict, TransitionError) as exc:
                status, detail = 409, str(exc)
            context = {"status": status, "detail": detail or "You may not do this.", "subject": subject,
                       "links": links(kwargs)}
            return render(request, "replays/refused.html", context, status=status)

        return wrapped

    return decorate


def _run_links(kwargs: dict[str, Any]) -> list[tuple[str, str]]:
    pk = kwargs.get("pk")
    back = [(reverse("replays:detail", args=[pk]), f"Back to replay #{pk}")] if pk else []
    return [*back, (reverse("replays:history"), "Run history")]


refusals = refusal_pages(subject="run", links=_run_links)


def as_id(text: str) -> int | None:
    """A row id typed by a person ("42"), or None: ASCII digits only, small enough for any database's bigint."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


# --- run history -------------------------------------------------------------------------------------------------


@login_required
@require_safe
def history(request: HttpRequest) -> HttpResponse:
    """Every run the user can see, newest first, filtered, paged by keyset (`?before=<id>`): no COUNT over the table."""
    user = request.user
    form = HistoryFilterForm(
        request.GET,
        environments=visible_environments(user=user).order_by("slug"),
        versions=visible_pipeline_versions(user=user).order_by("label"),
    )
    replays = selectors.visible_replays(user=user)
    problem = ""
    status = 200
    before = request.GET.get("before", "").strip()
    if before:
        cursor_pk = as_id(before)
        cursor = replays.filter(pk=cursor_pk).values_list("created_at", "pk").first() if cursor_pk else None
        if cursor is None:
            problem, status = f"before={before}: no run with that id that you can see to page from", 400
        else:
            replays = replays.filter(Q(created_at__lt=cursor[0]) | Q(created_at=cursor[0], pk__lt=cursor[1]))
    rows: list[ReplayExecution] = []
    next_url = ""
    if not form.is_valid():
        status = 400
    elif not problem:
        rows = list(form.narrow(replays).order_by("-created_at", "-pk")[: PAGE_SIZE + 1])
        if len(rows) > PAGE_SIZE:
            rows = rows[:PAGE_SIZE]
            query = request.GET.copy()
            query["before"] = str(rows[-1].pk)
            next_url = f"?{query.urlencode()}"
    first_query = request.GET.copy()
    first_query.pop("before", None)
    incident_key = (form.cleaned_data.get("incident") or "").strip() if form.is_valid() else ""
    context = {
        "form": form,
        "rows": rows,
        "next_url": next_url,
        "first_url": f"?{first_query.urlencode()}" if before else "",
        "problem": problem,
        "incident_key": incident_key,
        "filtered": any(form.cleaned_data.get(k) for k in form.fields) if form.is_valid() else True,
    }
    return render(request, "replays/history.html", context, status=status)


# --- new replay --------------------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
@refusals
def new(request: HttpRequest) -> HttpResponse:
    """GET: the dry-run form for `?incident=<ref or id>`; POST: request the dry run and go to its run view."""
    key = (request.GET.get("incident") or request.POST.get("incident") or "").strip()
    if not key:
        status = 400 if request.method == "POST" else 200
        return render(request, "replays/new.html", {"incident": None}, status=status)
    incident = selectors.incident_for(user=request.user, key=key, action=selectors.DRY_RUN)
    bundles = selectors.incident_bundles(incident)
    versions = visible_pipeline_versions(user=request.user)
    if request.method == "POST":
        form = NewReplayForm(request.POST, bundles=bundles, versions=versions)
        if form.is_valid():
            try:
                execution = services.replay_request_dry_run(incident=incident, user=request.user,
                                                            **form.service_inputs())
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                if execution.status == ReplayStatus.REJECTED:
                    messages.error(request, f"Dry run #{execution.pk} was rejected: see its failed checks.")
                else:
                    messages.success(request, f"Dry run #{execution.pk} of {incident.ref} is {execution.status}.")
                return redirect("replays:detail", pk=execution.pk)
        status = 400
    else:
        initial: dict[str, Any] = {}
        first = bundles.first()
        if first is not None:
            resolved = pipeline_version_for(first.spec_hash)
            initial = {"artifact": first.pk, "pipeline_version": resolved.pk if resolved else None}
        form = NewReplayForm(bundles=bundles, versions=versions, initial=initial)
        status = 200
    context = {"incident": incident, "form": form, "has_bundles": bundles.exists()}
    return render(request, "replays/new.html", context, status=status)


# --- the run view ------------------------------------------------------------------------------------------------


def load_report(execution: ReplayExecution) -> tuple[dict[str, Any] | None, str]:
    """The stored report as JSON, or None with the reason it could not be read ("" when there is none yet)."""
    if not execution.report_name:
        return None, ""
    try:
        with artifact_storage().open(execution.report_name, "rb") as handle:
            report = json.load(handle)
    except (OSError, ValueError) as exc:
        return None, f"the stored report {execution.report_name} could not be read ({type(exc).__name__})"
    return (report, "") if isinstance(report, dict) else (None, "the stored report is not a JSON object")


def incident_titles(report: Mapping[str, Any] | None) -> dict[str, str]:
    if not report:
        return {}
    return {str(i.get("key")): str(i.get("title") or "") for i in report.get("incidents") or [] if isinstance(i, dict)}


def _stage_rows(execution: ReplayExecution) -> list[dict[str, Any]]:
    rows = []
    for name in execution.stage_names:
        entry = (execution.stages or {}).get(name) or {}
        started, finished = parse_ts(entry.get("started_at")), parse_ts(entry.get("finished_at"))
        seconds = (finished - started).total_seconds() if started and finished else None
        status = entry.get("status") or ("skipped" if execution.is_final else "waiting")
        rows.append({"name": name, "status": status, "started_at": started, "finished_at": finished,
                     "seconds": seconds, "counts": entry.get("counts") or {}})
    return rows


def _live_context(execution: ReplayExecution) -> dict[str, Any]:
    return {"execution": execution, "stage_rows": _stage_rows(execution)}


def _button(applies: bool, why_not: str | None = None, note: str = "") -> dict[str, Any]:
    return {"applies": applies, "why_not": why_not, "note": note}


def _buttons(user: Any, execution: ReplayExecution, approval: Any) -> dict[str, dict[str, Any]]:
    """Which action buttons the run view shows, and for each the reason it is disabled (None when it is not)."""
    environment = execution.environment
    succeeded_dry_run = execution.mode == ReplayMode.DRY_RUN and execution.status == ReplayStatus.SUCCEEDED
    may_execute = selectors.may(user=user, environment=environment, action=selectors.EXECUTE)
    no_execute = f"you may not execute replays in {environment.slug}"
    buttons = {"approval": _button(False), "execute": _button(False)}
    if succeeded_dry_run:
        slug = environment.slug
        decision = posture_decision(environment, PostureAction.EXECUTE)
        note = ""
        no_approval = {
            PostureDecision.ALLOW: f"No approval is needed: execute is allowed in {slug}.",
            PostureDecision.DRY_RUN_ONLY: f"{slug} allows dry runs only: an execute cannot be approved there.",
            PostureDecision.DENY: f"Execute is denied in {slug} by its posture.",
        }
        producer = pipeline_version_for(execution.artifact.spec_hash)
        version_problem = services.version_problem(execution, producer)
        if decision in no_approval:
            buttons["approval"] = _button(False, note=no_approval[decision])
        else:
            why_not = no_execute if not may_execute else services.approval_request_problem(
                execution, approval=approval, producer=producer
            )
            buttons["approval"] = _button(True, why_not or None)
            if approval is None or approval.status != ApprovalStatus.APPROVED:
                note = (f"{slug} requires {environment.required_approvals} approval(s): without an approved request "
                        "the execute is rejected at preflight.")
        if version_problem:
            note += f" Preflight will reject it: {version_problem}."
        buttons["execute"] = _button(True, None if may_execute else no_execute, note.strip())
    cancellable = not execution.is_final and execution.status != ReplayStatus.DISPATCHING
    if cancellable:
        action = selectors.action_for_mode(execution.mode)
        allowed = selectors.may(user=user, environment=environment, action=action)
        buttons["cancel"] = _button(True, None if allowed else f"you may not cancel replays in {environment.slug}")
    else:
        buttons["cancel"] = _button(False)
    return buttons


def _diff_sections(execution: ReplayExecution, report: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not report:
        return []
    diffs = report.get("diffs") or {}
    this = execution.pipeline_version.label
    sections = []
    if diffs.get("compare"):
        other = execution.compare_version.label if execution.compare_version_id else "the compare version"
        sections.append({"anchor": "compare", "diff": diffs["compare"], "before": f"{other} (compare version)",
                         "after": f"{this} (this run)", "title": f"Diff against {other}"})
    if diffs.get("baseline"):
        sections.append({"anchor": "baseline", "diff": diffs["baseline"], "before": "production baseline",
                         "after": f"{this} (this run)", "title": "Diff against the production baseline"})
    return sections


def _run_context(request: HttpRequest, execution: ReplayExecution, **forms: Any) -> dict[str, Any]:
    user = request.user
    report, report_problem = load_report(execution)
    titles = incident_titles(report)
    approval = None
    if execution.mode == ReplayMode.DRY_RUN and execution.status == ReplayStatus.SUCCEEDED:
        approval = services.execute_approval(execution)
    commands = []
    if execution.mode == ReplayMode.EXECUTE:
        commands = list(services.replay_commands(execution=execution).select_related("agent").order_by("pk"))
    visible = selectors.visible_replays(user=user)
    compare_with = (
        visible.filter(artifact_id=execution.artifact_id, mode=ReplayMode.DRY_RUN, status=ReplayStatus.SUCCEEDED)
        .exclude(pk=execution.pk)
        .order_by("-created_at", "-pk")[:COMPARE_CANDIDATES]
    )
    svg = None
    if report:
        svg = timeline_svg(report.get("timeline"), incident_label=lambda key: incident_name(key, titles))
    events = events_for_targets(targets=[execution]).order_by("seq")
    summary = execution.summary or {}
    buttons = _buttons(user, execution, approval)
    approval_form = forms.get("approval_form") or ReasonForm(prefix="approval")
    cancel_form = forms.get("cancel_form") or ReasonForm(prefix="cancel")
    for form, button in ((approval_form, buttons["approval"]), (cancel_form, buttons["cancel"])):
        if button["why_not"]:
            form.fields["reason"].widget.attrs["disabled"] = True
    return {
        **_live_context(execution),
        "report": report,
        "report_problem": report_problem,
        "titles": titles,
        "summary": summary,
        "parity": (report or {}).get("parity") or {},
        "highlights": (report or {}).get("highlights") or summary.get("highlights") or [],
        "diff_sections": _diff_sections(execution, report),
        "timeline_svg": svg,
        "planned_actions": (execution.audit_record or {}).get("actions") or [],
        "commands": commands,
        "approval": approval,
        "buttons": buttons,
        "failed_checks": [c for c in execution.checks or [] if not c.get("ok")],
        "promotions": visible.filter(dry_run=execution).order_by("-created_at", "-pk"),
        "compare_with": compare_with,
        "audit_events": events,
        "window": execution.window(),
        "approval_form": approval_form,
        "cancel_form": cancel_form,
        "action_problem": forms.get("action_problem", ""),
    }


@login_required
@require_safe
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    execution = selectors.replay_for(user=request.user, pk=pk)
    return render(request, "replays/detail.html", _run_context(request, execution))


@login_required
@require_safe
def stages(request: HttpRequest, pk: int) -> HttpResponse:
    """The status header and stages, polled by the run view while the run is not final. When it is, the partial
    carries no polling attributes, and an htmx poll that finds it final reloads the page to show the results."""
    execution = selectors.replay_for(user=request.user, pk=pk)
    response = render(request, "replays/_stages.html", _live_context(execution))
    if execution.is_final and getattr(request, "htmx", False):
        response["HX-Refresh"] = "true"
    return response


# --- actions on a run --------------------------------------------------------------------------------------------


@login_required
@require_POST
@refusals
def request_approval(request: HttpRequest, pk: int) -> HttpResponse:
    execution = selectors.replay_for(user=request.user, pk=pk, action=selectors.EXECUTE)
    form = ReasonForm(request.POST, prefix="approval", required_message="an approval request needs a reason")
    if form.is_valid():
        try:
            approval = services.replay_request_approval(
                dry_run=execution, user=request.user, reason=form.cleaned_data["reason"]
            )
        except ValidationError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Approval request #{approval.pk} waits for {approval.required_approvals} "
                                      f"approval(s) in {approval.environment.slug}.")
            return redirect("replays:detail", pk=execution.pk)
    return render(request, "replays/detail.html", _run_context(request, execution, approval_form=form), status=400)


@login_required
@require_POST
@refusals
def execute(request: HttpRequest, pk: int) -> HttpResponse:
    dry_run = selectors.replay_for(user=request.user, pk=pk, action=selectors.EXECUTE)
    try:
        execution = services.replay_request_execute(dry_run=dry_run, user=request.user)
    except ValidationError as exc:
        problem = "; ".join(exc.messages)
        return render(request, "replays/detail.html", _run_context(request, dry_run, action_problem=problem),
                      status=400)
    if execution.status == ReplayStatus.REJECTED:
        messages.error(request, f"Execute #{execution.pk} was rejected at preflight: see its failed checks.")
    else:
        messages.success(request, f"Execute #{execution.pk} of dry run #{dry_run.pk} is {execution.status}.")
    return redirect("replays:detail", pk=execution.pk)


@login_required
@require_POST
@refusals
def cancel(request: HttpRequest, pk: int) -> HttpResponse:
    execution = selectors.replay_for(user=request.user, pk=pk)
    selectors.require(user=request.user, environment=execution.environment,
                      action=selectors.action_for_mode(execution.mode))
    form = ReasonForm(request.POST, prefix="cancel", required_message="cancelling a replay needs a reason")
    if form.is_valid():
        try:
            services.replay_cancel(execution=execution, actor=request.user, reason=form.cleaned_data["reason"])
        except ValidationError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Replay #{execution.pk} was cancelled.")
            return redirect("replays:detail", pk=execution.pk)
    return render(request, "replays/detail.html", _run_context(request, execution, cancel_form=form), status=400)


# --- downloads ---------------------------------------------------------------------------------------------------


def _stored_file(name: str, sha256: str, *, filename: str, content_type: str) -> FileResponse:
    try:
        handle = artifact_storage().open(name, "rb")
    except OSError:
        raise Http404(f"{filename} is not in the artifact store") from None
    response = FileResponse(handle, as_attachment=True, filename=filename, content_type=content_type)
    if sha256:
        response["ETag"] = f'"{sha256}"'
    return response


@login_required
@require_safe
def report_json(request: HttpRequest, pk: int) -> FileResponse:
    execution = selectors.replay_for(user=request.user, pk=pk)
    if not execution.report_name:
        raise Http404(f"replay #{execution.pk} has no report")
    return _stored_file(execution.report_name, execution.report_sha256, filename=f"replay-{execution.pk}-report.json",
                        content_type="application/json")


@login_required
@require_safe
def evidence(request: HttpRequest, pk: int) -> FileResponse:
    execution = selectors.replay_for(user=request.user, pk=pk)
    if not execution.evidence_name:
        raise Http404(f"replay #{execution.pk} has no evidence bundle")
    return _stored_file(execution.evidence_name, execution.evidence_sha256,
                        filename=f"replay-{execution.pk}-evidence.tar.gz", content_type="application/gzip")


@login_required
@require_safe
def summary_md(request: HttpRequest, pk: int) -> HttpResponse:
    """A Markdown summary to paste into a ticket: what ran, its outcome and parity, highlights, actions, a link."""
    execution = selectors.replay_for(user=request.user, pk=pk)
    commands = []
    if execution.mode == ReplayMode.EXECUTE:
        commands = list(services.replay_commands(execution=execution).select_related("agent").order_by("pk"))
    summary = execution.summary or {}
    context = {
        "execution": execution,
        "summary": summary,
        "highlights": summary.get("highlights") or [],
        "planned_actions": (execution.audit_record or {}).get("actions") or [],
        "commands": commands,
        "failed_checks": [c for c in execution.checks or [] if not c.get("ok")],
        "window": execution.window(),
        "link": settings.TRACEFLUX_BASE_URL.rstrip("/") + reverse("replays:detail", args=[execution.pk]),
    }
    text = render_to_string("replays/summary.md", context, request=request)
    response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'inline; filename="replay-{execution.pk}-summary.md"'
    return response


# --- compare -----------------------------------------------------------------------------------------------------


def _side(execution: ReplayExecution) -> dict[str, Any]:
    report, problem = load_report(execution)
    return {
        "execution": execution,
        "report": report,
        "report_problem": problem,
        "summary": execution.summary or {},
        "parity": (report or {}).get("parity") or {},
        "highlights": (report or {}).get("highlights") or (execution.summary or {}).get("highlights") or [],
        "actions": (execution.audit_record or {}).get("actions") or [],
        "titles": incident_titles(report),
    }


def _incident_rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The incidents both runs formed, one row per key, in time order: a key on one side only is added or removed."""
    by_key: dict[str, dict[str, Any]] = {}
    for side, data in (("a", a), ("b", b)):
        for incident in (data["report"] or {}).get("incidents") or []:
            if not isinstance(incident, dict):
                continue
            key = str(incident.get("key"))
            label = incident_name(key, {key: str(incident.get("title") or "")})
            row = by_key.setdefault(key, {"key": key, "first_ts": incident.get("first_ts") or "", "label": label,
                                          "a": None, "b": None})
            row[side] = incident
    rows = sorted(by_key.values(), key=lambda row: (row["first_ts"], row["key"]))
    for row in rows:
        row["change"] = "same" if row["a"] and row["b"] else ("added" if row["b"] else "removed")
        if row["a"] and row["b"] and row["a"].get("signal_count") != row["b"].get("signal_count"):
            row["change"] = "changed"
    return rows


@login_required
@require_safe
def compare(request: HttpRequest) -> HttpResponse:
    """Two runs of the same artifact side by side: the same window under two pipeline versions."""
    a_key, b_key = (request.GET.get("a") or "").strip(), (request.GET.get("b") or "").strip()
    if not a_key or not b_key:
        problem = "Name two runs to compare: /replays/compare/?a=<run id>&b=<run id>."
        return render(request, "replays/compare.html", {"problem": problem, "a_key": a_key, "b_key": b_key},
                      status=400)
    a = selectors.replay_for(user=request.user, pk=a_key)
    b = selectors.replay_for(user=request.user, pk=b_key)
    if a.artifact_id != b.artifact_id:
        problem = (f"Run #{a.pk} replayed artifact #{a.artifact_id} ({a.incident.ref}) and run #{b.pk} replayed "
                   f"artifact #{b.artifact_id} ({b.incident.ref}): a comparison needs two runs of the same artifact.")
        return render(request, "replays/compare.html", {"problem": problem, "a_key": a_key, "b_key": b_key},
                      status=400)
    side_a, side_b = _side(a), _side(b)
    context = {
        "a": side_a,
        "b": side_b,
        "sides": [side_a, side_b],
        "incident_rows": _incident_rows(side_a, side_b),
        "same_version": a.pipeline_version_id == b.pipeline_version_id,
        "a_key": a_key,
        "b_key": b_key,
    }
    return render(request, "replays/compare.html", context)
