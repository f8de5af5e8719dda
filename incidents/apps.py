from __future__ import annotations

from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"
    verbose_name = "Incidents and fleet"

    def ready(self) -> None:
        from . import checks, receivers  # noqa: F401  (importing checks registers them)
        from .signals import command_acknowledged, command_expired

        command_acknowledged.connect(receivers.on_command_acknowledged, dispatch_uid="incidents.deployment_ack")
        command_expired.connect(receivers.on_command_expired, dispatch_uid="incidents.deployment_expiry")
