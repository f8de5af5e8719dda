"""The replay pages through their real URLs: history, new replay, the run view and its live stages, actions, downloads,
compare. Every write is checked on the database afterwards."""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from approvals.models import ApprovalRequest
from incidents.models import Command
from replays.models import ReplayExecution
from replays.services import execute_digest, replay_request_dry_run
from replays.timeline_svg import timeline_svg

from .conftest import approve_execute, run_dry_run

SVG_NS = "{http://www.w3.org/2000/svg}"


def body(response) -> str:
    return response.content.decode()


def the_svg(html: str) -> ET.Element:
    found = re.search(r"<svg\b.*?</svg>", html, re.S)
    assert found, "the page has no inline SVG"
    return ET.fromstring(found.group(0))


def new_replay_url(incident) -> str:
    return f"{reverse('replays:new')}?incident={incident.ref}"


@pytest.fixture
def dry_run(prod, operator, django_capture_on_commit_callbacks) -> ReplayExecution:
    execution = run_dry_run(prod, operator, django_capture_on_commit_callbacks, compare_version=prod.tightened)
    assert execution.status == "succeeded", execution.error
    return execution


# --- history -----------------------------------------------------------------------------------------------------


def test_it_lists_runs_with_their_parity_figures(client, operator, dry_run):
    client.force_login(operator)

    response = client.get(reverse("replays:history"))

    assert response.status_code == 200
    html = body(response)
    row = re.search(rf'<tr id="run-{dry_run.pk}">.*?</tr>', html, re.S).group(0)
    assert reverse("replays:detail", args=[dry_run.pk]) in row
    assert dry_run.incident.ref in row and "prod" in row and "v1-baseline" in row and "v2-tightened" in row
    assert "succeeded" in row and "operator" in row
    assert f"{dry_run.summary['parity_score']:.2f}" in row
    assert dry_run.summary["confidence"] in row
    assert dry_run.summary["alerts_in_incidents_out"] in row
    assert 'id="nav-replays"' in html and reverse("replays:new") in html


def test_it_narrows_the_history_with_its_filters(client, operator, prod, dev, dry_run,
                                                 django_capture_on_commit_callbacks):
    dev_run = run_dry_run(dev, operator, django_capture_on_commit_callbacks)
    queued = replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=operator,
                                    pipeline_version=prod.tightened)  # no worker ran it: still queued
    client.force_login(operator)

    def shown(**filters) -> set[int]:
        response = client.get(reverse("replays:history"), filters)
        assert response.status_code == 200
        return {int(pk) for pk in re.findall(r'<tr id="run-(\d+)">', body(response))}

    assert shown() == {dry_run.pk, dev_run.pk, queued.pk}
    assert shown(environment="dev") == {dev_run.pk}
    assert shown(status="queued") == {queued.pk}
    assert shown(version="v2-tightened") == {queued.pk}
    assert shown(mode="execute") == set()
    assert shown(who="operator", environment="prod") == {dry_run.pk, queued.pk}
    assert shown(who="nobody") == set()
    assert shown(incident=prod.incident.ref) == {dry_run.pk, queued.pk}
    assert shown(incident=str(dev.incident.pk)) == {dev_run.pk}


def test_it_pages_the_history_by_keyset_without_counting(client, operator, prod, monkeypatch):
    monkeypatch.setattr("replays.views.PAGE_SIZE", 2)
    runs = [replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=operator) for _ in range(5)]
    newest_first = [run.pk for run in sorted(runs, key=lambda r: (r.created_at, r.pk), reverse=True)]
    client.force_login(operator)

    seen: list[int] = []
    url = reverse("replays:history")
    with CaptureQueriesContext(connection) as queries:
        while url:
            response = client.get(url)
            assert response.status_code == 200
            html = body(response)
            seen += [int(pk) for pk in re.findall(r'<tr id="run-(\d+)">', html)]
            older = re.search(r'href="([^"]*)" id="older"', html)
            url = reverse("replays:history") + older.group(1).replace("&amp;", "&") if older else ""
    assert seen == newest_first
    assert not [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()
                and "replays_replayexecution" in q["sql"]]


def test_it_names_a_bad_cursor(client, operator, prod):
    client.force_login(operator)
    response = client.get(reverse("replays:history"), {"before": "999999"})
    assert response.status_code == 400
    assert "before=999999" in body(response)


def test_it_lists_the_replays_of_one_incident(client, operator, prod, dev, dry_run, django_capture_on_commit_callbacks):
    dev_run = run_dry_run(dev, operator, django_capture_on_commit_callbacks)
    client.force_login(operator)

    response = client.get(reverse("replays:history"), {"incident": prod.incident.ref})

    html = body(response)
    assert f"Replays of {prod.incident.ref}" in html
    assert f'id="run-{dry_run.pk}"' in html and f'id="run-{dev_run.pk}"' not in html
    assert f"{reverse('replays:new')}?incident={prod.incident.ref}" in html


def test_it_shows_an_outsider_no_run(client, outsider, dry_run):
    client.force_login(outsider)
    response = client.get(reverse("replays:history"))
    assert response.status_code == 200
    assert f'id="run-{dry_run.pk}"' not in body(response)


def test_it_sends_an_anonymous_visitor_to_the_login_page(client, dry_run):
    for url in (reverse("replays:history"), reverse("replays:detail", args=[dry_run.pk]), reverse("replays:new")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


# --- the run view ------------------------------------------------------------------------------------------------


def test_it_renders_the_run_view_with_parity_and_a_well_formed_timeline(client, operator, dry_run):
    client.force_login(operator)

    response = client.get(reverse("replays:detail", args=[dry_run.pk]))

    assert response.status_code == 200
    html = body(response)
    assert f"{dry_run.summary['parity_score']:.2f}" in html
    assert dry_run.summary["alerts_in_incidents_out"] in html
    assert dry_run.pipeline_version.spec_hash in html and "v2-tightened" in html
    assert all(line in html for line in [h.replace("'", "&#x27;") for h in dry_run.summary["highlights"][:2]])
    assert 'id="diff-compare"' in html and 'id="diff-baseline"' in html
    assert "drain-pop" in html and "traffic:drain" in html  # the planned actions with their gates
    assert "replay.succeeded" in html  # the audit events of this run
    assert all(f"{source} {count}" in html for source, count in dry_run.artifact.signal_counts.items())
    svg = the_svg(html)
    assert svg.tag == f"{SVG_NS}svg"
    assert len(svg.findall(f".//{SVG_NS}rect")) > 20
    legend = " ".join(t.text or "" for t in svg.iter(f"{SVG_NS}text"))
    assert "metrics" in legend and "Incidents formed" in legend and "Suppressed" in legend
    assert "<script" not in ET.tostring(svg, encoding="unicode")
    assert "@media print" in html


def test_it_escapes_every_label_in_the_timeline():
    timeline = {
        "bucket_s": 10, "buckets": 3, "start": "2026-02-26T14:00:00Z", "end": "2026-02-26T14:00:30Z",
        "by_source": {"count": 1, "items": [{"source": '<script>"&\x01', "signals": 3, "counts": [1, 2, 0]}]},
        "by_incident": {"count": 1, "items": [{"incident": "root|alertname=<b>,pop=P&1|2026-02-26T14:00:01Z",
                                               "signals": 3, "counts": [1, 2, 0]}]},
        "suppressed": {"count": 1, "items": [{"reason": "dedup", "rule": "]]>", "signals": 1,
                                              "first_ts": "2026-02-26T14:00:02Z", "last_ts": "2026-02-26T14:00:09Z"}]},
    }
    markup = timeline_svg(timeline)
    svg = ET.fromstring(markup)
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    assert any("<b> at P&1" in (t.text or "") for t in svg.iter(f"{SVG_NS}text"))
    assert timeline_svg(None) is None and timeline_svg({"buckets": 0}) is None


def test_it_stops_polling_the_stages_when_the_run_is_final(client, operator, prod, dry_run):
    queued = replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=operator)
    client.force_login(operator)

    live = client.get(reverse("replays:stages", args=[queued.pk]))
    final = client.get(reverse("replays:stages", args=[dry_run.pk]), HTTP_HX_REQUEST="true")

    assert live.status_code == 200
    assert f'hx-get="{reverse("replays:stages", args=[queued.pk])}"' in body(live)
    assert 'hx-trigger="every 2s"' in body(live)
    assert final.status_code == 200
    assert "hx-get" not in body(final) and "hx-trigger" not in body(final)
    assert final["HX-Refresh"] == "true"  # the poll that finds the run final reloads the page once
    assert all(f'id="stage-{name}"' in body(final) for name in dry_run.stage_names)
    page = body(client.get(reverse("replays:detail", args=[queued.pk])))
    assert 'hx-trigger="every 2s"' in page and "htmx" in page and 'http-equiv="refresh"' in page
    page = body(client.get(reverse("replays:detail", args=[dry_run.pk])))
    assert "hx-trigger" not in page and 'http-equiv="refresh"' not in page


# --- new replay --------------------------------------------------------------------------------------------------


def test_it_creates_a_dry_run_from_the_new_replay_form(client, operator, prod, django_capture_on_commit_callbacks):
    client.force_login(operator)
    form = client.get(new_replay_url(prod.incident))
    assert form.status_code == 200
    assert f'<option value="{prod.baseline.pk}" selected>' in body(form)  # resolved from the artifact's spec hash

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(new_replay_url(prod.incident), {
            "artifact": prod.bundle.pk, "pipeline_version": "", "compare_version": prod.tightened.pk,
            "pop": "POP-12", "window_start": "2026-02-26T14:01:00", "window_end": "2026-02-26T14:03:00Z",
            "disabled_actions": "drain-pop, restart-resolvers", "max_pops": "1",
        })

    execution = ReplayExecution.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("replays:detail", args=[execution.pk])
    assert execution.status == "succeeded", execution.error
    assert execution.mode == "dry_run" and execution.triggered_by == operator
    assert execution.pipeline_version == prod.baseline and execution.compare_version == prod.tightened
    assert execution.scope == {"pop": "POP-12"}
    assert execution.window_start == datetime(2026, 2, 26, 14, 1, tzinfo=UTC)  # no offset given: read as UTC
    assert execution.window_end == datetime(2026, 2, 26, 14, 3, tzinfo=UTC)
    assert execution.controls == {"disabled_actions": ["drain-pop", "restart-resolvers"], "max_pops": 1}
    assert {a["decision"] for a in execution.audit_record["actions"]} <= {"blocked"}


def test_it_names_a_window_outside_the_captured_one(client, operator, prod):
    client.force_login(operator)
    start = (prod.bundle.window_start - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")

    response = client.post(new_replay_url(prod.incident), {
        "artifact": prod.bundle.pk, "window_start": start, "window_end": "2026-02-26T14:02:00",
    })

    assert response.status_code == 400
    assert 'id="error-window_start"' in body(response)
    assert "inside the captured window" in body(response)
    assert not ReplayExecution.objects.exists()


def test_it_names_a_window_that_ends_before_it_starts(client, operator, prod):
    client.force_login(operator)

    response = client.post(new_replay_url(prod.incident), {
        "artifact": prod.bundle.pk, "window_start": "2026-02-26T14:03:00", "window_end": "2026-02-26T14:01:00",
    })
    half = client.post(new_replay_url(prod.incident), {"artifact": prod.bundle.pk, "window_end": "2026-02-26T14:01"})
    garbage = client.post(new_replay_url(prod.incident), {"artifact": prod.bundle.pk, "window_start": "yesterday",
                                                          "window_end": "2026-02-26T14:01"})

    assert response.status_code == 400
    assert 'id="error-window_end"' in body(response) and "end must be after its start" in body(response)
    assert half.status_code == 400 and "needs both start and end" in body(half)
    assert garbage.status_code == 400 and 'id="error-window_start"' in body(garbage)
    assert not ReplayExecution.objects.exists()


def test_it_refuses_a_new_replay_to_an_approver(client, approver1, prod):
    client.force_login(approver1)

    page = client.get(new_replay_url(prod.incident))
    response = client.post(new_replay_url(prod.incident), {"artifact": prod.bundle.pk})

    assert page.status_code == 403
    assert response.status_code == 403
    assert "you may not dry-run replays in prod" in body(response)
    assert not ReplayExecution.objects.exists()


def test_it_hides_the_incident_and_its_runs_from_an_outsider(client, outsider, prod, dry_run):
    client.force_login(outsider)
    pk = dry_run.pk

    for url in (reverse("replays:detail", args=[pk]), reverse("replays:stages", args=[pk]),
                reverse("replays:report_json", args=[pk]), reverse("replays:evidence", args=[pk]),
                reverse("replays:summary_md", args=[pk]), new_replay_url(prod.incident),
                f"{reverse('replays:compare')}?a={pk}&b={pk}"):
        assert client.get(url).status_code == 404, url
    assert client.post(new_replay_url(prod.incident), {"artifact": prod.bundle.pk}).status_code == 404
    assert client.post(reverse("replays:execute", args=[pk])).status_code == 404
    assert ReplayExecution.objects.count() == 1


# --- actions -----------------------------------------------------------------------------------------------------


def test_it_rejects_an_execute_before_approval_and_shows_the_failed_check(client, operator, dry_run,
                                                                         django_capture_on_commit_callbacks):
    client.force_login(operator)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("replays:execute", args=[dry_run.pk]))

    execute = ReplayExecution.objects.get(mode="execute")
    assert response.status_code == 302
    assert response["Location"] == reverse("replays:detail", args=[execute.pk])
    assert execute.status == "rejected" and execute.dry_run == dry_run
    approval_check = next(c for c in execute.checks if c["name"] == "approval")
    assert not approval_check["ok"]
    assert not Command.objects.exists()
    html = body(client.get(response["Location"]))
    failed = re.search(r'<section class="rejected" id="failed-checks".*?</section>', html, re.S).group(0)
    assert "approval" in failed and "request execute approval first" in failed


def test_it_requests_execute_approval_with_a_reason(client, operator, dry_run):
    client.force_login(operator)
    url = reverse("replays:request_approval", args=[dry_run.pk])

    empty = client.post(url, {"approval-reason": "  "})
    assert empty.status_code == 400 and "an approval request needs a reason" in body(empty)
    assert not ApprovalRequest.objects.exists()

    response = client.post(url, {"approval-reason": "drain POP-12 as the dry run shows"})

    assert response.status_code == 302
    approval = ApprovalRequest.objects.get()
    assert approval.digest == execute_digest(dry_run)
    assert approval.requested_by == operator and approval.status == "pending"
    page = body(client.get(reverse("replays:detail", args=[dry_run.pk])))
    assert reverse("approvals:review", args=[approval.pk]) in page
    assert f"approval #{approval.pk} is already pending" in page  # the button is disabled, with the reason

    again = client.post(url, {"approval-reason": "once more"})
    assert again.status_code == 409 and "open approval request" in body(again)
    assert ApprovalRequest.objects.count() == 1


def test_it_refuses_an_approval_request_for_a_dry_run_of_another_version(
    client, operator, prod, django_capture_on_commit_callbacks
):
    # The bundle was produced by the baseline; an execute always runs that version, so approving this one is useless.
    other = run_dry_run(prod, operator, django_capture_on_commit_callbacks, pipeline_version=prod.tightened)
    assert other.status == "succeeded", other.error
    client.force_login(operator)
    page = body(client.get(reverse("replays:detail", args=[other.pk])))
    form = re.search(r'<form [^>]*id="request-approval-form".*?</form>', page, re.S).group(0)
    assert "disabled" in form
    assert f"the artifact was produced by {prod.baseline.label}; dry run #{other.pk} replayed " \
           f"{prod.tightened.label}" in form

    response = client.post(reverse("replays:request_approval", args=[other.pk]), {"approval-reason": "drain POP-12"})

    assert response.status_code == 400
    assert "its execute would be rejected: the artifact was produced by" in body(response)
    assert not ApprovalRequest.objects.exists()


def test_it_shows_approvers_the_blast_radius_and_parity_as_text(client, operator, approver1, dry_run):
    request = approve_execute(dry_run, operator)
    client.force_login(approver1)

    page = body(client.get(reverse("approvals:review", args=[request.pk])))

    planned = re.search(r'<section id="planned-actions">.*?</section>', page, re.S).group(0)
    assert "pops: POP-12 · regions: us-east-1 · services: edge-gw" in planned
    assert "&quot;pops&quot;" not in planned
    more = re.search(r'<section id="more">.*?</section>', page, re.S).group(0)
    parity = request.summary["parity"]
    assert f"confidence: {parity['confidence']} · incidents_formed: {parity['incidents_formed']}" in more
    assert f"<dd class=\"readable\">{request.summary['incident']}</dd>" in more


def test_it_executes_an_approved_dry_run_and_lists_its_commands(client, operator, approver1, approver2, dry_run,
                                                                 django_capture_on_commit_callbacks):
    approve_execute(dry_run, operator, approver1, approver2)
    client.force_login(operator)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("replays:execute", args=[dry_run.pk]))

    execute = ReplayExecution.objects.get(mode="execute")
    assert execute.status == "dispatching", (execute.error, execute.checks)
    assert Command.objects.exists()
    html = body(client.get(response["Location"]))
    assert 'id="commands"' in html
    for command in Command.objects.all():
        assert command.agent.name in html
    assert reverse("approvals:review", args=[execute.approval_id]) in html
    assert "Cancel run" not in html  # dispatching: only its commands end it


def test_it_disables_the_execute_button_for_someone_who_may_not_execute(client, approver1, dry_run):
    client.force_login(approver1)

    page = body(client.get(reverse("replays:detail", args=[dry_run.pk])))
    response = client.post(reverse("replays:execute", args=[dry_run.pk]))

    assert re.search(r'<button type="submit" class="danger" disabled title="you may not execute replays in prod">',
                     page)
    assert response.status_code == 403
    assert not ReplayExecution.objects.filter(mode="execute").exists()


def test_it_cancels_a_queued_run_with_a_reason(client, operator, prod):
    queued = replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=operator)
    client.force_login(operator)
    url = reverse("replays:cancel", args=[queued.pk])

    empty = client.post(url, {"cancel-reason": ""})
    assert empty.status_code == 400
    queued.refresh_from_db()
    assert queued.status == "queued"

    response = client.post(url, {"cancel-reason": "wrong window"})

    assert response.status_code == 302
    queued.refresh_from_db()
    assert queued.status == "cancelled"
    again = client.post(url, {"cancel-reason": "twice"})
    assert again.status_code == 409 and "cancelled" in body(again)


# --- downloads ---------------------------------------------------------------------------------------------------


def test_it_downloads_the_summary_the_report_and_the_evidence(client, operator, dry_run):
    client.force_login(operator)

    summary = client.get(reverse("replays:summary_md", args=[dry_run.pk]))
    report = client.get(reverse("replays:report_json", args=[dry_run.pk]))
    evidence = client.get(reverse("replays:evidence", args=[dry_run.pk]))

    assert summary.status_code == 200 and summary["Content-Type"].startswith("text/markdown")
    text = summary.content.decode()
    assert text.startswith(f"# Replay #{dry_run.pk}: dry run of {dry_run.incident.ref} — succeeded")
    for expected in ("prod", "v1-baseline", f"{dry_run.summary['parity_score']:.2f}",
                     dry_run.summary["alerts_in_incidents_out"], dry_run.summary["highlights"][0], "drain-pop",
                     reverse("replays:detail", args=[dry_run.pk])):
        assert expected in text, expected
    assert "&lt;" not in text and "&#x27;" not in text  # Markdown, not HTML

    assert report.status_code == 200 and report["Content-Type"] == "application/json"
    document = json.loads(b"".join(report.streaming_content))
    assert document["report_sha256"] == dry_run.report_sha256

    assert evidence.status_code == 200 and evidence["Content-Type"] == "application/gzip"
    assert 'filename="replay-' in evidence["Content-Disposition"]
    assert hashlib.sha256(b"".join(evidence.streaming_content)).hexdigest() == dry_run.evidence_sha256


def test_it_answers_404_for_a_report_that_does_not_exist_yet(client, operator, prod):
    queued = replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=operator)
    client.force_login(operator)
    assert client.get(reverse("replays:report_json", args=[queued.pk])).status_code == 404
    assert client.get(reverse("replays:evidence", args=[queued.pk])).status_code == 404
    assert "No report yet" in client.get(reverse("replays:summary_md", args=[queued.pk])).content.decode()


# --- compare -----------------------------------------------------------------------------------------------------


def test_it_compares_two_runs_of_the_same_window(client, operator, prod, dry_run, django_capture_on_commit_callbacks):
    tightened = run_dry_run(prod, operator, django_capture_on_commit_callbacks, pipeline_version=prod.tightened)
    client.force_login(operator)

    response = client.get(reverse("replays:compare"), {"a": dry_run.pk, "b": tightened.pk})

    assert response.status_code == 200
    html = body(response)
    assert 'id="side-a"' in html and 'id="side-b"' in html
    assert "v1-baseline" in html and "v2-tightened" in html
    assert f"{tightened.summary['parity_score']:.2f}" in html
    assert tightened.summary["alerts_in_incidents_out"] in html
    assert f"{reverse('replays:detail', args=[dry_run.pk])}#diff-compare" in html  # a has its own compare diff
    page = body(client.get(reverse("replays:detail", args=[dry_run.pk])))
    assert f"{reverse('replays:compare')}?a={dry_run.pk}&amp;b={tightened.pk}" in page


def test_it_refuses_to_compare_runs_of_different_artifacts(client, operator, dev, dry_run,
                                                           django_capture_on_commit_callbacks):
    dev_run = run_dry_run(dev, operator, django_capture_on_commit_callbacks)
    client.force_login(operator)

    response = client.get(reverse("replays:compare"), {"a": dry_run.pk, "b": dev_run.pk})
    missing = client.get(reverse("replays:compare"), {"a": dry_run.pk})

    assert response.status_code == 400
    assert "a comparison needs two runs of the same artifact" in body(response)
    assert missing.status_code == 400 and "Name two runs to compare" in body(missing)



def test_it_keeps_csrf_on_every_form_of_the_run_view(operator, dry_run, django_capture_on_commit_callbacks):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    html = body(client.get(reverse("replays:detail", args=[dry_run.pk])))
    forms = re.findall(r'<form method="post" action="/replays/.*?</form>', html, re.S)
    assert len(forms) == 2  # request approval, execute (a succeeded run cannot be cancelled)
    assert all('name="csrfmiddlewaretoken"' in form for form in forms)

    refused = client.post(reverse("replays:execute", args=[dry_run.pk]))
    assert refused.status_code == 403
    assert not ReplayExecution.objects.filter(mode="execute").exists()

    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', forms[1]).group(1)
    with django_capture_on_commit_callbacks(execute=True):
        accepted = client.post(reverse("replays:execute", args=[dry_run.pk]), {"csrfmiddlewaretoken": token})
    assert accepted.status_code == 302
    assert ReplayExecution.objects.filter(mode="execute").count() == 1
