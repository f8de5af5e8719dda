"""Sent on commit, so listeners (emails, deployments) only ever see what was committed."""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: request (an ApprovalRequest just created, pending).
approval_requested = Signal()
# kwargs: request, status (approved, denied, expired, revoked or withdrawn).
approval_closed = Signal()
