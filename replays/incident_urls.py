"""The incident investigation page, mounted at /incidents/ (built with the operator-surfaces issue)."""

from __future__ import annotations

from django.urls import path

from . import incident_views

app_name = "incidents-ui"

urlpatterns = [
    path("<str:key>/", incident_views.investigate, name="investigate"),
]
