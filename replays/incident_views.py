"""The incident investigation page (/incidents/<ref or id>/): the operator guide for one incident, its escalation
points, its lifecycle and its journal.

Thin: replays.selectors.incident_for decides whether the user sees the incident (else 404); replays.investigation
gathers what the page shows; incidents.services does every write. Working on an incident (moving it, writing in its
journal) needs incidents.operate_environment, checked here before the service is called (else a 403 page naming the
environment); a ValidationError is shown on its form (400) and a TransitionError is a 409 page with the reason.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from incidents.models import Incident, IncidentStatus
from incidents.services import incident_note_add, incident_transition

from . import selectors
from .forms import IncidentNoteForm, IncidentTransitionForm, ReasonForm
from .investigation import investigation
from .views import refusal_pages


def _incident_links(kwargs: dict[str, Any]) -> list[tuple[str, str]]:
    key = kwargs["key"]
    return [(reverse("incidents-ui:investigate", args=[key]), f"Back to {key}"), (reverse("dashboard"), "Dashboard")]


_refusals = refusal_pages(subject="incident", links=_incident_links)


def _unplaced_errors(form: Any, shown: list[str]) -> list[str]:
    """A refused transition form's errors when no form on the page stands for its status (a forged or stale post)."""
    if form is None or form.data.get("to") in shown:
        return []
    return [f"{name}: {message}" if name != "__all__" else message
            for name, errors in form.errors.items() for message in errors]


def _page(request: HttpRequest, incident: Incident, *, status: int = 200, transition_form: Any = None,
          note_form: Any = None) -> HttpResponse:
    inv = investigation(user=request.user, incident=incident)
    forms = []
    for to in inv.transitions:
        form = transition_form if transition_form is not None and transition_form.data.get("to") == to else None
        form = form or IncidentTransitionForm(initial={"to": to}, auto_id=f"id_{to}_%s")
        if not inv.may_operate:
            form.fields["reason"].widget.attrs["disabled"] = True
        forms.append((to, form))
    note_form = note_form or IncidentNoteForm()
    if not inv.may_operate:
        note_form.fields["body"].widget.attrs["disabled"] = True
    context = {
        "inv": inv,
        "incident": incident,
        "environment": incident.environment,
        "agent": incident.source_agent,
        "steps": inv.steps,
        "approval_form": ReasonForm(prefix="approval", auto_id="id_step_%s"),
        "transition_forms": forms,
        "transition_problem": _unplaced_errors(transition_form, inv.transitions),
        "note_form": note_form,
        "no_operate": "" if inv.may_operate else f"you may not operate on incidents in {incident.environment.slug}",
        "lifecycle": IncidentStatus.values,
    }
    return render(request, "replays/investigate.html", context, status=status)


@login_required
@require_safe
def investigate(request: HttpRequest, key: str) -> HttpResponse:
    incident = selectors.incident_for(user=request.user, key=key)
    return _page(request, incident)


@login_required
@require_POST
@_refusals
def transition(request: HttpRequest, key: str) -> HttpResponse:
    """Move the incident one step along its lifecycle, with a reason; back to the page."""
    incident = selectors.incident_for(user=request.user, key=key, action=selectors.OPERATE)
    form = IncidentTransitionForm(request.POST, auto_id=f"id_{request.POST.get('to', '')}_%s")
    if form.is_valid():
        to = form.cleaned_data["to"]
        try:
            incident_transition(incident=incident, to=to, actor=request.user, reason=form.cleaned_data["reason"])
        except ValidationError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"{incident.ref} is {incident.status}.")
            return redirect(f"{reverse('incidents-ui:investigate', args=[incident.url_key])}#lifecycle")
    return _page(request, incident, status=400, transition_form=form)


@login_required
@require_POST
@_refusals
def add_note(request: HttpRequest, key: str) -> HttpResponse:
    """Add a note to the incident's journal; back to the page."""
    incident = selectors.incident_for(user=request.user, key=key, action=selectors.OPERATE)
    form = IncidentNoteForm(request.POST)
    if form.is_valid():
        try:
            incident_note_add(incident=incident, author=request.user, body=form.cleaned_data["body"])
        except ValidationError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Your note is in the journal of {incident.ref}.")
            return redirect(f"{reverse('incidents-ui:investigate', args=[incident.url_key])}#journal")
    return _page(request, incident, status=400, note_form=form)
