"""Signals replays send, for listeners outside the replay pipeline (metrics)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once when a replay reaches a final status through replays.services._finish, after the transaction commits (so
# a receiver never sees a move that was rolled back). Arguments: execution (the ReplayExecution, refreshed).
replay_finished = Signal()
