"""What the agent-fleet management commands share: the audit actor, duration options and name lookups."""

from __future__ import annotations

import re
from datetime import timedelta

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.management.base import CommandError

from incidents.models import Agent, Environment
from traceflux.audit import AuditActor

# Every change made from the command line is audited as the system, acting through the CLI.
CLI_ACTOR = AuditActor(kind="system", name="cli")

_DURATION = re.compile(r"^(?P<amount>\d+)(?P<unit>[dhms])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str, *, option: str = "--expires-in") -> timedelta:
    """`30d`, `12h`, `45m` or `90s` as a timedelta; anything else is a CommandError naming the option."""
    match = _DURATION.match((text or "").strip().lower())
    if not match or int(match["amount"]) == 0:
        raise CommandError(
            f"{option} {text!r} is not a duration: use a positive whole number followed by d, h, m or s "
            "(for example 30d, 12h, 45m)"
        )
    return timedelta(**{_UNITS[match["unit"]]: int(match["amount"])})


def parse_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def environment_by_slug(slug: str) -> Environment:
    environment = Environment.objects.filter(slug=slug).first()
    if environment is None:
        known = ", ".join(Environment.objects.values_list("slug", flat=True)) or "none yet"
        raise CommandError(f"no environment with slug {slug!r} (known: {known})")
    return environment


def agent_by_name(name: str) -> Agent:
    agent = Agent.objects.select_related("environment").filter(name=name).first()
    if agent is None:
        raise CommandError(f"no agent named {name!r}")
    return agent


def refusal(exc: ValidationError) -> CommandError:
    """A service's ValidationError as one CommandError line naming each field."""
    if hasattr(exc, "error_dict"):
        parts = [
            " ".join(messages) if field == NON_FIELD_ERRORS else f"{field}: {' '.join(messages)}"
            for field, messages in exc.message_dict.items()
        ]
        return CommandError("; ".join(parts))
    return CommandError(" ".join(exc.messages))
