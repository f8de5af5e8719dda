"""`manage.py user_token create --user NAME [--name N] [--expires-in 30d]` and `manage.py user_token revoke PREFIX`.

`create` prints the new token alone on its last line of output, so a script can take it with `tail -n 1`.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from approvals.models import UserToken
from approvals.tokens import user_token_create, user_token_revoke
from incidents.management.cli import CLI_ACTOR, parse_duration, refusal


class Command(BaseCommand):
    help = "Create or revoke a person's API token."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create,revoke}")
        create = actions.add_parser("create", help="create a token; the token is printed once, on the last line")
        create.add_argument("--user", required=True, help="the user's username")
        create.add_argument("--name", default="", help="what the token is for (e.g. 'laptop CLI')")
        create.add_argument("--expires-in", help="lifetime such as 30d, 12h or 45m (default: never expires)")
        revoke = actions.add_parser("revoke", help="revoke a token by its prefix (the 12 characters after tfu_)")
        revoke.add_argument("prefix")
        revoke.add_argument("--reason", default="", help="why, for the audit log")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "create":
            self._create(username=options["user"], name=options["name"], expires_in=options["expires_in"])
        else:
            self._revoke(prefix=options["prefix"], reason=options["reason"])

    def _create(self, *, username: str, name: str, expires_in: str | None) -> None:
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        expires_at = timezone.now() + parse_duration(expires_in) if expires_in is not None else None
        try:
            token, plaintext = user_token_create(user=user, name=name, actor=CLI_ACTOR, expires_at=expires_at)
        except ValidationError as exc:
            raise refusal(exc) from exc
        expiry = token.expires_at.isoformat(timespec="seconds") if token.expires_at else "never"
        label = f" ({token.name})" if token.name else ""
        self.stdout.write(f"Created token {token.prefix}{label} for user {user.get_username()}; expires: {expiry}.")
        self.stdout.write("It is shown only now; TraceFlux keeps an HMAC of it, not the token:")
        self.stdout.write(plaintext)

    def _revoke(self, *, prefix: str, reason: str) -> None:
        wanted = prefix.strip()
        if wanted.startswith("tfu_"):  # a whole token was pasted: its prefix is the part after tfu_
            wanted = wanted[4:].split("_", 1)[0]
        token = UserToken.objects.select_related("user").filter(prefix=wanted).first()
        if token is None:
            raise CommandError(f"no user token with prefix {wanted!r}")
        already = token.revoked_at is not None
        token = user_token_revoke(token=token, actor=CLI_ACTOR, reason=reason)
        when = token.revoked_at.isoformat(timespec="seconds")
        owner = token.user.get_username()
        if already:
            self.stdout.write(f"Token {token.prefix} of user {owner} was already revoked at {when}.")
        else:
            self.stdout.write(f"Revoked token {token.prefix} of user {owner} at {when}.")
