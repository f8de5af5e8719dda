"""The approver's pages, mounted at /approvals/ (the REST API is mounted separately at /api/v1/approvals/)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "approvals"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("<int:pk>/", views.review, name="review"),
    path("<int:pk>/approve/", views.decide, {"decision": "approve"}, name="approve"),
    path("<int:pk>/deny/", views.decide, {"decision": "deny"}, name="deny"),
    path("promote/<int:pipeline_version_id>/", views.promote, name="promote"),
]
