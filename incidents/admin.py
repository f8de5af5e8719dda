"""The operator's console: every incidents model in the Django admin, read through selectors, written through services.

Three rules shape this module:
- What a user sees is narrowed in one place, EnvironmentScopedMixin, by incidents.selectors.visible_environments.
- A status is never an editable field. It moves only through admin actions that call the services, which check the
  transition, write history and audit in one transaction.
- Creating an object goes through its service as well. The add forms validate with the same functions the services
  use (posture_problems, window_problem, spec_hash, posture_decision), so save_model has nothing left to refuse.

Nothing here deletes: the services have no delete, and a deleted row would leave holes in history and audit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import cached_property
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connections, models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from simple_history.admin import SimpleHistoryAdmin

from replays.engine import window_problem
from traceflux.statemachine import TransitionError

from . import selectors, services
from .failures import failure_counts, worth_escalating
from .models import (
    Agent,
    AgentKey,
    AgentScope,
    Command,
    Deployment,
    DeploymentStatus,
    EnrollmentToken,
    Environment,
    Heartbeat,
    Incident,
    IncidentNote,
    IncidentStatus,
    PipelineVersion,
    PostureAction,
    PostureDecision,
    posture_problems,
)
from .posture import posture_decision

# The refusals a service raises on purpose. Anything else escaping an admin action is a bug and should be a 500.
SERVICE_REFUSALS = (TransitionError, ValidationError, PermissionDenied)


# --- small display helpers ---------------------------------------------------------------------------------------


def _link(obj: models.Model | None, label: Any = None) -> str:
    """A link to obj's change page; the page itself decides whether this user may open it."""
    if obj is None:
        return "-"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, obj if label is None else label)


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def describe_refusal(exc: Exception) -> str:
    """One line naming the problem, with the field when the service named one."""
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            return "; ".join(
                " ".join(msgs) if field == NON_FIELD_ERRORS else f"{field}: {' '.join(msgs)}"
                for field, msgs in exc.message_dict.items()
            )
        return " ".join(exc.messages)
    return str(exc) or type(exc).__name__


def _adopt(target: models.Model, source: models.Model) -> None:
    """Copy what a service saved onto the instance the admin holds, so response_add/log_addition see the real row."""
    for field in source._meta.concrete_fields:
        setattr(target, field.attname, getattr(source, field.attname))
    target._state.adding = False
    target._state.db = source._state.db


def _key_state(key: AgentKey) -> str:
    if key.revoked_at:
        return "revoked"
    if key.expires_at and key.expires_at <= timezone.now():
        return "expired"
    return "active"


class CommaSeparatedField(forms.CharField):
    """A short list of names typed as "a, b, c". The services sort and deduplicate it."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ", ".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().to_python(value)
        return [part.strip() for part in text.split(",") if part.strip()]


# --- scoping: the one place the console narrows by permission ----------------------------------------------------

# Foreign-key choices are narrowed with the same selectors the querysets use, so a form never offers (or accepts)
# an object from an environment the user cannot see.
_CHOICES: dict[type[models.Model], Callable[..., QuerySet]] = {
    Environment: selectors.visible_environments,
    Agent: selectors.visible_agents,
    Deployment: selectors.visible_deployments,
    Incident: selectors.visible_incidents,
    PipelineVersion: selectors.visible_pipeline_versions,
}


class VisibleEnvironmentFilter(admin.RelatedFieldListFilter):
    """The environment sidebar filter, listing only environments the user may see (the default lists every slug)."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[Any, str]]:
        return [(env.pk, str(env)) for env in selectors.visible_environments(user=request.user)]


class EnvironmentScopedMixin:
    """Narrows querysets, object pages and foreign-key choices to the environments the user may see.

    environment_path is the lookup from the model to its Environment ("environment", "agent__environment"), "" for
    Environment itself, or None for data that belongs to no environment (pipeline versions are global policy).
    Model-level Django permissions still decide which pages a staff user may open at all; this narrows what is in them.
    """

    environment_path: str | None = None

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        if self.environment_path is None or request.user.is_superuser:
            return queryset
        lookup = f"{self.environment_path}__in" if self.environment_path else "pk__in"
        return queryset.filter(**{lookup: selectors.visible_environments(user=request.user)})

    def _in_scope(self, request: HttpRequest, obj: models.Model | None) -> bool:
        # Object pages mostly fetch through get_queryset already; the history pages do not (they fall back to the
        # historical record when the row is not in the queryset), so the object check must hold on its own.
        if obj is None or self.environment_path is None or request.user.is_superuser:
            return True
        # A change page asks several times per request; one EXISTS per object and request is enough.
        answers = request.__dict__.setdefault("_environment_scope_answers", {})
        key = (obj._meta.label, obj.pk)
        if key not in answers:
            answers[key] = self.get_queryset(request).filter(pk=obj.pk).exists()
        return answers[key]

    def has_view_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return super().has_view_permission(request, obj) and self._in_scope(request, obj)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._in_scope(request, obj)  # type: ignore[misc]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        narrow = _CHOICES.get(db_field.related_model)
        if narrow is not None and "queryset" not in kwargs:
            kwargs["queryset"] = narrow(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]


def _require(request: HttpRequest, environment: Environment, perm: str) -> None:
    """Acting needs more than seeing: approve or operate in that environment (guardian, via the selectors)."""
    if not selectors.can_in_environment(user=request.user, environment=environment, perm=perm):
        verb = "approve" if perm == selectors.APPROVE else "operate"
        raise PermissionDenied(f"you may not {verb} in {environment.slug}")


# --- actions that need a reason ----------------------------------------------------------------------------------

Apply = Callable[[HttpRequest, Any, str], Any]


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 70}), required=False)

    def __init__(self, *args: Any, reason_required: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = reason_required


def reason_action(*, name: str, description: str, apply: Apply, reason_required: bool = False) -> Callable:
    """An admin action that first asks for confirmation and a reason, then applies a service to each object.

    Each object is tried on its own: one refused transition is reported and does not stop the others.
    """

    def action(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        if request.POST.get("confirm") == "yes":
            form = ReasonForm(request.POST, reason_required=reason_required)
            if form.is_valid():
                _apply_each(modeladmin, request, queryset, description=description, apply=apply,
                            reason=form.cleaned_data["reason"])
                return None  # the admin redirects back to the changelist, where the messages show
        else:
            form = ReasonForm(reason_required=reason_required)
        request.current_app = modeladmin.admin_site.name
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": description,
            "opts": modeladmin.model._meta,
            "objects": list(queryset),
            "action_name": name,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "form": form,
            "reason_required": reason_required,
        }
        return TemplateResponse(request, "admin/incidents/action_reason.html", context)

    action.__name__ = name
    return admin.action(description=description, permissions=["change"])(action)


def _apply_each(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, *, description: str, apply: Apply,
    reason: str,
) -> None:
    done: list[str] = []
    for obj in queryset:
        try:
            apply(request, obj, reason)
        except SERVICE_REFUSALS as exc:
            modeladmin.message_user(request, f"{obj}: {describe_refusal(exc)}", messages.ERROR)
        else:
            done.append(str(obj))
    if done:
        modeladmin.message_user(request, f"{description}: {', '.join(done)}", messages.SUCCESS)


# --- changelists at scale: no COUNT(*) over a whole table --------------------------------------------------------


def planner_estimate(rows: QuerySet) -> int | None:
    """PostgreSQL's estimate of the rows in an unfiltered queryset's table (pg_class.reltuples, kept by autovacuum's
    ANALYZE), read in one cheap query. None when there is none: another database, a filtered queryset, or a table
    never analyzed (reltuples is -1 then)."""
    connection = connections[rows.db]
    if connection.vendor != "postgresql" or rows.query.where or rows.query.distinct or rows.query.combinator:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [connection.ops.quote_name(rows.model._meta.db_table)],
        )
        found = cursor.fetchone()
    return int(found[0]) if found and found[0] is not None and found[0] >= 0 else None


class ConsolePaginator(Paginator):
    """The console changelists' count, which never reads a whole big table (Django's own runs COUNT(*) on every page).

    A count is exact up to CAP rows, and costs at most CAP + 1 rows read whatever the table holds: the rows are counted
    through `SELECT COUNT(*) FROM (… LIMIT CAP + 1)`. Beyond the cap:
    - the unfiltered table on PostgreSQL is counted by the planner's estimate, and the page reads "about N";
    - anything else (a search, a sidebar filter, or the environment narrowing every non-superuser gets) stops at the
      cap, and the page reads "more than CAP": the pages past it are reached by narrowing the list.
    """

    CAP = 10_000

    @cached_property
    def _counted(self) -> tuple[int, bool]:
        """(count, estimated)."""
        rows = self.object_list
        if not isinstance(rows, QuerySet):
            return len(rows), False
        estimate = planner_estimate(rows)
        if estimate is not None and estimate > self.CAP:
            return estimate, True
        return rows.order_by()[: self.CAP + 1].count(), False

    @cached_property
    def count(self) -> int:
        return self._counted[0]

    @property
    def estimated(self) -> bool:
        return self._counted[1]

    @property
    def capped(self) -> bool:
        return not self.estimated and self.count > self.CAP


# --- the common base ---------------------------------------------------------------------------------------------


class NoRevertMixin:
    """History pages to read, never to restore from. simple-history saves a POSTed old version with a plain save()
    after checking only the *view* permission: that would bypass every service (and every model's own guard)."""

    def revert_disabled(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return True

    def history_form_view(self, request: HttpRequest, object_id: str, version_id: str, extra_context=None):
        if request.method == "POST":
            raise PermissionDenied("reverting from history is not allowed; use the actions, which go through services")
        return super().history_form_view(request, object_id, version_id, extra_context)  # type: ignore[misc]


class ConsoleAdmin(NoRevertMixin, EnvironmentScopedMixin, SimpleHistoryAdmin):
    """Base for the history-tracked models: scoped, no delete, no revert, service-backed add and change.

    Subclasses declare add_form/add_fields for the add page and change_fields (all read-only unless listed in
    change_editable) for the change page. A model with nothing editable after creation gets a view-only page.
    """

    add_form: type[forms.ModelForm] = forms.ModelForm
    change_form: type[forms.ModelForm] = forms.ModelForm
    add_fields: tuple[str, ...] = ()
    change_fields: tuple[str, ...] = ()
    change_editable: tuple[str, ...] = ()
    editable_after_create = False
    paginator = ConsolePaginator
    show_full_result_count = False  # the second COUNT(*), over the unfiltered table, on every changelist page

    def get_fields(self, request: HttpRequest, obj: models.Model | None = None) -> list[str]:
        return list(self.add_fields if obj is None else self.change_fields)

    def get_readonly_fields(self, request: HttpRequest, obj: models.Model | None = None) -> list[str]:
        if obj is None:
            return []
        return [name for name in self.change_fields if name not in self.change_editable]

    def get_form(self, request: HttpRequest, obj: models.Model | None = None, change: bool = False, **kwargs: Any):
        kwargs["form"] = self.add_form if obj is None else self.change_form
        return super().get_form(request, obj, change=change, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        # Without an object this answers "may run actions"; with one, "is this page a form or a view".
        if obj is not None and not self.editable_after_create:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def changeform_view(self, request: HttpRequest, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ValidationError as exc:
            # The forms check what the services check, so only a concurrent writer gets here (the same label
            # created a moment ago, say). The transaction has rolled back; say what happened instead of a 500.
            self.message_user(request, f"Nothing was saved: {describe_refusal(exc)}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request: HttpRequest, obj: models.Model, form: forms.ModelForm, change: bool) -> None:
        if change:
            self.save_change(request, obj, form)
        else:
            _adopt(obj, self.create(request, form))

    def create(self, request: HttpRequest, form: forms.ModelForm) -> models.Model:
        raise PermissionDenied(f"{self.model._meta.verbose_name_plural} cannot be created in the console")

    def save_change(self, request: HttpRequest, obj: models.Model, form: forms.ModelForm) -> None:
        """Nothing editable by default: read-only fields never reach the form, so there is nothing to write."""


class ShownOnce(str):
    """A plaintext secret for a template: str() is the secret, repr() hides it. A template context is dumped whole by
    repr() in places: a variable that fails to resolve is logged at DEBUG by django.template with the context in the
    exception, and the debug 500 page lists it. The page still shows the secret; those never do."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<secret shown once: not repeated here>'"


class ShowSecretOnceMixin:
    """Answers an add form that created a secret (a key, a token) with a page showing it, this once.

    The plaintext is kept on the request only: it is never stored, logged or put in a message cookie. Subclasses set
    issued_template, issued_noun ("Key") and issued_object_name (the template's variable for the new object).
    """

    issued_template: str
    issued_noun: str
    issued_object_name = "token"

    @staticmethod
    def remember_secret(request: HttpRequest, plaintext: str) -> None:
        request._issued_secret = plaintext  # type: ignore[attr-defined]

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: str | None = None) -> HttpResponse:
        plaintext = getattr(request, "_issued_secret", None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)  # type: ignore[misc]
        context = {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "title": f"{self.issued_noun} {obj.prefix} issued",
            "subtitle": None,  # read by admin/base_site.html: every variable it reads is set, none fails to resolve
            "opts": self.opts,  # type: ignore[attr-defined]
            self.issued_object_name: obj,
            "plaintext": ShownOnce(plaintext),
        }
        return TemplateResponse(request, self.issued_template, context)


# --- environments ------------------------------------------------------------------------------------------------


class EnvironmentAddForm(forms.ModelForm):
    """Posture is judged whole by posture_problems, the function environment_create itself uses."""

    class Meta:
        model = Environment
        fields = ["slug", "name", *services.POSTURE_FIELDS]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        # A field that failed on its own is already reported; judging the posture without it would only guess.
        if all(field in cleaned for field in services.POSTURE_FIELDS):
            problems = posture_problems(**{field: cleaned[field] for field in services.POSTURE_FIELDS})
            for field, problem in problems.items():
                self.add_error(field, problem)
            if problems:
                # Refused whole, as the services do: the instance keeps its posture, so the model's own clean()
                # and check constraint do not judge a half-applied mix and repeat the same complaint.
                for field in services.POSTURE_FIELDS:
                    cleaned.pop(field, None)
        return cleaned


class EnvironmentChangeForm(EnvironmentAddForm):
    change_reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 70}), required=False,
        help_text="Why the posture changes. Required when any posture field changes; kept in history and audit.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        posture_changed = set(self.changed_data) & set(services.POSTURE_FIELDS)
        if posture_changed and not cleaned.get("change_reason", "").strip():
            self.add_error("change_reason", "a posture change needs a reason")
        return cleaned


@admin.register(Environment)
class EnvironmentAdmin(ConsoleAdmin):
    environment_path = ""
    add_form = EnvironmentAddForm
    change_form = EnvironmentChangeForm
    add_fields = ("slug", "name", *services.POSTURE_FIELDS)
    # Slug and name have no service to change them; posture does (environment_set_posture).
    change_fields = ("slug", "name", *services.POSTURE_FIELDS, "change_reason", "decisions", "created_at")
    change_editable = (*services.POSTURE_FIELDS, "change_reason")
    editable_after_create = True
    list_display = (
        "slug", "name", "replay_policy", "execute_policy", "deploy_policy", "required_approvals", "approval_ttl",
        "dry_run_decision", "execute_decision", "deploy_decision",
    )
    list_filter = ("replay_policy", "execute_policy", "deploy_policy")
    search_fields = ("slug", "name")

    @admin.display(description="dry run")
    def dry_run_decision(self, obj: Environment) -> str:
        return posture_decision(obj, PostureAction.DRY_RUN).value

    @admin.display(description="execute")
    def execute_decision(self, obj: Environment) -> str:
        return posture_decision(obj, PostureAction.EXECUTE).value

    @admin.display(description="deploy")
    def deploy_decision(self, obj: Environment) -> str:
        return posture_decision(obj, PostureAction.DEPLOY).value

    @admin.display(description="posture decisions")
    def decisions(self, obj: Environment) -> str:
        return format_html_join(
            ", ", "{}: <strong>{}</strong>",
            ((action, posture_decision(obj, action).value) for action in PostureAction.values),
        )

    def create(self, request: HttpRequest, form: forms.ModelForm) -> Environment:
        data = form.cleaned_data
        return services.environment_create(
            slug=data["slug"], name=data["name"], actor=request.user,
            **{field: data[field] for field in services.POSTURE_FIELDS},
        )

    def save_change(self, request: HttpRequest, obj: Environment, form: forms.ModelForm) -> None:
        changed = [field for field in services.POSTURE_FIELDS if field in form.changed_data]
        if changed:
            saved = services.environment_set_posture(
                environment=obj, actor=request.user, reason=form.cleaned_data["change_reason"],
                **{field: form.cleaned_data[field] for field in changed},
            )
            _adopt(obj, saved)


# --- agents, keys, heartbeats, commands --------------------------------------------------------------------------


class AgentAddForm(forms.ModelForm):
    services = CommaSeparatedField(required=False, help_text="Comma-separated service names this agent watches.")

    class Meta:
        model = Agent
        fields = ["environment", "name", "hostname", "version", "region", "pop", "services"]


def _set_agent_enabled(enabled: bool) -> Apply:
    def apply(request: HttpRequest, agent: Agent, reason: str) -> Agent:
        _require(request, agent.environment, selectors.OPERATE)
        return services.agent_set_enabled(agent=agent, enabled=enabled, actor=request.user, reason=reason)

    return apply


@admin.register(Agent)
class AgentAdmin(ConsoleAdmin):
    environment_path = "environment"
    add_form = AgentAddForm
    add_fields = ("environment", "name", "hostname", "version", "region", "pop", "services")
    change_fields = (
        "environment", "name", "hostname", "version", "region", "pop", "services", "enabled", "last_seen_at",
        "created_at", "failures_last_hour", "keys_table", "recent_heartbeats",
    )
    list_display = (
        "name", "environment_link", "hostname", "region", "pop", "version", "enabled", "last_seen_at", "stale",
    )
    list_filter = (("environment", VisibleEnvironmentFilter), "enabled", "region", "pop")
    search_fields = ("name", "hostname", "region", "pop")
    list_select_related = ("environment",)
    actions = [
        reason_action(name="enable_agents", description="Enable the selected agents", apply=_set_agent_enabled(True)),
        reason_action(name="disable_agents", description="Disable the selected agents",
                      apply=_set_agent_enabled(False)),
    ]

    @admin.display(description="environment", ordering="environment__slug")
    def environment_link(self, obj: Agent) -> str:
        return _link(obj.environment)

    @admin.display(description="stale", boolean=True)
    def stale(self, obj: Agent) -> bool:
        return obj.is_stale

    @admin.display(description="refused requests, last hour")
    def failures_last_hour(self, obj: Agent) -> SafeString:
        """The operator guide's escalation point: repeated 401, 403 or 429 answers to this agent."""
        counts = failure_counts(agent_id=obj.pk, minutes=60)
        cells = format_html_join(" · ", "{}: {}", ((code, counts[code]) for code in sorted(counts)))
        if worth_escalating(counts):
            return format_html("{} <strong>— repeated refusals: escalate</strong>", cells)
        return cells

    @admin.display(description="keys")
    def keys_table(self, obj: Agent) -> SafeString:
        issue = format_html('<p><a href="{}?agent={}">Issue a new key</a></p>',
                            reverse("admin:incidents_agentkey_add"), obj.pk)
        keys = list(obj.keys.all())
        if not keys:
            return format_html("<p>No keys.</p>{}", issue)
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((_link(k, k.prefix), ", ".join(k.scopes), _key_state(k), _when(k.created_at), _when(k.expires_at),
              _when(k.last_used_at)) for k in keys),
        )
        return format_html(
            "<table><thead><tr><th>prefix</th><th>scopes</th><th>state</th><th>created</th><th>expires</th>"
            "<th>last used</th></tr></thead><tbody>{}</tbody></table>{}", rows, issue,
        )

    @admin.display(description="recent heartbeats (last 20)")
    def recent_heartbeats(self, obj: Agent) -> SafeString:
        beats = list(obj.heartbeats.select_related("deployment__pipeline_version", "deployment__environment")[:20])
        if not beats:
            return format_html("<p>{}</p>", "No heartbeat received yet.")
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((_when(b.received_at), b.status, b.version or "-", _link(b.deployment)) for b in beats),
        )
        return format_html(
            "<table><thead><tr><th>received (UTC)</th><th>status</th><th>version</th><th>deployment</th></tr>"
            "</thead><tbody>{}</tbody></table>", rows,
        )

    def create(self, request: HttpRequest, form: forms.ModelForm) -> Agent:
        data = form.cleaned_data
        return services.agent_create(
            environment=data["environment"], name=data["name"], hostname=data["hostname"], actor=request.user,
            version=data["version"], region=data["region"], pop=data["pop"], services=data["services"],
        )



class AgentKeyAddForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=AgentScope.choices, widget=forms.CheckboxSelectMultiple, initial=list(AgentScope.values)
    )

    class Meta:
        model = AgentKey
        fields = ["agent", "scopes", "expires_at"]

    def clean_expires_at(self) -> Any:
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise ValidationError("a key cannot expire in the past")
        return expires_at


def _revoke(request: HttpRequest, key: AgentKey, reason: str) -> AgentKey:
    _require(request, key.agent.environment, selectors.OPERATE)
    if key.revoked_at:
        raise ValidationError(f"already revoked at {_when(key.revoked_at)}")
    return services.agent_key_revoke(key=key, actor=request.user, reason=reason)


@admin.register(AgentKey)
class AgentKeyAdmin(ShowSecretOnceMixin, ConsoleAdmin):
    issued_template = "admin/incidents/agentkey/issued.html"
    issued_noun = "Key"
    issued_object_name = "key"
    environment_path = "agent__environment"
    add_form = AgentKeyAddForm
    add_fields = ("agent", "scopes", "expires_at")
    # secret_hmac is never shown anywhere: not a field, not a column, not searchable.
    change_fields = ("agent", "prefix", "scopes", "state", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_display = (
        "prefix", "agent_link", "environment", "scopes", "state", "created_at", "expires_at", "revoked_at",
        "last_used_at",
    )
    list_filter = (("agent__environment", VisibleEnvironmentFilter), ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "agent__name")
    list_select_related = ("agent__environment",)
    actions = [reason_action(name="revoke_keys", description="Revoke the selected keys", apply=_revoke)]

    @admin.display(description="agent", ordering="agent__name")
    def agent_link(self, obj: AgentKey) -> str:
        return _link(obj.agent)

    @admin.display(description="environment")
    def environment(self, obj: AgentKey) -> str:
        return _link(obj.agent.environment)

    @admin.display(description="state")
    def state(self, obj: AgentKey) -> str:
        return _key_state(obj)

    def create(self, request: HttpRequest, form: forms.ModelForm) -> AgentKey:
        data = form.cleaned_data
        key, plaintext = services.agent_key_create(
            agent=data["agent"], actor=request.user, scopes=data["scopes"], expires_at=data["expires_at"]
        )
        self.remember_secret(request, plaintext)
        return key


class EnrollmentTokenAddForm(forms.ModelForm):
    uses = forms.IntegerField(min_value=1, max_value=1000, initial=1)
    expires_in_hours = forms.IntegerField(min_value=1, max_value=24 * 30, initial=1, label="Expires in (hours)")

    class Meta:
        model = EnrollmentToken
        fields = ["environment"]


@admin.register(EnrollmentToken)
class EnrollmentTokenAdmin(ShowSecretOnceMixin, ConsoleAdmin):
    issued_template = "admin/incidents/enrollmenttoken/issued.html"
    issued_noun = "Enrollment token"
    """Tokens an agent trades for its identity and first key. Shown once, stored as prefix + HMAC only."""

    environment_path = "environment"
    add_form = EnrollmentTokenAddForm
    add_fields = ("environment", "uses", "expires_in_hours")
    change_fields = ("environment", "prefix", "uses_left", "expires_at", "created_at", "created_by")
    list_display = ("prefix", "environment_link", "uses_left", "expires_at", "usable", "created_by", "created_at")
    list_filter = (("environment", VisibleEnvironmentFilter),)
    search_fields = ("prefix",)
    list_select_related = ("environment", "created_by")

    @admin.display(description="environment", ordering="environment__slug")
    def environment_link(self, obj: EnrollmentToken) -> str:
        return _link(obj.environment)

    @admin.display(description="usable", boolean=True)
    def usable(self, obj: EnrollmentToken) -> bool:
        return obj.is_usable

    def create(self, request: HttpRequest, form: forms.ModelForm) -> EnrollmentToken:
        data = form.cleaned_data
        _require(request, data["environment"], selectors.OPERATE)
        token, plaintext = services.enrollment_token_create(
            environment=data["environment"], actor=request.user, uses=data["uses"],
            expires_at=timezone.now() + timedelta(hours=data["expires_in_hours"]),
        )
        self.remember_secret(request, plaintext)
        return token


@admin.register(Heartbeat)
class HeartbeatAdmin(EnvironmentScopedMixin, admin.ModelAdmin):
    """High-frequency telemetry written by agents: browse only."""

    environment_path = "agent__environment"
    list_display = ("received_at", "agent_link", "environment", "status", "version", "deployment_link")
    # A date range filter, not date_hierarchy: its year links are a SELECT DISTINCT over the whole telemetry table.
    list_filter = (
        "status", ("agent__environment", VisibleEnvironmentFilter), ("received_at", admin.DateFieldListFilter),
    )
    search_fields = ("agent__name", "version")
    list_select_related = ("agent__environment", "deployment__pipeline_version", "deployment__environment")
    paginator = ConsolePaginator
    show_full_result_count = False  # COUNT(*) over a telemetry table on every page is the slow part
    readonly_fields = ("agent", "received_at", "status", "version", "deployment", "details")

    @admin.display(description="agent", ordering="agent__name")
    def agent_link(self, obj: Heartbeat) -> str:
        return _link(obj.agent)

    @admin.display(description="environment")
    def environment(self, obj: Heartbeat) -> str:
        return _link(obj.agent.environment)

    @admin.display(description="deployment")
    def deployment_link(self, obj: Heartbeat) -> str:
        return _link(obj.deployment)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Heartbeat | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Heartbeat | None = None) -> bool:
        return False


@admin.register(Command)
class CommandAdmin(ConsoleAdmin):
    """Commands are issued and moved by the agent protocol, not by hand: the console shows them."""

    environment_path = "agent__environment"
    # Every stored field, read-only; derived from the model because the agent channel is still growing it.
    change_fields = tuple(field.name for field in Command._meta.fields if not field.primary_key)
    list_display = ("idempotency_key", "kind", "agent_link", "environment", "status", "created_at",
                    "status_changed_at")
    list_filter = ("status", "kind", ("agent__environment", VisibleEnvironmentFilter))
    search_fields = ("idempotency_key", "kind", "agent__name")
    list_select_related = ("agent__environment",)

    @admin.display(description="agent", ordering="agent__name")
    def agent_link(self, obj: Command) -> str:
        return _link(obj.agent)

    @admin.display(description="environment")
    def environment(self, obj: Command) -> str:
        return _link(obj.agent.environment)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


# --- pipeline versions and deployments ---------------------------------------------------------------------------


class PipelineVersionAddForm(forms.ModelForm):
    """The spec is checked by the service's own pipeline_spec_check, so a bad or duplicate spec is a form error."""

    class Meta:
        model = PipelineVersion
        fields = ["label", "spec", "parent", "notes"]

    def clean_spec(self) -> Any:
        spec = self.cleaned_data["spec"]
        try:
            services.pipeline_spec_check(spec=spec)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["spec"]) from exc
        return spec


class AlertmanagerImportForm(forms.Form):
    label = forms.CharField(max_length=50, help_text="The new version's label, such as v3.0.0.")
    config = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 16, "cols": 90}), help_text="alertmanager.yml, pasted."
    )
    config_file = forms.FileField(required=False, help_text="…or alertmanager.yml as a file.")
    silences = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 6, "cols": 90}),
        help_text="Optional: Alertmanager's silence JSON (GET /api/v2/silences).",
    )
    parent = forms.ModelChoiceField(queryset=PipelineVersion.objects.none(), required=False)
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 90}))

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["parent"].queryset = selectors.visible_pipeline_versions(user=user)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        upload = cleaned.get("config_file")
        text = cleaned.get("config") or ""
        if upload is not None:
            try:
                text = upload.read(1024 * 1024 + 1).decode("utf-8")
            except UnicodeDecodeError:
                self.add_error("config_file", "the file is not UTF-8 text")
        if not text.strip():
            self.add_error("config", "paste the configuration or choose its file")
        cleaned["config_text"] = text
        cleaned["silences_list"] = None
        if (cleaned.get("silences") or "").strip():
            try:
                cleaned["silences_list"] = services.alertmanager_silences_parse(cleaned["silences"])
            except ValueError as exc:
                self.add_error("silences", str(exc))
        return cleaned


@admin.register(PipelineVersion)
class PipelineVersionAdmin(ConsoleAdmin):
    change_list_template = "admin/incidents/pipelineversion/change_list.html"
    environment_path = None  # global policy, not environment data (see selectors.visible_pipeline_versions)
    add_form = PipelineVersionAddForm
    add_fields = ("label", "spec", "parent", "notes")
    # Immutable once created: it is identified by its spec hash, and deployments and replays point at it.
    change_fields = ("label", "spec_hash", "spec", "parent", "notes", "created_by", "created_at")
    list_display = ("label", "spec_hash", "parent_link", "created_by", "created_at")
    search_fields = ("label", "spec_hash", "notes")
    list_select_related = ("parent", "created_by")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return selectors.visible_pipeline_versions(user=request.user)

    @admin.display(description="parent", ordering="parent__label")
    def parent_link(self, obj: PipelineVersion) -> str:
        return _link(obj.parent)

    def create(self, request: HttpRequest, form: forms.ModelForm) -> PipelineVersion:
        data = form.cleaned_data
        return services.pipeline_version_create(
            label=data["label"], spec=data["spec"], actor=request.user, parent=data["parent"], notes=data["notes"]
        )

    def get_urls(self) -> list:
        extra = [
            path(
                "import-alertmanager/",
                self.admin_site.admin_view(self.import_alertmanager_view),
                name="incidents_pipelineversion_import_alertmanager",
            )
        ]
        return extra + super().get_urls()

    def import_alertmanager_view(self, request: HttpRequest) -> HttpResponse:
        """A pipeline version from an Alertmanager configuration: the same service as `pipeline_version import`."""
        if not self.has_add_permission(request):
            raise PermissionDenied("you may not create pipeline versions")
        form = AlertmanagerImportForm(request.POST or None, request.FILES or None, user=request.user)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                version = services.pipeline_version_import_alertmanager(
                    label=data["label"], config_text=data["config_text"], silences=data["silences_list"],
                    actor=request.user, parent=data["parent"], notes=data["notes"],
                )
            except ValidationError as exc:
                for field, messages_ in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, messages_)
            else:
                self.message_user(request, f"Imported {version.label}: {version.spec_hash}", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:incidents_pipelineversion_change", args=[version.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import an Alertmanager configuration",
            "opts": self.opts,
            "form": form,
        }
        return TemplateResponse(request, "admin/incidents/pipelineversion/import_alertmanager.html", context)


class DeploymentAddForm(forms.ModelForm):
    target_regions = CommaSeparatedField(required=False, help_text="Comma-separated; empty means every region.")
    target_pops = CommaSeparatedField(required=False, help_text="Comma-separated; empty means every POP.")
    target_services = CommaSeparatedField(required=False, help_text="Comma-separated; empty means every service.")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 70}), help_text="Why this roll-out.")

    class Meta:
        model = Deployment
        fields = ["environment", "pipeline_version", "target_regions", "target_pops", "target_services", "reason"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        environment = cleaned.get("environment")
        # deployment_request asks the same question and raises PermissionDenied; asked here it is a form error.
        if environment is not None and posture_decision(environment, PostureAction.DEPLOY) == PostureDecision.DENY:
            self.add_error("environment", f"deployments are denied in {environment.slug} by its posture")
        return cleaned


def _move_deployment(to: str, perm: str) -> Apply:
    def apply(request: HttpRequest, deployment: Deployment, reason: str) -> Deployment:
        _require(request, deployment.environment, perm)
        return services.deployment_transition(deployment=deployment, to=to, actor=request.user, reason=reason)

    return apply


def _roll_back_deployment(request: HttpRequest, deployment: Deployment, reason: str) -> Deployment:
    _require(request, deployment.environment, selectors.OPERATE)
    return services.deployment_rollback(deployment=deployment, actor=request.user, reason=reason)


@admin.register(Deployment)
class DeploymentAdmin(ConsoleAdmin):
    environment_path = "environment"
    add_form = DeploymentAddForm
    add_fields = ("environment", "pipeline_version", "target_regions", "target_pops", "target_services", "reason")
    # A request is approved as it stands: its targets and version must not change afterwards.
    change_fields = (
        "environment", "pipeline_version", "status", "target_regions", "target_pops", "target_services",
        "requested_by", "reason", "created_at", "status_changed_at", "target_agents_list",
    )
    list_display = (
        "id", "pipeline_version_link", "environment_link", "status", "targets", "requested_by", "created_at",
        "status_changed_at",
    )
    list_filter = ("status", ("environment", VisibleEnvironmentFilter))
    search_fields = ("pipeline_version__label", "pipeline_version__spec_hash", "reason")
    list_select_related = ("environment", "pipeline_version", "requested_by")
    actions = [
        reason_action(name="approve", description="Approve (pending_approval → approved)",
                      apply=_move_deployment(DeploymentStatus.APPROVED, selectors.APPROVE)),
        reason_action(name="deny", description="Deny (pending_approval → denied)",
                      apply=_move_deployment(DeploymentStatus.DENIED, selectors.APPROVE), reason_required=True),
        reason_action(name="start_deploying", description="Start deploying (approved → deploying)",
                      apply=_move_deployment(DeploymentStatus.DEPLOYING, selectors.OPERATE)),
        reason_action(name="activate", description="Mark active (deploying → active)",
                      apply=_move_deployment(DeploymentStatus.ACTIVE, selectors.OPERATE)),
        reason_action(name="mark_failed", description="Mark failed (deploying/rolling_back → failed)",
                      apply=_move_deployment(DeploymentStatus.FAILED, selectors.OPERATE), reason_required=True),
        reason_action(name="roll_back", description="Roll back (active → rolling_back, rollback commands sent)",
                      apply=_roll_back_deployment, reason_required=True),
        reason_action(name="mark_rolled_back", description="Mark rolled back (rolling_back → rolled_back)",
                      apply=_move_deployment(DeploymentStatus.ROLLED_BACK, selectors.OPERATE)),
    ]

    @admin.display(description="pipeline version", ordering="pipeline_version__label")
    def pipeline_version_link(self, obj: Deployment) -> str:
        return _link(obj.pipeline_version)

    @admin.display(description="environment", ordering="environment__slug")
    def environment_link(self, obj: Deployment) -> str:
        return _link(obj.environment)

    @admin.display(description="targets")
    def targets(self, obj: Deployment) -> str:
        parts = [", ".join(values) for values in (obj.target_regions, obj.target_pops, obj.target_services) if values]
        return " / ".join(parts) or "everywhere"

    @admin.display(description="agents targeted now")
    def target_agents_list(self, obj: Deployment) -> str:
        return format_html_join(", ", "{}", ((_link(agent),) for agent in obj.target_agents())) or "none"

    def create(self, request: HttpRequest, form: forms.ModelForm) -> Deployment:
        data = form.cleaned_data
        return services.deployment_request(
            environment=data["environment"], pipeline_version=data["pipeline_version"], actor=request.user,
            reason=data["reason"], target_regions=data["target_regions"], target_pops=data["target_pops"],
            target_services=data["target_services"],
        )


# --- incidents ---------------------------------------------------------------------------------------------------


class IncidentAddForm(forms.ModelForm):
    class Meta:
        model = Incident
        fields = [
            "ref", "title", "severity", "environment", "source_agent", "deployment", "service", "region", "pop",
            "window_start", "window_end",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        start, end = cleaned.get("window_start"), cleaned.get("window_end")
        if start and end:
            problem = window_problem(start, end)  # the bound incident_open and the engine enforce
            if problem:
                self.add_error("window_end", problem)
        return cleaned


class IncidentNoteInline(admin.TabularInline):
    """The incident's journal: notes are added (through incident_note_add), never edited or removed."""

    model = IncidentNote
    fields = ("created_at", "author", "body")
    readonly_fields = ("created_at", "author")
    extra = 1
    can_delete = False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _move_incident(to: str) -> Apply:
    def apply(request: HttpRequest, incident: Incident, reason: str) -> Incident:
        _require(request, incident.environment, selectors.OPERATE)
        return services.incident_transition(incident=incident, to=to, actor=request.user, reason=reason)

    return apply


@admin.register(Incident)
class IncidentAdmin(ConsoleAdmin):
    environment_path = "environment"
    add_form = IncidentAddForm
    add_fields = (
        "ref", "title", "severity", "environment", "source_agent", "deployment", "service", "region", "pop",
        "window_start", "window_end",
    )
    change_fields = (
        "ref", "title", "severity", "status", "environment", "source_agent", "deployment", "service", "region", "pop",
        "window_start", "window_end", "opened_by", "created_at", "status_changed_at", "investigation_page",
    )
    editable_after_create = True  # for the notes inline; every field above stays read-only
    inlines = [IncidentNoteInline]
    list_display = (
        "ref", "title", "severity", "status", "environment_link", "source_agent_link", "deployment_link",
        "window_start",
    )
    list_filter = ("status", "severity", ("environment", VisibleEnvironmentFilter))
    search_fields = ("ref", "title", "service", "region", "pop")
    list_select_related = (
        "environment", "source_agent", "deployment__pipeline_version", "deployment__environment",
    )
    date_hierarchy = "window_start"
    actions = [
        reason_action(name="investigate", description="Investigate (open → investigating)",
                      apply=_move_incident(IncidentStatus.INVESTIGATING), reason_required=True),
        reason_action(name="mitigate", description="Mitigate (investigating/monitoring → mitigating)",
                      apply=_move_incident(IncidentStatus.MITIGATING), reason_required=True),
        reason_action(name="monitor", description="Monitor (mitigating → monitoring)",
                      apply=_move_incident(IncidentStatus.MONITORING), reason_required=True),
        reason_action(name="resolve", description="Resolve (monitoring → resolved)",
                      apply=_move_incident(IncidentStatus.RESOLVED), reason_required=True),
    ]

    @admin.display(description="environment", ordering="environment__slug")
    def environment_link(self, obj: Incident) -> str:
        return _link(obj.environment)

    @admin.display(description="source agent", ordering="source_agent__name")
    def source_agent_link(self, obj: Incident) -> str:
        return _link(obj.source_agent)

    @admin.display(description="deployment")
    def deployment_link(self, obj: Incident) -> str:
        return _link(obj.deployment)

    @admin.display(description="investigation page")
    def investigation_page(self, obj: Incident) -> str:
        # By name: the page lives in replays, which this app may not import.
        url = reverse("incidents-ui:investigate", args=[obj.url_key])
        return format_html('<a href="{}" id="investigation-page">Investigate {}</a>', url, obj.ref)

    def create(self, request: HttpRequest, form: forms.ModelForm) -> Incident:
        data = form.cleaned_data
        return services.incident_open(
            ref=data["ref"], title=data["title"], environment=data["environment"],
            window_start=data["window_start"], window_end=data["window_end"], actor=request.user,
            severity=data["severity"], source_agent=data["source_agent"], deployment=data["deployment"],
            service=data["service"], region=data["region"], pop=data["pop"],
        )

    def save_formset(self, request: HttpRequest, form: forms.ModelForm, formset: Any, change: bool) -> None:
        if formset.model is not IncidentNote:
            super().save_formset(request, form, formset, change)
            return
        # commit=False yields only the new notes (existing ones cannot change); each goes through the service.
        drafts: Iterable[IncidentNote] = formset.save(commit=False)
        formset.new_objects = [
            services.incident_note_add(incident=form.instance, author=request.user, body=draft.body)
            for draft in drafts
            if draft.pk is None
        ]


@admin.register(IncidentNote)
class IncidentNoteAdmin(ConsoleAdmin):
    """Browse the journals across incidents; notes are written from their incident's page."""

    environment_path = "incident__environment"
    change_fields = ("incident", "author", "created_at", "body")
    list_display = ("incident_link", "author", "created_at", "excerpt")
    list_filter = (("incident__environment", VisibleEnvironmentFilter),)
    search_fields = ("incident__ref", "body")
    list_select_related = ("incident__environment", "author")

    @admin.display(description="incident", ordering="incident__ref")
    def incident_link(self, obj: IncidentNote) -> str:
        return _link(obj.incident)

    @admin.display(description="note")
    def excerpt(self, obj: IncidentNote) -> str:
        return obj.body if len(obj.body) <= 80 else obj.body[:79] + "…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
