"""CSRF is enforced on every state-changing request a browser session can make: every URL pattern (enumerated from the
resolver, as the authorization matrix does), every unsafe method, with the matrix's bodies, sent by a signed-in
superuser without a CSRF token, is refused with 403 and changes nothing in the database. The APIs included: DRF's
SessionAuthentication enforces CSRF for a session, as the pages do.

The agent API takes no session: a key, or for enrollment the token in the body. A cookie is nothing to it (401), so a
forged cross-site request has nothing to ride on; enrollment, which reads no credential but its body, is left out.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.middleware.csrf import get_token
from django.test import RequestFactory

from tests.security.conftest import Estate
from tests.security.endpoints import UNSAFE, Endpoint, endpoints, send

SESSIONLESS = {"agent_api:heartbeats", "agent_api:commands", "agent_api:command-ack", "agent_api:signing-keys",
               "artifacts-api:upload"}
NO_CREDENTIAL = {"agent_api:enroll"}


def database() -> dict[str, list[dict[str, Any]]]:
    """Every row of every table but the sessions'."""
    return {
        model._meta.label: list(model._base_manager.order_by("pk").values())
        for model in apps.get_models()
        if model._meta.app_label != "sessions"
    }


def is_csrf_refusal(response: Any) -> bool:
    # Django's CsrfViewMiddleware: "CSRF verification failed"; DRF's SessionAuthentication: "CSRF Failed: ..." (in the
    # body, or only in response.data where an HTML renderer draws its own error page).
    return response.status_code == 403 and (b"CSRF" in response.content or "CSRF" in str(getattr(response, "data", "")))


def session_endpoints() -> list[Endpoint]:
    return [endpoint for endpoint in endpoints() if endpoint.key not in SESSIONLESS | NO_CREDENTIAL]


def test_it_knows_every_agent_endpoint_it_leaves_out():
    agent_api = {endpoint.key for endpoint in endpoints() if endpoint.route.startswith("api/v1/agent/")}
    assert agent_api == SESSIONLESS | NO_CREDENTIAL


@pytest.fixture
def signed_in(estate: Estate):
    client = estate.client("admin", enforce_csrf_checks=True)
    client.get("/")  # the session is in use, as in a browser
    return client


def test_it_refuses_every_unsafe_request_of_a_session_without_its_csrf_token(estate, signed_in):
    before = database()
    passed = []
    for endpoint in session_endpoints():
        for method in UNSAFE:
            response = send(signed_in, endpoint, method, estate)
            if not is_csrf_refusal(response):
                passed.append(f"{endpoint} {method}: {response.status_code}")
    assert not passed, "these requests got past CSRF without a token:\n" + "\n".join(passed)
    assert database() == before


def test_it_takes_no_session_on_the_agent_api(estate, signed_in):
    before = database()
    for key in sorted(SESSIONLESS):
        endpoint = next(e for e in endpoints() if e.key == key)
        for method in UNSAFE:
            assert send(signed_in, endpoint, method, estate).status_code == 401, f"{endpoint} {method}"
    assert database() == before


def test_it_lets_the_same_posts_through_with_the_token(estate):
    """The refusals above are CSRF's and nothing else's: with the token, no POST is refused for it."""
    page = RequestFactory().get("/")
    token = get_token(page)  # what a form carries (masked); the cookie holds the secret it was made from
    secret = page.META["CSRF_COOKIE"]
    client = estate.client("admin", enforce_csrf_checks=True, headers={"x-csrftoken": token})
    client.cookies["csrftoken"] = secret
    refused = []
    for endpoint in session_endpoints():
        response = send(client, endpoint, "POST", estate)
        if is_csrf_refusal(response):
            refused.append(str(endpoint))
        if endpoint.key == "admin:logout":
            client.force_login(estate.people["admin"])
            client.cookies["csrftoken"] = secret
    assert not refused, f"refused for CSRF although the token was sent: {refused}"
