"""The incident investigation page through its real URLs: the operator guide in order, each escalation banner with
and without its condition, next steps and why they are disabled, the lifecycle and the journal, who may see and do
what, and a query count that does not grow with the data."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalRequest
from approvals.services import approval_decide, approval_expire_overdue
from incidents.failures import failure_record
from incidents.models import Environment, Incident, IncidentNote
from incidents.services import heartbeat_record, incident_note_add, incident_open
from replays.engine import write_bundle
from replays.engine.samples import sample_bundle, sample_spec
from replays.services import replay_request_approval
from tests.approvals.conftest import shift_expiry

from .conftest import WINDOW_START, World, approve_execute, run_dry_run, run_execute, upload

SVG_NS = "{http://www.w3.org/2000/svg}"
GUIDE = ("identity", "artifacts", "deployment", "agent-health", "replays", "next-step", "audit-trail")


def page_url(incident: Incident) -> str:
    return reverse("incidents-ui:investigate", args=[incident.ref])


def transition_url(incident: Incident) -> str:
    return reverse("incidents-ui:transition", args=[incident.ref])


def note_url(incident: Incident) -> str:
    return reverse("incidents-ui:add_note", args=[incident.ref])


def html(response) -> str:
    return response.content.decode()


def banners(response) -> set[str]:
    return set(re.findall(r'id="escalation-([a-z-]+)"', html(response)))


def step(response, code: str) -> str:
    found = re.search(rf'<li id="step-{code}" class="(?:enabled|disabled)">.*?</li>', html(response), re.S)
    assert found, f"no step {code}"
    return found.group(0)


def why_not(response, code: str) -> str | None:
    found = re.search(rf'<span class="why-not" id="why-not-{code}">(.*?)</span>', html(response), re.S)
    return found.group(1) if found else None


def healthy(world: World) -> World:
    """The source agent reports in now, so its heartbeats are not stale."""
    heartbeat_record(agent=world.agent, status="ok")
    return world


@pytest.fixture
def succeeded_dry_run(prod, operator, django_capture_on_commit_callbacks):
    execution = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    assert execution.status == "succeeded", execution.error
    return execution


# --- the page ----------------------------------------------------------------------------------------------------


def test_it_sends_an_anonymous_visitor_to_the_login_page(client, prod):
    response = client.get(page_url(prod.incident))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_it_walks_the_operator_guide_in_order(client, operator, prod):
    healthy(prod)
    client.force_login(operator)

    response = client.get(page_url(prod.incident))

    assert response.status_code == 200
    body = html(response)
    positions = [body.index(f'<section id="{section}"') for section in GUIDE]
    assert positions == sorted(positions)
    identity = body[positions[0]:positions[1]]
    assert prod.incident.ref in identity and prod.agent.name in identity and "prod" in identity
    assert 'execute <span class="tag require_approval">require_approval</span>' in identity
    artifacts = body[positions[1]:positions[2]]
    assert f'id="artifact-{prod.bundle.pk}"' in artifacts
    assert prod.bundle.spec_hash in artifacts and prod.baseline.label in artifacts
    assert prod.bundle.captured_at.strftime("%Y-%m-%d %H:%M:%S") in artifacts
    assert "accepted" in artifacts
    assert banners(response) == set()


def test_it_finds_the_incident_by_id_as_well_as_by_ref(client, operator, prod):
    client.force_login(operator)

    response = client.get(reverse("incidents-ui:investigate", args=[prod.incident.pk]))

    assert response.status_code == 200
    assert response.context["incident"] == prod.incident


def test_it_links_an_incident_whose_ref_would_read_as_an_id_by_its_id(client, operator, prod, admin_user):
    numeric = incident_open(ref="90210", title="a ref of digits", environment=prod.environment, actor=admin_user,
                            window_start=WINDOW_START, window_end=WINDOW_START + timedelta(minutes=4))
    assert numeric.url_key == str(numeric.pk)
    client.force_login(operator)

    response = client.get(reverse("incidents-ui:investigate", args=[numeric.url_key]))

    assert response.context["incident"] == numeric
    assert reverse("incidents-ui:transition", args=[numeric.pk]) in html(response)


def test_it_hides_the_incident_from_an_outsider(client, outsider, prod):
    client.force_login(outsider)

    assert client.get(page_url(prod.incident)).status_code == 404
    assert client.post(transition_url(prod.incident), {"to": "investigating", "reason": "x"}).status_code == 404
    assert client.post(note_url(prod.incident), {"body": "x"}).status_code == 404
    prod.incident.refresh_from_db()
    assert prod.incident.status == "open"
    assert not IncidentNote.objects.filter(body="x").exists()


def test_it_draws_the_heartbeats_as_well_formed_svg(client, operator, prod):
    now = timezone.now()
    for minutes, status in ((9, "ok"), (6, "degraded"), (3, "failing"), (1, "ok")):
        heartbeat_record(agent=prod.agent, status=status, now=now - timedelta(minutes=minutes))
    client.force_login(operator)

    body = html(client.get(page_url(prod.incident)))

    chart = re.search(r'<div class="heartbeats-wrap" id="heartbeat-chart">(<svg\b.*?</svg>)</div>', body, re.S)
    assert chart, "no heartbeat chart"
    svg = ET.fromstring(chart.group(1))
    marks = {rect.get("class") for rect in svg.iter(f"{SVG_NS}rect") if rect.get("class") in {"ok", "degraded",
                                                                                                "failing"}}
    assert marks == {"ok", "degraded", "failing"}
    assert svg.find(f"{SVG_NS}title").text.startswith(f"Heartbeats of {prod.agent.name}")


def test_it_shows_the_audit_trail_of_the_incident_its_bundles_replays_and_approvals(
    client, operator, prod, succeeded_dry_run
):
    approval = replay_request_approval(dry_run=succeeded_dry_run, user=operator, reason="drain POP-12")
    client.force_login(operator)

    response = client.get(page_url(prod.incident))

    actions = [event.action for event in response.context["inv"].audit_events]
    for action in ("incident.opened", "artifact.uploaded", "replay.requested", "replay.succeeded",
                   "approval.requested"):
        assert action in actions, action
    seqs = [event.seq for event in response.context["inv"].audit_events]
    assert seqs == sorted(seqs)
    body = html(response)
    assert reverse("replays:detail", args=[succeeded_dry_run.pk]) in body
    assert reverse("approvals:review", args=[approval.pk]) in body


# --- escalation banners ------------------------------------------------------------------------------------------


def test_it_escalates_an_incident_without_a_source_agent(client, operator, prod, admin_user):
    orphan = incident_open(ref="INC-PROD-ORPHAN", title="who saw this?", environment=prod.environment,
                           window_start=WINDOW_START, window_end=WINDOW_START + timedelta(minutes=4), actor=admin_user)
    client.force_login(operator)

    response = client.get(page_url(orphan))

    assert response.status_code == 200
    assert banners(response) == {"source-environment"}
    assert "names no source agent" in html(response)
    assert "source-environment" not in banners(client.get(page_url(healthy(prod).incident)))


def test_it_escalates_a_bundle_whose_spec_hash_no_pipeline_version_has(client, operator, prod):
    healthy(prod)
    client.force_login(operator)
    assert "unknown-spec-hash" not in banners(client.get(page_url(prod.incident)))
    manifest, lines, baseline = sample_bundle(
        seed=8, ref=prod.incident.ref, environment="prod", agent=prod.agent.name, window_start=WINDOW_START,
        minutes=4, signals=60,
    )
    buffer = io.BytesIO()
    write_bundle(buffer, manifest=manifest, signals=lines, baseline=baseline, spec=sample_spec(), fmt="tar.gz")
    unknown = upload(prod.agent, buffer.getvalue())

    response = client.get(page_url(prod.incident))

    assert banners(response) == {"unknown-spec-hash"}
    body = html(response)
    assert f"Bundle #{unknown.pk} was produced under spec hash {unknown.spec_hash}" in body
    assert "no pipeline version</span>" in body


def test_it_escalates_a_succeeded_dry_run_without_approval_where_execute_needs_one(
    client, operator, prod, succeeded_dry_run
):
    healthy(prod)
    client.force_login(operator)

    response = client.get(page_url(prod.incident))

    assert banners(response) == {"approval-coverage"}
    assert "Approval coverage is missing" in html(response)


def test_it_escalates_a_denied_approval(client, operator, approver1, prod, succeeded_dry_run):
    healthy(prod)
    request = replay_request_approval(dry_run=succeeded_dry_run, user=operator, reason="drain POP-12")
    client.force_login(operator)
    assert "approval-coverage" not in banners(client.get(page_url(prod.incident)))  # pending: not yet a problem

    approval_decide(request=request, approver=approver1, decision="deny", comment="parity too low")
    response = client.get(page_url(prod.incident))

    assert banners(response) == {"approval-coverage"}
    assert "Approval coverage is denied" in html(response)
    assert f"approval #{request.pk} was denied" in html(response)


def test_it_escalates_an_expired_approval(client, operator, approver1, approver2, prod, succeeded_dry_run):
    healthy(prod)
    request = approve_execute(succeeded_dry_run, operator, approver1, approver2)
    client.force_login(operator)
    assert "approval-coverage" not in banners(client.get(page_url(prod.incident)))  # approved: covered

    approval_expire_overdue(now=request.expires_at + timedelta(seconds=1))
    response = client.get(page_url(prod.incident))

    assert ApprovalRequest.objects.get(pk=request.pk).status == "expired"
    assert banners(response) == {"approval-coverage"}
    assert "Approval coverage is expired" in html(response)


def test_it_does_not_ask_for_approval_coverage_where_execute_needs_none(
    client, operator, dev, django_capture_on_commit_callbacks
):
    healthy(dev)
    run_dry_run(dev, operator, django_capture_on_commit_callbacks)
    client.force_login(operator)

    assert banners(client.get(page_url(dev.incident))) == set()


def test_it_escalates_repeated_refusals_of_the_agent(client, operator, prod, settings):
    healthy(prod)
    settings.TRACEFLUX_ESCALATE_AUTH_FAILURES = 5
    for code in (401, 401, 403, 429):
        failure_record(code=code, agent_id=prod.agent.pk)
    client.force_login(operator)
    response = client.get(page_url(prod.incident))
    assert "auth-failures" not in banners(response)
    assert "401: 2 · 403: 1 · 429: 1" in html(response)

    failure_record(code=429, agent_id=prod.agent.pk)
    response = client.get(page_url(prod.incident))

    assert banners(response) == {"auth-failures"}
    assert "received 5 refused answers in the last hour (401: 2, 403: 1, 429: 2); the threshold is 5" in html(response)


def test_it_escalates_stale_heartbeats(client, operator, prod):
    client.force_login(operator)
    response = client.get(page_url(prod.incident))
    assert banners(response) == {"stale-heartbeats"}
    assert "it has never sent a heartbeat" in html(response)

    heartbeat_record(agent=prod.agent, status="ok", now=timezone.now() - timedelta(hours=1))
    response = client.get(page_url(prod.incident))
    assert banners(response) == {"stale-heartbeats"}
    assert "its last heartbeat was at" in html(response)

    heartbeat_record(agent=prod.agent, status="ok")
    assert banners(client.get(page_url(prod.incident))) == set()


# --- next steps --------------------------------------------------------------------------------------------------


def test_it_offers_a_dry_run_first_and_says_why_execute_must_wait(client, operator, prod):
    client.force_login(operator)

    response = client.get(page_url(prod.incident))

    assert f'href="{reverse("replays:new")}?incident={prod.incident.ref}"' in step(response, "dry-run")
    assert why_not(response, "dry-run") is None
    reason = f"no dry run of {prod.incident.ref} has succeeded yet: dry run first"
    assert why_not(response, "request-approval") == f"Request execute approval is not available: {reason}."
    assert why_not(response, "execute") == f"Execute is not available: {reason}."
    assert "disabled" in step(response, "execute")


def test_it_tells_a_user_without_replay_permissions_why_they_cannot_dry_run(client, approver1, prod):
    client.force_login(approver1)

    response = client.get(page_url(prod.incident))

    assert response.status_code == 200
    assert why_not(response, "dry-run") == "Dry run is not available: you may not dry-run replays in prod."
    assert reverse("replays:new") not in step(response, "dry-run")


def test_it_says_dry_runs_are_denied_where_the_posture_denies_them(client, operator, prod):
    Environment.objects.filter(pk=prod.environment.pk).update(replay_policy="disabled", execute_policy="deny")
    client.force_login(operator)

    response = client.get(page_url(prod.incident))

    assert why_not(response, "dry-run") == "Dry run is not available: dry runs are denied in prod by its posture."
    assert why_not(response, "execute") == "Execute is not available: execute is denied in prod by its posture."


def test_it_walks_from_dry_run_to_approval_to_execute(client, operator, approver1, approver2, prod,
                                                      succeeded_dry_run):
    client.force_login(operator)

    response = client.get(page_url(prod.incident))
    assert why_not(response, "request-approval") is None
    ask = reverse("replays:request_approval", args=[succeeded_dry_run.pk])
    assert f'action="{ask}"' in step(response, "request-approval")
    assert why_not(response, "execute") == (
        "Execute is not available: prod requires approval to execute: request execute approval first."
    )

    assert client.post(ask, {"approval-reason": "drain POP-12 for real"}).status_code == 302
    request = ApprovalRequest.objects.get(object_id=succeeded_dry_run.pk)
    response = client.get(page_url(prod.incident))
    assert why_not(response, "request-approval") == (
        f"Request execute approval is not available: approval #{request.pk} is already pending."
    )
    assert why_not(response, "execute") == (
        f"Execute is not available: prod requires approval to execute, and approval #{request.pk} is pending."
    )

    for approver in (approver1, approver2):
        approval_decide(request=request, approver=approver, decision="approve", comment="ok")
    response = client.get(page_url(prod.incident))
    assert why_not(response, "execute") is None
    execute = reverse("replays:execute", args=[succeeded_dry_run.pk])
    assert f'action="{execute}"' in step(response, "execute")


def test_it_offers_no_new_approval_request_while_an_overdue_one_is_still_open(
    client, operator, prod, succeeded_dry_run
):
    # Past its expiry but not yet marked expired: the approvals service still refuses a second request (409), so the
    # page must not offer one, as the run view does not.
    request = shift_expiry(replay_request_approval(dry_run=succeeded_dry_run, user=operator, reason="drain POP-12"),
                           timedelta(minutes=-1))
    client.force_login(operator)

    response = client.get(page_url(prod.incident))

    assert why_not(response, "request-approval") == (
        f"Request execute approval is not available: approval #{request.pk} is already pending."
    )
    again = client.post(reverse("replays:request_approval", args=[succeeded_dry_run.pk]), {"approval-reason": "again"})
    assert again.status_code == 409
    assert ApprovalRequest.objects.filter(object_id=succeeded_dry_run.pk).count() == 1


def test_it_says_why_a_dry_run_of_another_version_cannot_be_approved_or_executed(
    client, operator, prod, django_capture_on_commit_callbacks
):
    other = run_dry_run(prod, operator, django_capture_on_commit_callbacks, pipeline_version=prod.tightened)
    assert other.status == "succeeded", other.error
    client.force_login(operator)

    response = client.get(page_url(prod.incident))

    reason = (
        f"the artifact was produced by {prod.baseline.label}; dry run #{other.pk} replayed {prod.tightened.label}. "
        "An execute runs the version that produced the incident: dry-run that version first"
    )
    assert why_not(response, "request-approval") == f"Request execute approval is not available: {reason}."
    assert why_not(response, "execute") == f"Execute is not available: {reason}."
    assert "disabled" in step(response, "request-approval")


def test_it_needs_no_approval_where_execute_is_allowed(client, operator, dev, django_capture_on_commit_callbacks):
    run_dry_run(dev, operator, django_capture_on_commit_callbacks)
    client.force_login(operator)

    response = client.get(page_url(dev.incident))

    assert why_not(response, "request-approval") == (
        "Request execute approval is not available: no approval is needed: execute is allowed in dev."
    )
    assert why_not(response, "execute") is None


def test_it_refuses_execute_to_a_user_who_may_only_dry_run(client, operator, prod, succeeded_dry_run):
    from guardian.shortcuts import remove_perm

    remove_perm("incidents.replay_execute", operator, prod.environment)
    client.force_login(operator)

    response = client.get(page_url(prod.incident))

    assert why_not(response, "execute") == "Execute is not available: you may not execute replays in prod."
    assert why_not(response, "request-approval") == (
        "Request execute approval is not available: you may not execute replays in prod."
    )


# --- lifecycle ---------------------------------------------------------------------------------------------------


def test_it_moves_the_incident_with_a_reason(client, operator, prod):
    client.force_login(operator)
    response = client.get(page_url(prod.incident))
    assert [to for to, _ in response.context["transition_forms"]] == ["investigating"]

    response = client.post(transition_url(prod.incident), {"to": "investigating", "reason": "paged by on-call"})

    assert response.status_code == 302
    assert response["Location"] == f"{page_url(prod.incident)}#lifecycle"
    prod.incident.refresh_from_db()
    assert prod.incident.status == "investigating"
    trail = client.get(page_url(prod.incident)).context["inv"].audit_events
    assert any(e.action == "incident.investigating" and e.reason == "paged by on-call" for e in trail)


def test_it_does_not_move_the_incident_without_a_reason(client, operator, prod):
    client.force_login(operator)

    response = client.post(transition_url(prod.incident), {"to": "investigating", "reason": "  "})

    assert response.status_code == 400
    assert "a status change needs a reason" in html(response)
    prod.incident.refresh_from_db()
    assert prod.incident.status == "open"


def test_it_refuses_a_move_the_lifecycle_does_not_allow(client, operator, prod):
    client.force_login(operator)

    response = client.post(transition_url(prod.incident), {"to": "resolved", "reason": "all good"})

    assert response.status_code == 409
    assert "open" in html(response) and "investigating" in html(response)
    prod.incident.refresh_from_db()
    assert prod.incident.status == "open"


def test_it_refuses_a_move_to_a_viewer_who_may_not_operate(client, approver1, prod):
    client.force_login(approver1)
    page = client.get(page_url(prod.incident))
    assert "you may not operate on incidents in prod" in html(page)

    response = client.post(transition_url(prod.incident), {"to": "investigating", "reason": "let me"})

    assert response.status_code == 403
    assert "you may not operate on incidents in prod" in html(response)
    prod.incident.refresh_from_db()
    assert prod.incident.status == "open"


# --- journal -----------------------------------------------------------------------------------------------------


def test_it_adds_a_note_to_the_journal(client, operator, prod):
    client.force_login(operator)

    response = client.post(note_url(prod.incident), {"body": "BGP flaps at POP-12 line up with the 5xx burst"})

    assert response.status_code == 302
    note = IncidentNote.objects.get(incident=prod.incident)
    assert note.author == operator and note.body == "BGP flaps at POP-12 line up with the 5xx burst"
    body = html(client.get(page_url(prod.incident)))
    assert f'id="note-{note.pk}"' in body and "BGP flaps at POP-12" in body


def test_it_refuses_an_empty_note(client, operator, prod):
    client.force_login(operator)

    response = client.post(note_url(prod.incident), {"body": "   "})

    assert response.status_code == 400
    assert "a note cannot be empty" in html(response)
    assert not IncidentNote.objects.filter(incident=prod.incident).exists()


def test_it_refuses_a_note_from_a_viewer_who_may_not_operate(client, approver1, prod):
    client.force_login(approver1)

    response = client.post(note_url(prod.incident), {"body": "drive-by"})

    assert response.status_code == 403
    assert not IncidentNote.objects.filter(incident=prod.incident).exists()


# --- links from elsewhere ----------------------------------------------------------------------------------------


def test_it_is_linked_from_the_replay_pages_and_the_console(client, operator, admin_user, prod, succeeded_dry_run):
    client.force_login(operator)
    for url in (reverse("replays:history"), reverse("replays:detail", args=[succeeded_dry_run.pk])):
        assert page_url(prod.incident) in html(client.get(url)), url

    client.force_login(admin_user)
    change = html(client.get(reverse("admin:incidents_incident_change", args=[prod.incident.pk])))
    assert f'href="{page_url(prod.incident)}"' in change


# --- query count -------------------------------------------------------------------------------------------------


# Session, user and permissions, the incident, one query per list, the permission checks, the navigation's count.
QUERY_BOUND = 30


def test_it_costs_a_bounded_number_of_queries_whatever_the_data(
    client, operator, approver1, approver2, prod, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    client.force_login(operator)
    run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    with django_assert_max_num_queries(QUERY_BOUND) as small:
        assert client.get(page_url(prod.incident)).status_code == 200

    now = timezone.now()
    for index in range(30):
        heartbeat_record(agent=prod.agent, status=("ok", "degraded", "failing")[index % 3],
                         now=now - timedelta(seconds=20 * index))
        incident_note_add(incident=prod.incident, author=operator, body=f"note {index}")
    for _ in range(3):
        dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    approve_execute(dry_run, operator, approver1, approver2)
    run_execute(dry_run, operator, django_capture_on_commit_callbacks)

    with django_assert_max_num_queries(QUERY_BOUND) as large:
        response = client.get(page_url(prod.incident))
    assert response.status_code == 200
    assert len(large.captured_queries) <= len(small.captured_queries)
    assert len(response.context["inv"].replays) == 5  # four dry runs, one execute
    assert len(response.context["inv"].notes) >= 30
