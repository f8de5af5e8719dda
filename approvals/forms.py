"""Forms of the approvals pages: what a person types. The rules live in approvals.services."""

from __future__ import annotations

from django import forms

from incidents.models import Environment
from incidents.posture import posture_decision
from incidents.selectors import OPERATE, environments_where

from .models import SUBJECT_ACTIONS, SubjectKind


class EnvironmentChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Environment) -> str:
        decision = posture_decision(obj, SUBJECT_ACTIONS[SubjectKind.DEPLOYMENT])
        quorum = f", {obj.required_approvals} approval(s)" if decision == "require_approval" else ""
        return f"{obj.slug} (deploy: {decision}{quorum})"


class PromoteForm(forms.Form):
    """Only the environments where the user may operate are offered; any other choice is invalid."""

    environment = EnvironmentChoiceField(queryset=Environment.objects.none(), to_field_name="slug", empty_label=None)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["environment"].queryset = environments_where(user=user, perm=OPERATE).order_by("slug")

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("a promotion needs a reason")
        return reason


class DecisionForm(forms.Form):
    comment = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}), required=False, max_length=2000
    )

    def __init__(self, *args, decision: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.decision = decision
        if decision == "deny":
            self.fields["comment"].required = True
            self.fields["comment"].error_messages["required"] = "a denial needs a reason"

    def clean_comment(self) -> str:
        comment = self.cleaned_data["comment"].strip()
        if self.decision == "deny" and not comment:
            raise forms.ValidationError("a denial needs a reason")
        return comment
