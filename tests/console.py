"""The operator's console (Django admin) as the tests address it: every registered model, and its admin URLs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.urls import reverse

REGISTERED = sorted(admin.site._registry, key=lambda model: model._meta.label)


def admin_url(model: type, view: str = "changelist", *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)
