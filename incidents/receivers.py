"""Receivers of the command channel's signals: a deployment moves on when its agents report back, never by polling.

Connected in IncidentsConfig.ready(). The signals are sent on commit, so each receiver works in its own transaction.
"""

from __future__ import annotations

from typing import Any

from . import services
from .models import Command


def on_command_acknowledged(sender: Any, command: Command, status: str, **kwargs: Any) -> None:
    if command.kind in (services.DEPLOY_COMMAND, services.ROLLBACK_COMMAND):
        services.deployment_settle(command=command)


def on_command_expired(sender: Any, command: Command, **kwargs: Any) -> None:
    if command.kind in (services.DEPLOY_COMMAND, services.ROLLBACK_COMMAND):
        services.deployment_settle(command=command)
