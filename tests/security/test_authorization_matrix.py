"""Who may do what, on every URL there is: every pattern of the URLconf (enumerated from the resolver), every HTTP
method, eight principals; each request's outcome is checked against one table, MATRIX, below.

The principals (tests/security/conftest.py), the columns of the table in this order:
    anonymous      no credentials at all
    same_env_key   the key of the incident's agent, in prod        (Authorization: Bearer tfk_…)
    other_env_key  the key of an agent in dev                      (Authorization: Bearer tfk_…)
    viewer         a person with view_environment on prod          (signed in: a session)
    dry_runner     view + replay_dry_run on prod
    executor       view + replay_dry_run + replay_execute + operate_environment on prod
    approver       view + approve_environment on prod
    admin          a superuser
Every person is staff (the console's login admits them) but holds no model permission: the console's pages are
closed to them (403), whatever their environments. tests/test_visibility.py covers a console operator's narrowed lists.

Each pattern is filled with ids of real objects of prod (tests/security/endpoints.py): a request reaches the object,
not a 404 for a missing one. Requests that need an input to get as far as the permission check carry one (QUERIES,
BODIES there). Outcomes, one letter per principal (spaces are only for reading: anonymous | keys | people):
    A  allowed: not refused by authentication or authorization (2xx; a 3xx that is not to the login page; a 400, 409,
       415 or 429 for the input, the state or the rate)
    L  a redirect to the login page (settings.LOGIN_URL)
    1  401    3  403    4  404    5  405
A 5xx, or an exception, is always a failure.

A pattern with no row in MATRIX fails the test: a new URL gets its row before it gets merged. The admin's hundreds of
model URLs are rows generated from CONSOLE (one line per registered model) by ADMIN_MODEL_PAGES, so a new model or a
new custom admin URL fails too, until it is described.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from django.contrib import admin

from tests.security.conftest import PRINCIPALS, Estate
from tests.security.endpoints import METHODS, Endpoint, admin_model, endpoints, is_login_redirect, send

# --- the table ---------------------------------------------------------------------------------------------------

ALL = "*"  # a row's default, for every method it does not name


def page(get: str = "L LL AAAAA") -> dict[str, str]:
    """A portal page: @login_required, then @require_safe (GET and HEAD)."""
    return {"GET": get, "HEAD": get, ALL: "L LL 55555"}


def form(post: str) -> dict[str, str]:
    """A portal form's target: @login_required, then @require_POST."""
    return {"POST": post, ALL: "L LL 55555"}


def agent_api(**methods: str) -> dict[str, str]:
    """An agent endpoint: a key or 401; OPTIONS answers any valid key (metadata only); other methods 405."""
    return {"OPTIONS": "1 AA 11111", ALL: "1 55 11111", **methods}


def people_api(**methods: str) -> dict[str, str]:
    """The approvals and replays APIs: a personal token or the session; an agent key is not a token (401)."""
    return {"OPTIONS": "1 11 AAAAA", ALL: "1 11 55555", **methods}


SUPERUSER = "L LL 3333A"  # only the superuser: the people hold no model permission (the console) and are no superusers
NOBODY = "L LL 33333"

MATRIX: dict[str, dict[str, str]] = {
    # --- the project's pages (traceflux/urls.py) ---
    "dashboard": page(),
    "favicon": {"GET": "A AA AAAAA", "HEAD": "A AA AAAAA", ALL: "5 55 55555"},
    "healthz": {"GET": "A AA AAAAA", "HEAD": "A AA AAAAA", ALL: "5 55 55555"},
    "readyz": {"GET": "A AA AAAAA", "HEAD": "A AA AAAAA", ALL: "5 55 55555"},
    # TRACEFLUX_METRICS_TOKEN is set here, as in production: neither a session nor an agent key is the token.
    "metrics": {"GET": "1 33 11111", "HEAD": "1 33 11111", ALL: "5 55 55555"},
    "audit-explorer": page(),
    "audit-export-csv": page(),
    "audit-export-json": page(),
    "audit-verify": form(post=SUPERUSER),
    "audit-history": page(),
    # --- the incident investigation page: operate_environment to act ---
    "incidents-ui:investigate": page(),
    "incidents-ui:transition": form(post="L LL 33A3A"),
    "incidents-ui:add_note": form(post="L LL 33A3A"),
    # --- approvals: the requester is none of these; approve_environment decides (superusers may approve too) ---
    "approvals:inbox": page(),
    "approvals:review": page(),
    "approvals:approve": form(post="L LL 333AA"),
    "approvals:deny": form(post="L LL 333AA"),
    # Anyone signed in may open it; the form offers only environments where they operate (the others' POST is a 400).
    "approvals:promote": {"GET": "L LL AAAAA", "POST": "L LL AAAAA", ALL: "L LL 55555"},
    # --- replays: replay_dry_run to start one, replay_execute to ask for approval and execute ---
    "replays:history": page(),
    "replays:new": {"GET": "L LL 3AA3A", "POST": "L LL 3AA3A", ALL: "L LL 55555"},
    "replays:compare": page(),
    "replays:detail": page(),
    "replays:stages": page(),
    "replays:request_approval": form(post="L LL 33A3A"),
    "replays:execute": form(post="L LL 33A3A"),
    "replays:cancel": form(post="L LL 3AA3A"),  # a dry run: whoever may dry-run may cancel it
    "replays:report_json": page(),
    "replays:evidence": page(),
    "replays:summary_md": page(),
    # --- the agent API: a key of prod's agent is allowed; another environment's key is refused or sees nothing ---
    # The upload is the incident's bundle again: a duplicate for prod's agent, a manifest naming prod for dev's (403).
    "artifacts-api:upload": agent_api(POST="1 A3 11111"),
    # Enrollment takes no key: the token in the body is the credential, whoever sends it.
    "agent_api:enroll": {"POST": "A AA AAAAA", "OPTIONS": "A AA AAAAA", ALL: "5 55 55555"},
    "agent_api:heartbeats": agent_api(POST="1 A3 11111"),  # the heartbeat names prod
    "agent_api:commands": agent_api(GET="1 AA 11111", HEAD="1 AA 11111"),  # each agent leases only its own
    "agent_api:command-ack": agent_api(POST="1 A4 11111"),  # another agent's command does not exist for it
    "agent_api:signing-keys": agent_api(GET="1 AA 11111", HEAD="1 AA 11111"),  # public keys, for any valid key
    # --- the people's APIs ---
    "approvals_api:request-list": people_api(GET="1 11 AAAAA", HEAD="1 11 AAAAA"),
    "approvals_api:request-detail": people_api(GET="1 11 AAAAA", HEAD="1 11 AAAAA"),
    "approvals_api:request-approve": people_api(POST="1 11 333AA"),
    "approvals_api:request-deny": people_api(POST="1 11 333AA"),
    "replays-api:replay-list": people_api(GET="1 11 AAAAA", HEAD="1 11 AAAAA", POST="1 11 3AA3A"),
    "replays-api:replay-detail": people_api(GET="1 11 AAAAA", HEAD="1 11 AAAAA"),
    "replays-api:replay-evidence": people_api(GET="1 11 AAAAA", HEAD="1 11 AAAAA"),
    "replays-api:replay-report": people_api(GET="1 11 AAAAA", HEAD="1 11 AAAAA"),
    # The OpenAPI schema and its Swagger UI are public: they describe the API and hold no data.
    "api-schema": {"GET": "A AA AAAAA", "HEAD": "A AA AAAAA", "OPTIONS": "A AA AAAAA", ALL: "5 55 55555"},
    "api-docs": {"GET": "A AA AAAAA", "HEAD": "A AA AAAAA", ALL: "5 55 55555"},
    # --- the console's own pages: staff only, anyone else is sent to the login page ---
    "admin:index": {ALL: "L LL AAAAA"},
    # LoginView treats PUT as POST; a signed-in person GETting it is sent on to the index.
    "admin:login": {"PATCH": "5 55 55555", "DELETE": "5 55 55555", ALL: "A AA AAAAA"},
    # Someone not signed in is sent to the index (then to the login page); logging out is a POST.
    "admin:logout": {"POST": "A AA AAAAA", "OPTIONS": "A AA AAAAA", ALL: "A AA 55555"},
    "admin:password_change": {"PATCH": "L LL 55555", "DELETE": "L LL 55555", ALL: "L LL AAAAA"},
    "admin:password_change_done": {"GET": "L LL AAAAA", "HEAD": "L LL AAAAA", "OPTIONS": "L LL AAAAA",
                                   ALL: "L LL 55555"},
    # No admin here has autocomplete fields: every query is refused.
    "admin:autocomplete": {"GET": NOBODY, "HEAD": NOBODY, "OPTIONS": "L LL AAAAA", ALL: "L LL 55555"},
    "admin:jsi18n": {"GET": "L LL AAAAA", "HEAD": "L LL AAAAA", "OPTIONS": "L LL AAAAA", ALL: "L LL 55555"},
    # "View on site": no model here has a page of its own (get_absolute_url), so there is nowhere to go.
    "admin:view_on_site": {ALL: "L LL 44444"},
    # An app's index lists the models the person may see: none, so it does not exist for them.
    "admin:app_list": {ALL: "L LL 4444A"},
    "admin/(?P<url>.*)$": {ALL: "L LL 44444"},
    # The console's custom pages.
    "admin:incidents_pipelineversion_import_alertmanager": {ALL: SUPERUSER},
    "admin:artifacts_artifact_download": {ALL: "L LL 4444A"},  # outside what one may view: missing
    "admin:auth_user_password_change": {ALL: SUPERUSER},
}

# Every registered model's console pages, from what the console lets a superuser do with it. Nothing of the product
# is deleted or reverted (services only); only Django's users and groups can be deleted.
ADD, EDIT, DELETE = "add", "edit", "delete"
CONSOLE: dict[str, set[str]] = {
    "auth.Group": {ADD, EDIT, DELETE},
    "auth.User": {ADD, EDIT, DELETE},
    "audit.AuditEvent": set(),
    "incidents.Environment": {ADD, EDIT},  # its posture, with a reason
    "incidents.Agent": {ADD},
    "incidents.AgentKey": {ADD},
    "incidents.EnrollmentToken": {ADD},
    "incidents.Heartbeat": set(),
    "incidents.Command": set(),
    "incidents.PipelineVersion": {ADD},
    "incidents.Deployment": {ADD},
    "incidents.Incident": {ADD, EDIT},
    "incidents.IncidentNote": set(),
    "artifacts.Artifact": set(),
    "approvals.ApprovalRequest": set(),
    "approvals.ApprovalDecision": set(),
    "approvals.UserToken": {ADD},
    "replays.ReplayExecution": set(),
}
ADMIN_PAGE = re.compile(r"^admin:(?P<app>[a-z_]+?)_(?P<model>[a-z]+)_(?P<page>changelist|add|change|delete|history|"
                        r"simple_history)$")


def admin_model_pages(endpoint: Endpoint) -> dict[str, str] | None:
    """The generated row of a standard ModelAdmin page, None for any other URL (which needs its own row)."""
    model = admin_model(endpoint)
    if model is None or endpoint.key in MATRIX:
        return None
    can = CONSOLE[model._meta.label]
    if not endpoint.name:  # <object_id>/ redirects to <object_id>/change/, for any staff member
        return {ALL: "L LL AAAAA"} if endpoint.route.endswith("<path:object_id>/") else None
    match = ADMIN_PAGE.match(endpoint.name)
    if match is None or f"{match['app']}.{match['model']}" != model._meta.label_lower:
        return None
    kind = match["page"]
    if kind in ("changelist", "history"):
        return {ALL: SUPERUSER}
    if kind == "simple_history":  # a past version is shown, never restored
        return {"POST": NOBODY, ALL: SUPERUSER}
    if kind == "add":
        return {ALL: SUPERUSER if ADD in can else NOBODY}
    if kind == "change":  # the page shows the object; a POST changes it
        return {"POST": SUPERUSER if EDIT in can else NOBODY, ALL: SUPERUSER}
    return {ALL: SUPERUSER if DELETE in can else NOBODY}


def expected_row(endpoint: Endpoint) -> dict[str, str] | None:
    return MATRIX.get(endpoint.key) or admin_model_pages(endpoint)


def expected(row: dict[str, str], method: str, principal: str) -> str:
    letters = row.get(method, row[ALL]).replace(" ", "")
    assert len(letters) == len(PRINCIPALS), f"{letters!r} must have one letter per principal"
    return letters[PRINCIPALS.index(principal)]


def outcome(response: Any) -> str:
    if is_login_redirect(response):
        return "L"
    if response.status_code >= 500:
        return f"!{response.status_code}"
    return {401: "1", 403: "3", 404: "4", 405: "5"}.get(response.status_code, "A")


# --- the tests ---------------------------------------------------------------------------------------------------


def test_it_has_a_row_for_every_url_pattern():
    missing = [endpoint.key for endpoint in endpoints() if expected_row(endpoint) is None]
    assert not missing, f"these URL patterns have no row in the authorization MATRIX: {missing}"


def test_it_describes_every_registered_model_and_no_url_that_is_gone():
    registered = {model._meta.label for model in admin.site._registry}
    assert set(CONSOLE) == registered, f"CONSOLE differs from the admin's registry: {set(CONSOLE) ^ registered}"
    keys = {endpoint.key for endpoint in endpoints()}
    assert not set(MATRIX) - keys, f"MATRIX has rows for URLs that no longer exist: {sorted(set(MATRIX) - keys)}"


def test_it_has_a_well_formed_row_for_every_method():
    for endpoint in endpoints():
        row = expected_row(endpoint)
        assert row is not None, endpoint
        assert ALL in row or set(row) >= set(METHODS), f"{endpoint}: no default ({ALL}) and not every method"
        assert set(row) <= {*METHODS, ALL}, f"{endpoint}: unknown methods {set(row) - {*METHODS, ALL}}"
        for method in METHODS:
            letters = row.get(method, row.get(ALL, "")).replace(" ", "")
            assert re.fullmatch(r"[AL1345]{8}", letters), f"{endpoint} {method}: {letters!r}"


@pytest.fixture
def metrics_token(settings) -> str:
    settings.TRACEFLUX_METRICS_TOKEN = "metrics-scrape-token-for-the-matrix"
    return settings.TRACEFLUX_METRICS_TOKEN


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_it_answers_every_url_and_method_as_the_matrix_says(estate: Estate, principal, metrics_token, caplog):
    caplog.set_level(logging.ERROR, logger="django.request")  # a thousand "Forbidden: ..." would hide a failure
    client = estate.client(principal)
    wrong: list[str] = []
    for endpoint in endpoints():
        row = expected_row(endpoint)
        assert row is not None, f"{endpoint}: no row in MATRIX (test_it_has_a_row_for_every_url_pattern says which)"
        for method in METHODS:
            want = expected(row, method, principal)
            try:
                response = send(client, endpoint, method, estate)
            except Exception as exc:  # a 500 the test client re-raises: report it with the others
                wrong.append(f"{endpoint} {method}: expected {want}, raised {type(exc).__name__}: {exc}")
                continue
            got = outcome(response)
            if got != want:
                where = f" → {response['Location']}" if response.has_header("Location") else ""
                wrong.append(f"{endpoint} {method}: expected {want}, got {got} ({response.status_code}{where})")
            if endpoint.key == "admin:logout" and principal in estate.people:
                client.force_login(estate.people[principal])  # logging out worked: sign in again for what follows
    assert not wrong, f"{principal}: {len(wrong)} answers differ from the matrix:\n" + "\n".join(wrong)
