"""Personal API tokens: `Authorization: Token tfu_<prefix>_<secret>`, looked up by prefix, checked by HMAC.

Mirrors the agent keys (incidents.api.auth): the secret is 256 random bits, so a keyed HMAC-SHA256 under
settings.USER_TOKEN_HMAC_KEY is enough and costs microseconds. The plaintext is returned once and never stored.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from traceflux import audit
from traceflux.prefixed_secrets import USER_TOKEN

from .models import UserToken

LAST_USED_RESOLUTION = timedelta(minutes=1)
user_token_digest = USER_TOKEN.digest


@transaction.atomic
def user_token_create(*, user: Any, name: str, actor: Any, expires_at: datetime | None = None) -> tuple[UserToken, str]:
    """Create a token for `user` and return it with its plaintext form `tfu_<prefix>_<secret>`, never stored."""
    if not user.is_active:
        raise ValidationError({"user": f"{user.get_username()} is inactive"})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "a token cannot expire in the past"})
    prefix, secret_hmac, plaintext = USER_TOKEN.issue()
    token = UserToken(user=user, name=name.strip(), prefix=prefix, secret_hmac=secret_hmac, expires_at=expires_at)
    if hasattr(actor, "get_username"):
        token._history_user = actor  # type: ignore[attr-defined]
    token.save()
    audit.record(
        actor=actor,
        action="user_token.created",
        target=token,
        data={
            "prefix": prefix,
            "user": user.get_username(),
            "name": token.name,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return token, plaintext


@transaction.atomic
def user_token_revoke(*, token: UserToken, actor: Any, reason: str = "") -> UserToken:
    """Revoke the token; revoking a revoked token changes nothing and records nothing."""
    moved = UserToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db()
    if moved:
        token._history_user = actor if hasattr(actor, "get_username") else None  # type: ignore[attr-defined]
        token._change_reason = reason or "revoked"  # type: ignore[attr-defined]
        token.save(update_fields=["revoked_at"])
        audit.record(
            actor=actor,
            action="user_token.revoked",
            target=token,
            reason=reason,
            data={"prefix": token.prefix, "user": token.user.get_username()},
        )
    return token


class UserTokenAuthentication(BaseAuthentication):
    """`Authorization: Token <token>`. 401 (with WWW-Authenticate: Token) for a malformed, unknown, revoked or
    expired token, or an inactive user; no header at all falls through to the next class (the session)."""

    keyword = "Token"

    def authenticate_header(self, request) -> str:
        return self.keyword

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != self.keyword.lower() or not value.strip():
            raise exceptions.AuthenticationFailed("malformed Authorization header: expected 'Token <token>'")
        parsed = USER_TOKEN.parse(value)
        if parsed is None:
            raise exceptions.AuthenticationFailed("malformed token: expected tfu_<prefix>_<secret>")
        prefix, secret = parsed
        token = UserToken.objects.select_related("user").filter(prefix=prefix).first()
        # matches() compares against a dummy for an unknown prefix, so timing does not reveal which prefixes exist.
        if not USER_TOKEN.matches(secret, token.secret_hmac if token else None) or token is None:
            raise exceptions.AuthenticationFailed("unknown token")
        now = timezone.now()
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("this token has been revoked")
        if token.expires_at is not None and token.expires_at <= now:
            raise exceptions.AuthenticationFailed("this token has expired")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("this token's user is inactive")
        if token.last_used_at is None or token.last_used_at < now - LAST_USED_RESOLUTION:
            # At most one write a minute per token: the conditional UPDATE is a no-op when another request won.
            UserToken.objects.filter(pk=token.pk, last_used_at=token.last_used_at).update(last_used_at=now)
        return token.user, token
