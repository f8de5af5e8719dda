"""`manage.py agent create --environment SLUG --name NAME [--hostname H --region R --pop P --services a,b]`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from incidents import services
from incidents.management.cli import CLI_ACTOR, environment_by_slug, parse_list, refusal


class Command(BaseCommand):
    help = "Register an agent in an environment (then give it a key with `agent_key create`)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create}")
        create = actions.add_parser("create", help="register an agent")
        create.add_argument("--environment", required=True, help="the environment's slug")
        create.add_argument("--name", required=True, help="unique across the portal")
        create.add_argument("--hostname", help="default: the name")
        create.add_argument("--region", default="")
        create.add_argument("--pop", default="")
        create.add_argument("--services", default="", help="comma-separated service names the agent watches")
        create.add_argument("--version", dest="agent_version", default="", help="the agent's software version")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        environment = environment_by_slug(options["environment"])
        try:
            agent = services.agent_create(
                environment=environment,
                name=options["name"],
                hostname=options["hostname"] or options["name"],
                actor=CLI_ACTOR,
                version=options["agent_version"],
                region=options["region"],
                pop=options["pop"],
                services=parse_list(options["services"]),
            )
        except ValidationError as exc:
            raise refusal(exc) from exc
        self.stdout.write(f"Created agent {agent.name} (#{agent.pk}) in environment {environment.slug}.")
