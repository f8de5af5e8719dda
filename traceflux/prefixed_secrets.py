"""Prefixed secrets: agent keys (tfk_), enrollment tokens (tfe_) and personal API tokens (tfu_). Imports no app.

A secret is shown once as `<tag>_<prefix>_<secret>`. Only the public prefix (for lookup) and an HMAC-SHA256 of the
secret under a per-kind key from settings are stored. The secret is 256 random bits, so a keyed HMAC is as strong as
a password hash would be and costs microseconds per request instead of hundreds of milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from django.conf import settings

PREFIX_LEN = 12
_DUMMY_DIGEST = "0" * 64


@dataclass(frozen=True)
class SecretKind:
    tag: str
    key_setting: str

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(rf"^{self.tag}_(?P<prefix>[0-9a-f]{{{PREFIX_LEN}}})_(?P<secret>[A-Za-z0-9_-]{{20,100}})$")

    def digest(self, secret: str) -> str:
        key = getattr(settings, self.key_setting)
        return hmac.new(key.encode(), secret.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> tuple[str, str, str]:
        """A new (prefix, secret_hmac, plaintext); the plaintext is for the caller to show once."""
        prefix = secrets.token_hex(PREFIX_LEN // 2)
        secret = secrets.token_urlsafe(32)
        return prefix, self.digest(secret), f"{self.tag}_{prefix}_{secret}"

    def parse(self, text: str) -> tuple[str, str] | None:
        """(prefix, secret) of a well-formed plaintext, else None."""
        match = self.pattern.match(text.strip())
        return (match["prefix"], match["secret"]) if match else None

    def matches(self, secret: str, stored_hmac: str | None) -> bool:
        """Constant-time check; compares against a dummy when the prefix is unknown, so timing reveals nothing."""
        return hmac.compare_digest(self.digest(secret), stored_hmac or _DUMMY_DIGEST) and stored_hmac is not None

    def prefix_in(self, text: str) -> str | None:
        """The public prefix of whatever such secret `text` carries (an Authorization header), for counting."""
        found = re.search(rf"{self.tag}_([0-9a-f]{{{PREFIX_LEN}}})_", text or "")
        return found.group(1) if found else None


AGENT_KEY = SecretKind(tag="tfk", key_setting="AGENT_KEY_HMAC_KEY")
ENROLLMENT_TOKEN = SecretKind(tag="tfe", key_setting="ENROLLMENT_TOKEN_HMAC_KEY")
USER_TOKEN = SecretKind(tag="tfu", key_setting="USER_TOKEN_HMAC_KEY")
