"""Signals other apps listen to, so they move forward when an agent reports back instead of polling.

Both are sent with transaction.on_commit, so a receiver never sees a change that was rolled back.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent once per acknowledgement that changed a command's status. Arguments: command (a Command, refreshed),
# status ("succeeded" or "failed"). A repeated acknowledgement with the same status sends nothing.
command_acknowledged = Signal()

# Sent once per command moved to "expired" by command_expire_overdue. Arguments: command.
command_expired = Signal()
