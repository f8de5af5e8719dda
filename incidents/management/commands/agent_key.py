"""`manage.py agent_key create --agent NAME [--scopes ...] [--expires-in 30d]` and `manage.py agent_key revoke PREFIX`.

`create` prints the new key alone on its last line of output, so a script can take it with `tail -n 1`.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from incidents import services
from incidents.management.cli import CLI_ACTOR, agent_by_name, parse_duration, parse_list, refusal
from incidents.models import AgentKey, AgentScope


class Command(BaseCommand):
    help = "Create or revoke an agent's API key."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create,revoke}")
        create = actions.add_parser("create", help="create a key; the key is printed once, on the last line")
        create.add_argument("--agent", required=True, help="the agent's name")
        create.add_argument(
            "--scopes",
            default=",".join(AgentScope.values),
            help=f"comma-separated scopes (default: all of {', '.join(AgentScope.values)})",
        )
        create.add_argument("--expires-in", help="lifetime such as 30d, 12h or 45m (default: never expires)")
        revoke = actions.add_parser("revoke", help="revoke a key by its prefix (the 12 characters after tfk_)")
        revoke.add_argument("prefix")
        revoke.add_argument("--reason", default="", help="why, for the audit log")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "create":
            self._create(agent_name=options["agent"], scopes=options["scopes"], expires_in=options["expires_in"])
        else:
            self._revoke(prefix=options["prefix"], reason=options["reason"])

    def _create(self, *, agent_name: str, scopes: str, expires_in: str | None) -> None:
        agent = agent_by_name(agent_name)
        expires_at = timezone.now() + parse_duration(expires_in) if expires_in is not None else None
        try:
            key, plaintext = services.agent_key_create(
                agent=agent, actor=CLI_ACTOR, scopes=parse_list(scopes), expires_at=expires_at
            )
        except ValidationError as exc:
            raise refusal(exc) from exc
        expiry = key.expires_at.isoformat(timespec="seconds") if key.expires_at else "never"
        self.stdout.write(
            f"Created key {key.prefix} for agent {agent.name} (environment {agent.environment.slug}); "
            f"scopes: {', '.join(key.scopes)}; expires: {expiry}."
        )
        self.stdout.write("It is shown only now; TraceFlux keeps an HMAC of it, not the key:")
        self.stdout.write(plaintext)

    def _revoke(self, *, prefix: str, reason: str) -> None:
        wanted = prefix.strip()
        if wanted.startswith("tfk_"):  # a whole key was pasted: its prefix is the part after tfk_
            wanted = wanted[4:].split("_", 1)[0]
        key = AgentKey.objects.select_related("agent").filter(prefix=wanted).first()
        if key is None:
            raise CommandError(f"no agent key with prefix {wanted!r}")
        already = key.revoked_at is not None
        key = services.agent_key_revoke(key=key, actor=CLI_ACTOR, reason=reason)
        when = key.revoked_at.isoformat(timespec="seconds")
        if already:
            self.stdout.write(f"Key {key.prefix} of agent {key.agent.name} was already revoked at {when}.")
        else:
            self.stdout.write(f"Revoked key {key.prefix} of agent {key.agent.name} at {when}.")
