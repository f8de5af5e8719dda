"""The approvals API, mounted at /api/v1/approvals/: list, detail, approve and deny."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .api import ApprovalRequestViewSet

app_name = "approvals_api"

router = SimpleRouter()
router.register("", ApprovalRequestViewSet, basename="request")

urlpatterns = router.urls
