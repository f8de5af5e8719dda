"""The audit explorer: one timeline of audit events, filtered, paged by keyset, exported, and each object's history.

What a user sees is decided in one place, `_visible_events`: traceflux.audit.selectors.visible_audit_events over the
environments incidents.selectors says they can see (events without an environment for superusers only). The history
page applies the same rule to the object: an object outside those environments does not exist (404).

At a million events nothing here counts the log: a page is `… WHERE <filters> AND seq < <before> ORDER BY seq DESC
LIMIT 51`, which the primary key or a (<filter column>, -seq) index of AuditEvent answers with one ordered range scan
(or a short sort of the few rows a rare filter matches); the 51st row only says whether there is an older page.
Exports stream the same query, oldest first, in chunks.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.apps import apps
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from incidents.selectors import visible_environment_slugs
from replays.forms import UTCDateTimeField
from replays.views import as_id
from traceflux.audit.actors import resolve_environment
from traceflux.audit.models import AuditEvent, Outcome
from traceflux.audit.selectors import events_for_targets, visible_audit_events
from traceflux.audit.services import audit_verification_latest
from traceflux.audit.tasks import verify_chain

PAGE_SIZE = 50
EXPORT_CHUNK = 2000
HISTORY_VERSIONS = 100
HISTORY_EVENTS = 100
GLOBAL = "-"  # the environment choice for events recorded without one (superusers only)
PAGE_FIELDS = (
    "seq", "created_at", "actor_kind", "actor_name", "action", "target_type", "target_id", "target_repr",
    "environment", "outcome", "reason", "request_id", "data",
)
EXPORT_FIELDS = (
    "seq", "created_at", "actor_kind", "actor_id", "actor_name", "action", "target_type", "target_id", "target_repr",
    "environment", "outcome", "reason", "request_id", "ip", "data", "prev_hash", "hash",
)
HIDDEN_FIELD = re.compile(r"secret|hmac|password", re.IGNORECASE)
CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


# --- who sees what -----------------------------------------------------------------------------------------------


def _visible_events(user: Any, slugs: list[str]) -> QuerySet[AuditEvent]:
    return visible_audit_events(environment_slugs=slugs, include_global=user.is_superuser)


# --- filters -----------------------------------------------------------------------------------------------------


class AuditFilterForm(forms.Form):
    """The explorer's filters, as query parameters: every one is an equality on an indexed column, or a time range."""

    actor = forms.CharField(required=False, max_length=150, widget=forms.TextInput(attrs={"placeholder": "name"}))
    action = forms.CharField(required=False, max_length=80,
                             widget=forms.TextInput(attrs={"placeholder": "incident.opened"}))
    environment = forms.ChoiceField(required=False)
    target_type = forms.CharField(required=False, max_length=100, label="Target type",
                                  widget=forms.TextInput(attrs={"placeholder": "incidents.incident"}))
    target_id = forms.CharField(required=False, max_length=64, label="Target id")
    outcome = forms.ChoiceField(required=False, choices=[("", "any"), *Outcome.choices])

    def __init__(self, *args: Any, environment_slugs: Iterable[str], include_global: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "any"), *((slug, slug) for slug in environment_slugs)]
        if include_global:
            choices.append((GLOBAL, "none (global events)"))
        self.fields["environment"].choices = choices
        # `from` and `to` are the parameter names; `from` cannot be a class attribute.
        self.fields["from"] = UTCDateTimeField(required=False, label="From (UTC)")
        self.fields["to"] = UTCDateTimeField(required=False, label="To (UTC)")
        for name in ("actor", "action", "target_type", "target_id"):
            self.fields[name].widget.attrs["size"] = 16

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("target_id") and not cleaned.get("target_type"):
            # An id alone would match across every type of object, with no index to find it.
            self.add_error("target_id", "a target id needs a target type")
        start, end = cleaned.get("from"), cleaned.get("to")
        if start and end and start > end:
            self.add_error("to", "the end of the time range is before its start")
        return cleaned

    def narrow(self, events: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        data = self.cleaned_data
        exact = {
            "actor_name": data.get("actor", "").strip(),
            "action": data.get("action", "").strip(),
            "target_type": data.get("target_type", "").strip(),
            "target_id": data.get("target_id", "").strip(),
            "outcome": data.get("outcome", ""),
        }
        events = events.filter(**{column: value for column, value in exact.items() if value})
        environment = data.get("environment", "")
        if environment:
            events = events.filter(environment="" if environment == GLOBAL else environment)
        if data.get("from"):
            events = events.filter(created_at__gte=data["from"])
        if data.get("to"):
            events = events.filter(created_at__lte=data["to"])
        return events

    def is_filtered(self) -> bool:
        return self.is_bound and any(self.data.get(name) for name in self.fields)

    def first_error(self) -> tuple[str, str]:
        """(field, message) of the first problem, for the exports' JSON answers."""
        for name, errors in self.errors.items():
            return name, f"{name}: {errors[0]}"
        return "", ""


def _filter_form(request: HttpRequest) -> tuple[AuditFilterForm, QuerySet[AuditEvent]]:
    """The bound filter form and the events the user may see (not yet narrowed by the form)."""
    slugs = visible_environment_slugs(user=request.user)
    form = AuditFilterForm(request.GET, environment_slugs=slugs, include_global=request.user.is_superuser)
    return form, _visible_events(request.user, slugs)


# --- the timeline ------------------------------------------------------------------------------------------------


@cache
def history_labels() -> frozenset[str]:
    """label_lower of every model django-simple-history tracks: the targets that have a history page."""
    tracked = (model for model in apps.get_models() if hasattr(model._meta, "simple_history_manager_attribute"))
    return frozenset(model._meta.label_lower for model in tracked)


def history_url(target_type: str, target_id: str) -> str:
    if not target_id or target_type not in history_labels() or "/" in target_id:
        return ""
    return reverse("audit-history", args=[target_type, target_id])


@dataclass
class Row:
    event: AuditEvent
    history_url: str
    filter_urls: dict[str, str] = field(default_factory=dict)
    data: str = ""  # the event's data as JSON, when it has any


def _with(query: QueryDict, **changes: str) -> str:
    """This page's query string with some parameters set, back on the newest page."""
    query = query.copy()
    query.pop("before", None)
    for name, value in changes.items():
        query[name] = value
    return f"?{query.urlencode()}"


def _row(event: AuditEvent, query: QueryDict) -> Row:
    filters = {
        "actor": _with(query, actor=event.actor_name) if event.actor_name else "",
        "action": _with(query, action=event.action),
        "environment": _with(query, environment=event.environment or GLOBAL),
        "target": _with(query, target_type=event.target_type, target_id=event.target_id) if event.target_id else "",
    }
    data = json.dumps(event.data, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder) if event.data else ""
    return Row(event=event, history_url=history_url(event.target_type, event.target_id), filter_urls=filters, data=data)


@login_required
@require_safe
def explorer(request: HttpRequest) -> HttpResponse:
    """The audit timeline, newest first, filtered, paged by keyset (`?before=<seq>`): never a COUNT over the log."""
    form, events = _filter_form(request)
    status, problem = 200, ""
    before_text = request.GET.get("before", "").strip()
    before = as_id(before_text)
    if before_text and before is None:
        status, problem = 400, f"before={before_text}: not an event number to page from"
    rows: list[Row] = []
    next_url = ""
    if not form.is_valid():
        status = 400
    elif not problem:
        page = form.narrow(events)
        if before is not None:
            page = page.filter(seq__lt=before)
        found = list(page.only(*PAGE_FIELDS)[: PAGE_SIZE + 1])
        if len(found) > PAGE_SIZE:
            found = found[:PAGE_SIZE]
            query = request.GET.copy()
            query["before"] = str(found[-1].seq)
            next_url = f"?{query.urlencode()}"
        rows = [_row(event, request.GET) for event in found]
    export_query = request.GET.copy()
    export_query.pop("before", None)
    context = {
        "form": form,
        "rows": rows,
        "next_url": next_url,
        "newest_url": _with(request.GET) if before_text else "",
        "problem": problem,
        "filtered": form.is_filtered(),
        "export_query": export_query.urlencode(),
        "verification": audit_verification_latest(),
        "can_verify": request.user.is_superuser,
    }
    return render(request, "traceflux/audit/explorer.html", context, status=status)


@login_required
@require_POST
def verify(request: HttpRequest) -> HttpResponse:
    """Verify the whole chain now (superusers): the beat task's work, enqueued; eager without a broker."""
    if not request.user.is_superuser:
        raise PermissionDenied("only a superuser may verify the whole audit chain")
    verify_chain.delay("explorer")
    latest = audit_verification_latest()
    if not settings.CELERY_TASK_ALWAYS_EAGER or latest is None:
        messages.info(request, "Verification queued: its result appears under Chain status when it is done.")
    elif latest.ok:
        messages.success(request, f"Audit chain verified: intact, {latest.count} events.")
    else:
        messages.error(request, f"Audit chain broken at #{latest.first_bad_seq}: {latest.detail}")
    return redirect("audit-explorer")


# --- exports -----------------------------------------------------------------------------------------------------


def _export_events(request: HttpRequest) -> tuple[QuerySet[AuditEvent] | None, JsonResponse | None]:
    form, events = _filter_form(request)
    if not form.is_valid():
        name, detail = form.first_error()
        return None, JsonResponse({"detail": detail, "field": name}, status=400)
    # Oldest first, as the chain runs: an export can be checked link by link (prev_hash, hash).
    return form.narrow(events).order_by("seq").only(*EXPORT_FIELDS), None


def _filename(extension: str) -> str:
    return f"audit-events-{timezone.now():%Y%m%dT%H%M%SZ}.{extension}"


def _plain(event: AuditEvent, name: str) -> Any:
    value = getattr(event, name)
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if value is None:
        return ""
    return value


class _Echo:
    """csv.writer's file: hands back each line instead of storing it."""

    def write(self, value: str) -> str:
        return value


def _csv_cell(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, cls=DjangoJSONEncoder) if isinstance(value, dict | list) else str(value)
    # A spreadsheet would run a cell starting with = + - @ as a formula: a quote makes it text (the JSON is verbatim).
    return f"'{text}" if text.startswith(CSV_FORMULA) else text


def _csv_lines(events: QuerySet[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    for event in events.iterator(chunk_size=EXPORT_CHUNK):
        yield writer.writerow([_csv_cell(_plain(event, name)) for name in EXPORT_FIELDS])


def _json_chunks(events: QuerySet[AuditEvent]) -> Iterator[str]:
    yield "["
    separator = "\n"
    for event in events.iterator(chunk_size=EXPORT_CHUNK):
        yield separator + json.dumps({name: _plain(event, name) for name in EXPORT_FIELDS}, cls=DjangoJSONEncoder)
        separator = ",\n"
    yield "\n]\n"


def _export(request: HttpRequest, *, lines: Callable[[QuerySet[AuditEvent]], Iterator[str]], content_type: str,
            extension: str) -> HttpResponse:
    events, refusal = _export_events(request)
    if refusal is not None:
        return refusal
    response = StreamingHttpResponse(lines(events), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{_filename(extension)}"'
    return response


@login_required
@require_safe
def export_csv(request: HttpRequest) -> HttpResponse:
    """The filtered events the user can see, oldest first, as CSV, streamed in chunks of EXPORT_CHUNK rows."""
    return _export(request, lines=_csv_lines, content_type="text/csv; charset=utf-8", extension="csv")


@login_required
@require_safe
def export_json(request: HttpRequest) -> HttpResponse:
    """The same as export_csv, as one JSON array of objects (values verbatim: data is an object)."""
    return _export(request, lines=_json_chunks, content_type="application/json", extension="json")


# --- one object's history ----------------------------------------------------------------------------------------


@dataclass
class Change:
    field: str
    old: str
    new: str


@dataclass
class Version:
    record: Any  # a django-simple-history historical record
    kind: str  # created, changed, deleted, or "first recorded" when no earlier version exists
    changes: list[Change]


def _shown(f: Any, value: Any, *, precise: bool = False) -> str:
    """A field's value as the history page shows it: JSON for JSON, `#<id>` for a foreign key, secrets hidden."""
    if HIDDEN_FIELD.search(f.name):
        return "(hidden)"
    if value is None:
        return "—"
    if f.is_relation:
        text = f"#{value}"
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder)
    elif isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="microseconds" if precise else "seconds")
    else:
        text = str(value)
    return text if len(text) <= 300 else f"{text[:300]}…"


def _change(f: Any, old: Any, new: Any) -> Change:
    before, after = _shown(f, old), _shown(f, new)
    if before == after:  # two instants within the same second
        before, after = _shown(f, old, precise=True), _shown(f, new, precise=True)
    return Change(str(f.verbose_name), before, after)


def _versions(records: list[Any], *, complete: bool) -> list[Version]:
    """Field-level changes of each version against the one before it. `records` is newest first; when it is not
    complete, its last record only serves as the predecessor of the one before it."""
    if not records:
        return []
    fields = [f for f in records[0].tracked_fields if not f.primary_key]
    by_name = {f.name: f for f in fields}
    shown = records if complete else records[:-1]
    versions = []
    for index, record in enumerate(shown):
        previous = records[index + 1] if index + 1 < len(records) else None
        if previous is None:
            kind = "created" if record.history_type == "+" else "first recorded"
            changes = [Change(str(f.verbose_name), "", _shown(f, getattr(record, f.attname))) for f in fields]
        else:
            kind = {"+": "created", "-": "deleted"}.get(record.history_type, "changed")
            # diff_against compares the editable fields (model_to_dict); the few others (created_at, a token's
            # prefix) are compared here, so that no tracked change goes unseen.
            delta = record.diff_against(previous)
            found = [(c.field, c.old, c.new) for c in delta.changes]
            for f in fields:
                if not f.editable and getattr(previous, f.attname) != getattr(record, f.attname):
                    found.append((f.name, getattr(previous, f.attname), getattr(record, f.attname)))
            changes = [
                _change(by_name[name], old, new) if name in by_name else Change(name, str(old), str(new))
                for name, old, new in sorted(found, key=lambda c: c[0])
            ]
        versions.append(Version(record=record, kind=kind, changes=changes))
    return versions


def _environment_of(obj: Model) -> str:
    """The slug of the environment the object belongs to, "" when it belongs to none (or it can no longer be told)."""
    try:
        slug = resolve_environment(None, obj)
        if not slug:
            slug = getattr(getattr(obj, "environment", None), "slug", "") or ""
    except ObjectDoesNotExist:
        return ""
    return slug


@login_required
@require_safe
def object_history(request: HttpRequest, label: str, pk: str) -> HttpResponse:
    """Every version of one history-tracked object, newest first, with its field changes, and its audit events.

    404 when the model is not tracked, the object never existed, or it is in an environment the user cannot see
    (objects of no environment: superusers only), so that its existence is not disclosed.
    """
    if label not in history_labels():
        raise Http404("no history is kept for this kind of object")
    model = apps.get_model(label)
    try:
        key = model._meta.pk.to_python(pk)
    except ValidationError as exc:
        raise Http404("no such object") from exc
    manager = getattr(model, model._meta.simple_history_manager_attribute)
    records = list(
        manager.filter(**{model._meta.pk.attname: key})
        .select_related("history_user")
        .order_by("-history_date", "-history_id")[: HISTORY_VERSIONS + 1]
    )
    obj = model._default_manager.filter(pk=key).first()
    if obj is None and not records:
        raise Http404("no such object")
    user = request.user
    slugs = visible_environment_slugs(user=user)
    environment = _environment_of(obj if obj is not None else records[0].instance)
    if not (user.is_superuser or (environment and environment in slugs)):
        raise Http404("no such object")
    complete = len(records) <= HISTORY_VERSIONS
    events = (events_for_targets(targets=[(label, key)]) & _visible_events(user, slugs)).only(*PAGE_FIELDS)
    context = {
        "label": label,
        "model_name": model._meta.verbose_name,
        "pk": key,
        "obj": obj,
        "title": str(obj if obj is not None else records[0].instance),
        "environment": environment,
        "versions": _versions(records, complete=complete),
        "complete": complete,
        "events": list(events[:HISTORY_EVENTS]),
        "events_limit": HISTORY_EVENTS,
        "events_url": f"{reverse('audit-explorer')}?{urlencode({'target_type': label, 'target_id': key})}",
    }
    return render(request, "traceflux/audit/history.html", context)
