"""Sign-in attempts on the console's login page (settings.LOGIN_URL) are throttled per address and per username
(traceflux.login, TRACEFLUX_RATE_LOGIN_IP / TRACEFLUX_RATE_LOGIN_USERNAME), and a password can be tried nowhere else.

The budgets are fixed windows in the shared cache (django-ratelimit): "after the window" is the clock moved on.
"""

from __future__ import annotations

import base64
import time

import pytest
from django.conf import settings
from django.shortcuts import resolve_url
from django.urls import reverse

from tests.factories import UserFactory
from traceflux.audit.models import AuditEvent

PASSWORD = "correct-horse-battery-staple-42"


def budget(group: str) -> int:
    return int(settings.TRACEFLUX_RATE_LIMITS[group].split("/")[0])


@pytest.fixture
def staff(db):
    user = UserFactory(username="oncall")
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.fixture(autouse=True)
def later(monkeypatch):
    """django-ratelimit's clock, stopped: a window never ends during a test (a key's window may start at any second).
    later(seconds) moves it on."""

    class Clock:
        now = time.time()

        @classmethod
        def time(cls) -> float:
            return cls.now

    monkeypatch.setattr("django_ratelimit.core.time", Clock)

    def move(seconds: float) -> None:
        Clock.now += seconds

    return move


def sign_in(client, username: str, password: str, *, address: str = "198.51.100.7"):
    return client.post(resolve_url(settings.LOGIN_URL), {"username": username, "password": password,
                                                         "next": reverse("admin:index")}, REMOTE_ADDR=address)


def assert_throttled(response, *, what: str) -> None:
    assert response.status_code == 429
    wait = int(response["Retry-After"])
    assert 1 <= wait <= 60
    text = response.content.decode()
    assert f"Too many sign-in attempts {what}" in text
    assert f"Try again in {wait} s." in text


def test_it_answers_429_to_the_attempt_after_the_usernames_budget(client, staff):
    for _ in range(budget("login_username")):
        response = sign_in(client, "oncall", "wrong password")
        assert response.status_code == 200  # the form again, with its error
        assert "Please enter the correct username and password" in response.content.decode()
    # Over the budget, even the right password is not tried: the answer is the same whoever guesses.
    assert_throttled(sign_in(client, "oncall", PASSWORD), what="for this username")
    assert "_auth_user_id" not in client.session
    # From another address too: the username's budget is the username's.
    assert_throttled(sign_in(client, "ONCALL", "wrong password", address="203.0.113.9"), what="for this username")


def test_it_answers_429_to_the_attempt_after_the_addresss_budget(client, staff):
    for attempt in range(budget("login_ip")):
        assert sign_in(client, f"guess-{attempt}", "wrong password").status_code == 200
    assert_throttled(sign_in(client, "oncall", PASSWORD), what="from this address")
    # Another address has its own budget.
    assert sign_in(client, "oncall", PASSWORD, address="203.0.113.9").status_code == 302


def test_it_lets_the_right_password_in_once_the_window_has_passed(client, staff, later):
    for _ in range(budget("login_username") + 1):
        sign_in(client, "oncall", "wrong password")
    assert_throttled(sign_in(client, "oncall", PASSWORD), what="for this username")

    later(61)
    response = sign_in(client, "oncall", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")
    assert client.get(reverse("admin:index")).status_code == 200


def test_it_counts_a_put_like_a_post(client, staff):
    """LoginView treats PUT as POST: a PUT is an attempt too."""
    for _ in range(budget("login_ip")):
        client.put(resolve_url(settings.LOGIN_URL), "username=oncall&password=x", REMOTE_ADDR="198.51.100.7",
                   content_type="application/x-www-form-urlencoded")
    assert_throttled(sign_in(client, "someone", "x"), what="from this address")


def test_it_tries_no_password_when_the_attempts_cannot_be_counted(client, staff, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    def down(*args, **kwargs):
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("incidents.api.limits.get_usage", down)  # the counters the login budget uses too
    response = sign_in(client, "oncall", PASSWORD)
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "Signing in is unavailable for a moment" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_leaves_the_login_page_itself_alone(client, staff):
    for _ in range(budget("login_ip") + 2):
        assert client.get(resolve_url(settings.LOGIN_URL), REMOTE_ADDR="198.51.100.7").status_code == 200


def test_it_audits_a_failed_sign_in_without_the_password(client, staff):
    sign_in(client, "oncall", "Tr0ub4dor&3-not-it")
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert (event.outcome, event.target_repr, event.data) == ("denied", "oncall",
                                                              {"username": "oncall", "known_account": True})
    assert event.ip == "198.51.100.7"
    assert "Tr0ub4dor" not in str(event.__dict__)


def test_it_never_audits_an_unknown_username_which_may_be_a_password(client, staff):
    sign_in(client, PASSWORD, "oncall")  # the fields swapped, as happens
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.data == {"username": None, "known_account": False}
    assert PASSWORD not in str(event.__dict__)


def test_it_audits_nothing_for_a_successful_sign_in_or_a_throttled_one(client, staff):
    assert sign_in(client, "oncall", PASSWORD).status_code == 302
    assert not AuditEvent.objects.filter(action="auth.login_failed").exists()
    for _ in range(budget("login_username")):  # the successful attempt counted: the last of these is throttled
        sign_in(client, "oncall", "wrong password")
    assert AuditEvent.objects.filter(action="auth.login_failed").count() == budget("login_username") - 1
    assert_throttled(sign_in(client, "oncall", "wrong password"), what="for this username")
    assert AuditEvent.objects.filter(action="auth.login_failed").count() == budget("login_username") - 1


def test_it_offers_no_other_way_to_try_a_password(client, staff):
    """DRF's HTTP Basic authentication is off: the API answers a right and a wrong password alike, without trying."""
    answers = set()
    for password in (PASSWORD, "wrong password"):
        basic = base64.b64encode(f"oncall:{password}".encode()).decode()
        for url in (reverse("api-schema"), reverse("approvals_api:request-list"), reverse("replays-api:replay-list")):
            response = client.get(url, headers={"authorization": f"Basic {basic}"})
            answers.add((url, response.status_code))
    assert answers == {(reverse("api-schema"), 200), (reverse("approvals_api:request-list"), 401),
                       (reverse("replays-api:replay-list"), 401)}
