from __future__ import annotations

from django.apps import AppConfig


class ReplaysConfig(AppConfig):
    name = "replays"
    verbose_name = "Replays"

    def ready(self) -> None:
        from incidents.signals import command_acknowledged, command_expired

        from . import receivers
        from .signals import replay_finished

        command_acknowledged.connect(receivers.on_command_final, dispatch_uid="replays.command_ack")
        command_expired.connect(receivers.on_command_final, dispatch_uid="replays.command_expiry")
        replay_finished.connect(receivers.on_replay_finished, dispatch_uid="replays.metrics")
