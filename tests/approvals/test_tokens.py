"""People's API tokens: only an HMAC is stored; bad tokens get 401 with a Token challenge; CLI and admin issue them."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from approvals.models import UserToken
from approvals.tokens import user_token_create, user_token_revoke
from traceflux.audit.models import AuditEvent

pytestmark = pytest.mark.django_db

LIST = reverse("approvals_api:request-list")


def token_client(plaintext: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    return client


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command("user_token", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_it_authenticates_with_a_token_and_stores_only_its_hmac(approver1, admin_user):
    token, plaintext = user_token_create(user=approver1, name="laptop", actor=admin_user)
    secret = plaintext.rsplit("_", 1)[1]

    response = token_client(plaintext).get(LIST)

    assert response.status_code == 200
    assert plaintext.startswith(f"tfu_{token.prefix}_")
    stored = [str(value) for row in UserToken.objects.values() for value in row.values()]
    stored += [str(value) for row in UserToken.history.values() for value in row.values()]
    stored += [str(row) for row in AuditEvent.objects.values_list("data", "reason")]
    assert stored and not any(secret in value for value in stored)
    assert AuditEvent.objects.filter(action="user_token.created").exists()


@pytest.mark.parametrize(
    "header",
    [
        "Token tfu_nothex000000_abcdefghijklmnopqrstuvwxyz",
        "Token not-a-token",
        "Bearer {plaintext}",
        "Token tfu_0123456789ab_abcdefghijklmnopqrstuvwxyz",
        "Token {prefix_with_wrong_secret}",
    ],
)
def test_it_refuses_a_malformed_or_unknown_token_with_401_and_a_token_challenge(approver1, admin_user, header):
    token, plaintext = user_token_create(user=approver1, name="", actor=admin_user)
    header = header.format(plaintext=plaintext, prefix_with_wrong_secret=f"tfu_{token.prefix}_{'x' * 43}")
    response = APIClient().get(LIST, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_it_refuses_a_revoked_token(approver1, admin_user):
    token, plaintext = user_token_create(user=approver1, name="", actor=admin_user)
    user_token_revoke(token=token, actor=admin_user, reason="laptop lost")

    response = token_client(plaintext).get(LIST)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "revoked" in response.json()["detail"]
    assert AuditEvent.objects.filter(action="user_token.revoked", reason="laptop lost").exists()


def test_it_refuses_an_expired_token(approver1, admin_user):
    token, plaintext = user_token_create(
        user=approver1, name="", actor=admin_user, expires_at=timezone.now() + timedelta(hours=1)
    )
    UserToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = token_client(plaintext).get(LIST)

    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_it_refuses_the_token_of_an_inactive_user(approver1, admin_user):
    _, plaintext = user_token_create(user=approver1, name="", actor=admin_user)
    approver1.is_active = False
    approver1.save()

    assert token_client(plaintext).get(LIST).status_code == 401


def test_it_asks_for_credentials_when_there_are_none():
    response = APIClient().get(LIST)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_it_records_last_use_at_most_once_a_minute(approver1, admin_user):
    token, plaintext = user_token_create(user=approver1, name="", actor=admin_user)
    client = token_client(plaintext)

    client.get(LIST)
    token.refresh_from_db()
    first = token.last_used_at
    client.get(LIST)
    token.refresh_from_db()
    assert first is not None
    assert token.last_used_at == first

    stale = timezone.now() - timedelta(minutes=2)
    UserToken.objects.filter(pk=token.pk).update(last_used_at=stale)
    client.get(LIST)
    token.refresh_from_db()
    assert token.last_used_at > stale + timedelta(minutes=1)


def test_it_prints_the_token_alone_on_the_last_line_and_the_token_works(approver1):
    lines = run("create", "--user", "approver1", "--name", "terminal", "--expires-in", "30d")

    plaintext = lines[-1]
    token = UserToken.objects.get()
    assert plaintext.startswith(f"tfu_{token.prefix}_")
    assert token.user == approver1
    assert token.name == "terminal"
    assert token.expires_at > timezone.now() + timedelta(days=29)
    assert token_client(plaintext).get(LIST).status_code == 200


def test_it_revokes_by_prefix_from_the_command_line(approver1, admin_user):
    token, plaintext = user_token_create(user=approver1, name="", actor=admin_user)

    lines = run("revoke", token.prefix, "--reason", "rotated")

    token.refresh_from_db()
    assert token.revoked_at is not None
    assert "Revoked" in lines[-1]
    assert token_client(plaintext).get(LIST).status_code == 401


def test_it_names_an_unknown_user_or_prefix_on_the_command_line(db):
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        run("create", "--user", "nobody")
    with pytest.raises(CommandError, match="no user token with prefix"):
        run("revoke", "0123456789ab")


def test_it_shows_the_token_once_from_the_admin_add_form(client, admin_user, approver1):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:approvals_usertoken_add"),
        {"user": approver1.pk, "name": "from the console", "expires_at_0": "", "expires_at_1": ""},
    )

    assert response.status_code == 200
    token = UserToken.objects.get()
    body = response.content.decode()
    assert f"tfu_{token.prefix}_" in body
    plaintext = body.split('id="issued-token"', 1)[1].split(">", 1)[1].split("<", 1)[0]
    assert token_client(plaintext).get(LIST).status_code == 200
    page = client.get(reverse("admin:approvals_usertoken_change", args=[token.pk])).content.decode()
    assert token.secret_hmac not in page
    assert plaintext not in page


def test_it_revokes_through_the_admin_action(client, admin_user, approver1):
    token, plaintext = user_token_create(user=approver1, name="", actor=admin_user)
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:approvals_usertoken_changelist"),
        {"action": "revoke_tokens", ACTION_CHECKBOX_NAME: [token.pk], "confirm": "yes", "reason": "left the team"},
    )

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert token_client(plaintext).get(LIST).status_code == 401
