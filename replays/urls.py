"""The replay pages, mounted at /replays/ (the REST API is mounted separately at /api/v1/replays/)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "replays"

urlpatterns = [
    path("", views.history, name="history"),
    path("new/", views.new, name="new"),
    path("compare/", views.compare, name="compare"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/stages/", views.stages, name="stages"),
    path("<int:pk>/request-approval/", views.request_approval, name="request_approval"),
    path("<int:pk>/execute/", views.execute, name="execute"),
    path("<int:pk>/cancel/", views.cancel, name="cancel"),
    path("<int:pk>/report.json", views.report_json, name="report_json"),
    path("<int:pk>/evidence.tar.gz", views.evidence, name="evidence"),
    path("<int:pk>/summary.md", views.summary_md, name="summary_md"),
]
