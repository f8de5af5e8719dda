"""Mounted at api/v1/agent/artifacts/ by traceflux/urls.py."""

from __future__ import annotations

from django.urls import path

from .api import ArtifactUploadView

app_name = "artifacts-api"

urlpatterns = [
    path("", ArtifactUploadView.as_view(), name="upload"),
]
