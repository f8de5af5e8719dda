"""An execute moves on when its agents acknowledge its commands (or they expire), never by polling."""

from __future__ import annotations

from typing import Any

from incidents.models import Command
from traceflux import metrics

from .models import ReplayExecution
from .services import REPLAY_COMMAND, replay_settle


def on_command_final(sender: Any, command: Command, **kwargs: Any) -> None:
    if command.kind == REPLAY_COMMAND:
        replay_settle(command=command)


def on_replay_finished(sender: Any, execution: ReplayExecution, **kwargs: Any) -> None:
    """Observe the run's duration, from leaving the queue (started_at) to its final status, in /metrics."""
    if execution.started_at is None or execution.finished_at is None:
        return  # never left the queue: it has no run time
    seconds = (execution.finished_at - execution.started_at).total_seconds()
    metrics.replay_finished(mode=execution.mode, status=execution.status, seconds=seconds)
