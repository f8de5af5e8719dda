"""The replay API, mounted at /api/v1/replays/: request (POST), list, detail, report and evidence downloads."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .api import ReplayViewSet

app_name = "replays-api"

router = SimpleRouter()
router.register("", ReplayViewSet, basename="replay")

urlpatterns = router.urls
