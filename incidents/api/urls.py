"""The agent API, mounted at /api/v1/agent/ (artifact uploads are mounted beside it, at /api/v1/agent/artifacts/)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "agent_api"

urlpatterns = [
    path("enroll/", views.EnrollView.as_view(), name="enroll"),
    path("heartbeats/", views.HeartbeatView.as_view(), name="heartbeats"),
    path("commands/", views.CommandListView.as_view(), name="commands"),
    path("commands/<int:pk>/ack/", views.CommandAckView.as_view(), name="command-ack"),
    path("signing-keys/", views.SigningKeysView.as_view(), name="signing-keys"),
]
