"""`manage.py signing_key generate PATH`, `signing_key public PATH` and `signing_key list`: the portal's Ed25519 keys.

The keys that sign approval credentials are files named by TRACEFLUX_SIGNING_KEY_FILES, never database rows, so these
commands touch no database: `generate` writes a new private key for an operator to deploy, `public` prints the public
half of a private key (what TRACEFLUX_SIGNING_PUBLIC_KEY_FILES takes once that key is retired), `list` shows what the
portal publishes now. docs/operations.md describes a rotation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from replays.engine.credentials import key_id
from traceflux import signing


class Command(BaseCommand):
    help = "Generate an Ed25519 signing key, print a key's public half, or list the published keys."
    requires_system_checks: list[str] = []  # `generate` must work while the configured key file is still missing

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{generate,public,list}")
        generate = actions.add_parser("generate", help="write a new PEM (PKCS#8) private key, mode 0600")
        generate.add_argument("path", help="where to write it; an existing file is never replaced")
        public = actions.add_parser("public", help="print the PEM public key of a private key file")
        public.add_argument("path")
        actions.add_parser("list", help="the keys the portal publishes now, the signer first")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "generate":
            self._generate(Path(options["path"]))
        elif action == "public":
            self._public(Path(options["path"]))
        else:
            self._list()

    def _generate(self, path: Path) -> None:
        try:
            private_key = signing.write_private_key(path)
        except FileExistsError:
            raise CommandError(f"{path} exists: a signing key is never overwritten") from None
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror or exc}") from None
        self.stdout.write(f"Wrote an Ed25519 private key to {path} (mode 0600). Its key id:")
        self.stdout.write(key_id(private_key.public_key()))

    def _public(self, path: Path) -> None:
        try:
            private_key = signing.load_private_key(path)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc).removeprefix("TRACEFLUX_SIGNING_KEY_FILES: ")) from None
        self.stderr.write(f"key id {key_id(private_key.public_key())}")
        self.stdout.write(signing.public_key_pem(private_key.public_key()).decode("ascii"), ending="")

    def _list(self) -> None:
        try:
            keys = signing.published_keys()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        for key in keys:
            role = "active (signs)" if key["active"] else "verifies only"
            self.stdout.write(f"{key['key_id']}  {role}  {key['public_key']}")
