"""The project's URLs: the admin console, the cross-app pages, and (later) each app's routes."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from . import views

admin.site.site_header = "TraceFlux console"
admin.site.site_title = "TraceFlux"
admin.site.index_title = "Operator console"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
