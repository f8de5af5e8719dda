"""An execute moves on when its agents acknowledge its commands (or they expire), never by polling."""

from __future__ import annotations

from typing import Any

from incidents.models import Command

from .services import REPLAY_COMMAND, replay_settle


def on_command_final(sender: Any, command: Command, **kwargs: Any) -> None:
    if command.kind == REPLAY_COMMAND:
        replay_settle(command=command)
