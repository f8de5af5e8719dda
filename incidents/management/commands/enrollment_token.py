"""`manage.py enrollment_token create --environment SLUG [--uses 1] [--expires-in 1h]`: prints the token last."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from incidents import services
from incidents.management.cli import CLI_ACTOR, environment_by_slug, parse_duration, refusal


class Command(BaseCommand):
    help = "Create an enrollment token: agents trade it at POST /api/v1/agent/enroll/ for their identity and key."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create}")
        create = actions.add_parser("create", help="create a token; it is printed once, on the last line")
        create.add_argument("--environment", required=True, help="the environment enrolled agents join")
        create.add_argument("--uses", type=int, default=1, help="how many agents may enroll with it (default 1)")
        create.add_argument("--expires-in", default="1h", help="lifetime such as 1h, 30m or 7d (default 1h)")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        environment = environment_by_slug(options["environment"])
        if options["uses"] < 1:
            raise CommandError(f"--uses {options['uses']}: an enrollment token needs at least one use")
        expires_at = timezone.now() + parse_duration(options["expires_in"])
        try:
            token, plaintext = services.enrollment_token_create(
                environment=environment, actor=CLI_ACTOR, expires_at=expires_at, uses=options["uses"]
            )
        except ValidationError as exc:
            raise refusal(exc) from exc
        self.stdout.write(
            f"Created enrollment token {token.prefix} for environment {environment.slug}: "
            f"{token.uses_left} use(s), expires {token.expires_at.isoformat(timespec='seconds')}."
        )
        self.stdout.write("It is shown only now; TraceFlux keeps an HMAC of it, not the token:")
        self.stdout.write(plaintext)
