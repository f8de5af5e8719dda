from __future__ import annotations

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from . import notifications  # noqa: F401  (connects the approval_requested receiver)
        from .receivers import on_approval_closed
        from .signals import approval_closed

        approval_closed.connect(on_approval_closed, dispatch_uid="approvals.deployment_decided")
