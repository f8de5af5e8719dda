"""Forms of the replay pages: what a person types. The rules (scope, window, controls, permissions, posture) live in
replays.services and replays.controls; a form only turns text into values and names the field a service refused."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone

from artifacts.models import Artifact
from incidents.models import Environment, IncidentStatus, PipelineVersion

from .models import ReplayMode, ReplayStatus


class UTCDateTimeField(forms.DateTimeField):
    """A datetime whose text without an offset is read as UTC (the portal's zone), whatever the active time zone.

    Accepts ISO 8601 with an offset or Z (2026-02-26T14:00:00Z) and the browser's datetime-local value
    (2026-02-26T14:00 or with seconds).
    """

    widget = forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S")

    def to_python(self, value: Any):
        with timezone.override(UTC):
            return super().to_python(value)


class VersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: PipelineVersion) -> str:
        return f"{obj.label} ({obj.spec_hash[:19]}…)"


class ArtifactChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Artifact) -> str:
        window = ""
        if obj.window_start and obj.window_end:
            window = f", window {obj.window_start:%Y-%m-%d %H:%M:%S} to {obj.window_end:%H:%M:%S} UTC"
        version = f", produced by {obj.pipeline_version.label}" if obj.pipeline_version_id else ""
        return f"#{obj.pk} captured {obj.captured_at:%Y-%m-%d %H:%M} UTC, {obj.size} bytes{window}{version}"


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


class NewReplayForm(forms.Form):
    """A dry run's inputs. `artifact` offers the incident's bundles; any pipeline version may be replayed."""

    artifact = ArtifactChoiceField(queryset=Artifact.objects.none(), empty_label=None)
    pipeline_version = VersionChoiceField(
        queryset=PipelineVersion.objects.none(), required=False, empty_label="the version that produced the artifact",
        help_text="Default: the version whose spec hash the artifact carries.",
    )
    compare_version = VersionChoiceField(
        queryset=PipelineVersion.objects.none(), required=False, empty_label="none",
        help_text="Also replay under this version and diff the two.",
    )
    service = forms.CharField(required=False, max_length=100)
    region = forms.CharField(required=False, max_length=100)
    pop = forms.CharField(required=False, max_length=100, label="POP")
    window_start = UTCDateTimeField(required=False, label="Sub-window start (UTC)")
    window_end = UTCDateTimeField(required=False, label="Sub-window end (UTC)")
    disabled_actions = forms.CharField(
        required=False, max_length=1000, label="Disabled actions",
        help_text="Comma-separated action names, for example drain-pop, restart-resolvers.",
    )
    max_pops = forms.IntegerField(required=False, min_value=0, label="At most POPs")
    max_regions = forms.IntegerField(required=False, min_value=0, label="At most regions")

    # Where a service's error key (replays.controls.InputProblem.field) is shown.
    FIELD_OF = {
        "window": "window_start",
        "window.start": "window_start",
        "window.end": "window_end",
        "scope": "service",
        "controls": "disabled_actions",
    }

    def __init__(self, *args: Any, bundles: QuerySet[Artifact], versions: QuerySet[PipelineVersion],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["artifact"].queryset = bundles
        self.fields["pipeline_version"].queryset = versions.order_by("-created_at", "-pk")
        self.fields["compare_version"].queryset = versions.order_by("-created_at", "-pk")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        start, end = cleaned.get("window_start"), cleaned.get("window_end")
        if (start is None) != (end is None) and not self.has_error("window_start") and not self.has_error("window_end"):
            self.add_error("window_start" if start is None else "window_end", "a sub-window needs both start and end")
        return cleaned

    def service_inputs(self) -> dict[str, Any]:
        """The keyword arguments of replays.services.replay_request_dry_run, from the cleaned data."""
        data = self.cleaned_data
        controls: dict[str, Any] = {"disabled_actions": _names(data.get("disabled_actions") or "")}
        for key in ("max_pops", "max_regions"):
            if data.get(key) is not None:
                controls[key] = data[key]
        return {
            "artifact": data["artifact"],
            "pipeline_version": data.get("pipeline_version"),
            "compare_version": data.get("compare_version"),
            "scope": {key: data.get(key) or "" for key in ("service", "region", "pop")},
            "window_start": data.get("window_start"),
            "window_end": data.get("window_end"),
            "controls": controls,
        }

    def add_service_error(self, error: ValidationError) -> None:
        """Show a service's ValidationError on the field it names (window.end → window_end, scope.pop → pop …)."""
        if not hasattr(error, "error_dict"):
            for message in error.messages:
                self.add_error(None, message)
            return
        for key, messages in error.message_dict.items():
            field = self.FIELD_OF.get(key) or key.rsplit(".", 1)[-1]
            for message in messages:
                if field in self.fields:
                    self.add_error(field, message if field == key else f"{key}: {message}")
                else:
                    self.add_error(None, f"{key}: {message}")


class _TextForm(forms.Form):
    """A form around one required free-text field, `text_field`: its value stripped, a blank one refused with
    `blank_message`, and a service's ValidationError shown on that field (or on the form for any other key)."""

    text_field = ""
    blank_message = ""

    def _clean_text(self) -> str:
        text = self.cleaned_data[self.text_field].strip()
        if not text:
            raise forms.ValidationError(self.blank_message)
        return text

    def add_service_error(self, error: ValidationError) -> None:
        messages: Mapping[str, list[str]] = (
            error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}
        )
        for key, values in messages.items():
            for message in values:
                self.add_error(self.text_field if key == self.text_field else None, message)


class ReasonForm(_TextForm):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 60}), max_length=2000)
    text_field = "reason"

    def __init__(self, *args: Any, required_message: str = "a reason is needed", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reason"].error_messages["required"] = required_message
        self.blank_message = required_message

    def clean_reason(self) -> str:
        return self._clean_text()


class HistoryFilterForm(forms.Form):
    """The run history's filters (GET). Every field is optional; an unknown choice is simply not applied."""

    incident = forms.CharField(required=False, max_length=40, label="Incident")
    environment = forms.ChoiceField(required=False, choices=())
    mode = forms.ChoiceField(required=False, choices=[("", "any"), *ReplayMode.choices])
    status = forms.ChoiceField(required=False, choices=[("", "any"), *ReplayStatus.choices])
    version = forms.ChoiceField(required=False, choices=(), label="Version")
    who = forms.CharField(required=False, max_length=150, label="Triggered by")

    def __init__(self, *args: Any, environments: QuerySet[Environment], versions: QuerySet[PipelineVersion],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["environment"].choices = [("", "any"), *[(e.slug, e.slug) for e in environments]]
        self.fields["version"].choices = [("", "any"), *[(v.label, v.label) for v in versions]]

    def narrow(self, replays: QuerySet) -> QuerySet:
        """`replays` (already the user's visible replays) narrowed by the filters that are set."""
        data = self.cleaned_data
        if data.get("incident"):
            key = data["incident"].strip()
            if key.isascii() and key.isdigit() and len(key) <= 18:
                replays = replays.filter(incident__pk=int(key))
            else:
                replays = replays.filter(incident__ref=key)
        if data.get("environment"):
            replays = replays.filter(environment__slug=data["environment"])
        if data.get("mode"):
            replays = replays.filter(mode=data["mode"])
        if data.get("status"):
            replays = replays.filter(status=data["status"])
        if data.get("version"):
            replays = replays.filter(pipeline_version__label=data["version"])
        if data.get("who"):
            replays = replays.filter(triggered_by__username=data["who"].strip())
        return replays


class IncidentTransitionForm(ReasonForm):
    """One lifecycle move of an incident, with its reason. The page shows one per allowed status; `auto_id` keeps
    their element ids apart while the field names stay the same."""

    to = forms.ChoiceField(choices=IncidentStatus.choices, widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, required_message="a status change needs a reason", **kwargs)


class IncidentNoteForm(_TextForm):
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 70}), max_length=10000, label="Note",
                           error_messages={"required": "a note cannot be empty"})
    text_field = "body"
    blank_message = "a note cannot be empty"

    def clean_body(self) -> str:
        return self._clean_text()
