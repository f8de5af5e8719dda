"""The incident investigation page, mounted at /incidents/: the page, its lifecycle moves and its journal."""

from __future__ import annotations

from django.urls import path

from . import incident_views

app_name = "incidents-ui"

urlpatterns = [
    path("<str:key>/", incident_views.investigate, name="investigate"),
    path("<str:key>/transition/", incident_views.transition, name="transition"),
    path("<str:key>/notes/", incident_views.add_note, name="add_note"),
]
