"""The project's URLs: the admin console, the cross-app pages, and (later) each app's routes."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import explorer, ops, views
from .login import throttled_login

handler404 = "traceflux.views.not_found"

admin.site.site_header = "TraceFlux console"
admin.site.site_title = "TraceFlux"
admin.site.index_title = "Operator console"
# The LOGIN_URL: sign-in attempts are throttled per address and per username, and failures audited (traceflux.login).
admin.site.login = throttled_login(admin.site)  # type: ignore[method-assign]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
    path("audit/", explorer.explorer, name="audit-explorer"),
    path("audit/export.csv", explorer.export_csv, name="audit-export-csv"),
    path("audit/export.json", explorer.export_json, name="audit-export-json"),
    path("audit/verify/", explorer.verify, name="audit-verify"),
    path("audit/history/<str:label>/<str:pk>/", explorer.object_history, name="audit-history"),
    path("incidents/", include("replays.incident_urls")),
    path("admin/", admin.site.urls),
    path("approvals/", include("approvals.urls")),
    path("replays/", include("replays.urls")),
    # Before the agent API's own include, so this more specific prefix is matched first.
    path("api/v1/agent/artifacts/", include("artifacts.api_urls")),
    path("api/v1/agent/", include("incidents.api.urls")),
    path("api/v1/approvals/", include("approvals.api_urls")),
    path("api/v1/replays/", include("replays.api_urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # GET and HEAD only: drf-spectacular answers OPTIONS on this HTML view with a 500 (no template for the metadata).
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="api-schema", http_method_names=["get", "head"]),
         name="api-docs"),
]
