"""The audit explorer (/audit/), its exports and history pages, the chain status, and the console's audit changelist."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from incidents import services
from tests.audit.tamper import raw_sql
from tests.factories import AgentFactory, EnvironmentFactory
from traceflux import audit, explorer
from traceflux.audit import AuditActor
from traceflux.audit.admin import AuditEventPaginator
from traceflux.audit.models import AuditEvent, AuditVerification
from traceflux.audit.tasks import verify_chain

ALICE = AuditActor(kind="user", id="7", name="alice")
BOB = AuditActor(kind="user", id="8", name="bob")
T0 = datetime(2026, 2, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def lab(db):
    """An environment nobody in the cast may see, except superusers."""
    return EnvironmentFactory(slug="lab")


def record_at(monkeypatch, when: datetime, **kwargs) -> AuditEvent:
    """audit.record() as if it ran at `when` (the writer stamps created_at with timezone.now())."""
    with monkeypatch.context() as patch:
        patch.setattr(timezone, "now", lambda: when)
        return audit.record(**kwargs)


@pytest.fixture
def events(environments, lab, monkeypatch) -> dict[str, AuditEvent]:
    """Events across dev, prod, lab and no environment, an hour apart, with different actors, actions and outcomes."""
    specs = {
        "dev_opened": {"action": "incident.opened", "actor": ALICE, "environment": "dev",
                       "target": ("incidents.incident", 1, "INC-1")},
        "prod_opened": {"action": "incident.opened", "actor": BOB, "environment": "prod",
                        "target": ("incidents.incident", 2, "INC-2")},
        "prod_denied": {"action": "deployment.requested", "actor": ALICE, "environment": "prod", "outcome": "denied",
                        "reason": "=cmd|' /C calc'!A0", "target": ("incidents.deployment", 5, "v1 → prod #5")},
        "lab_opened": {"action": "incident.opened", "actor": ALICE, "environment": "lab",
                       "target": ("incidents.incident", 3, "INC-LAB-SECRET")},
        "global": {"action": "pipeline_version.created", "actor": ALICE,
                   "target": ("incidents.pipelineversion", 9, "v9")},
        "dev_ack": {"action": "incident.acknowledged", "actor": BOB, "environment": "dev",
                    "target": ("incidents.incident", 1, "INC-1"), "data": {"note": "ü ✓"}},
    }
    return {
        name: record_at(monkeypatch, T0 + timedelta(hours=i), **spec) for i, (name, spec) in enumerate(specs.items())
    }


def seqs_on(response) -> list[int]:
    return [row.event.seq for row in response.context["rows"]]


def exported_csv(response) -> list[dict[str, str]]:
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def exported_json(response) -> list[dict]:
    assert response.streaming
    return json.loads(b"".join(response.streaming_content))


# --- the timeline ------------------------------------------------------------------------------------------------


def test_it_sends_an_anonymous_visitor_to_the_login_page(client):
    response = client.get(reverse("audit-explorer"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_it_shows_an_operator_the_events_of_their_environments_newest_first(client, operator, events):
    client.force_login(operator)

    response = client.get(reverse("audit-explorer"))

    assert response.status_code == 200
    expected = [events[name].seq for name in ("dev_ack", "prod_denied", "prod_opened", "dev_opened")]
    assert seqs_on(response) == expected
    body = response.content.decode()
    assert 'id="nav-audit"' in body
    assert reverse("audit-history", args=["incidents.deployment", "5"]) in body  # each event links to its history
    assert "INC-LAB-SECRET" not in body
    assert "pipeline_version.created" not in body


def test_it_keeps_events_of_no_environment_and_every_environment_for_superusers(client, admin_user, events):
    client.force_login(admin_user)

    response = client.get(reverse("audit-explorer"))

    assert seqs_on(response) == sorted((event.seq for event in events.values()), reverse=True)
    global_only = client.get(reverse("audit-explorer"), {"environment": explorer.GLOBAL})
    assert seqs_on(global_only) == [events["global"].seq]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"actor": "bob"}, ["dev_ack", "prod_opened"]),
        ({"action": "incident.opened"}, ["prod_opened", "dev_opened"]),
        ({"environment": "prod"}, ["prod_denied", "prod_opened"]),
        ({"target_type": "incidents.incident"}, ["dev_ack", "prod_opened", "dev_opened"]),
        ({"target_type": "incidents.incident", "target_id": "1"}, ["dev_ack", "dev_opened"]),
        ({"outcome": "denied"}, ["prod_denied"]),
        ({"from": "2026-02-26T13:00:00Z"}, ["dev_ack", "prod_denied", "prod_opened"]),
        ({"from": "2026-02-26T13:00", "to": "2026-02-26T14:00"}, ["prod_denied", "prod_opened"]),
        ({"actor": "alice", "environment": "dev"}, ["dev_opened"]),
        ({"action": "incident.opened", "environment": "lab"}, []),  # lab is no choice of the operator's: 400
    ],
)
def test_it_narrows_the_timeline_with_each_filter(client, operator, events, query, expected):
    client.force_login(operator)

    response = client.get(reverse("audit-explorer"), query)

    assert seqs_on(response) == [events[name].seq for name in expected]
    if query.get("environment") == "lab":
        assert response.status_code == 400
        assert "Select a valid choice" in response.content.decode()


def test_it_pages_by_keyset_without_counting_the_log(client, operator, environments, monkeypatch):
    monkeypatch.setattr(explorer, "PAGE_SIZE", 4)
    written = [audit.record(action="test.paged", environment="dev", data={"i": i}).seq for i in range(10)]
    client.force_login(operator)

    seen: list[int] = []
    url = reverse("audit-explorer") + "?action=test.paged"
    with CaptureQueriesContext(connection) as queries:
        while url:
            response = client.get(url)
            assert response.status_code == 200
            seen += seqs_on(response)
            next_url = response.context["next_url"]
            url = reverse("audit-explorer") + next_url if next_url else ""

    assert seen == sorted(written, reverse=True)
    assert not [sql for sql in _counts(queries) if "audit_auditevent" in sql]
    assert response.context["newest_url"] == "?action=test.paged"


def test_it_names_a_bad_cursor(client, operator, events):
    client.force_login(operator)

    response = client.get(reverse("audit-explorer"), {"before": "yesterday"})

    assert response.status_code == 400
    assert "before=yesterday: not an event number to page from" in response.content.decode()


def test_it_asks_for_a_target_type_with_a_target_id(client, operator, events):
    client.force_login(operator)

    response = client.get(reverse("audit-explorer"), {"target_id": "1"})

    assert response.status_code == 400
    assert "a target id needs a target type" in response.content.decode()


def test_it_shows_an_outsider_no_event_at_all(client, outsider, events):
    client.force_login(outsider)

    response = client.get(reverse("audit-explorer"))
    csv_rows = exported_csv(client.get(reverse("audit-export-csv")))
    json_rows = exported_json(client.get(reverse("audit-export-json")))

    assert response.status_code == 200
    assert seqs_on(response) == []
    assert "No event you can see yet." in response.content.decode()
    assert csv_rows == []
    assert json_rows == []


def test_it_keeps_an_environments_events_from_an_operator_without_view_on_it(client, operator, events):
    client.force_login(operator)

    body = client.get(reverse("audit-explorer"), {"action": "incident.opened"}).content.decode()
    csv_text = json.dumps(exported_csv(client.get(reverse("audit-export-csv"))))
    json_text = json.dumps(exported_json(client.get(reverse("audit-export-json"))))
    by_target = client.get(reverse("audit-explorer"), {"target_type": "incidents.incident", "target_id": "3"})

    for text in (body, csv_text, json_text):
        assert "INC-LAB-SECRET" not in text
        assert "pipeline_version.created" not in text
    assert seqs_on(by_target) == []
    assert client.get(reverse("audit-export-json"), {"environment": "lab"}).status_code == 400


# --- exports -----------------------------------------------------------------------------------------------------


def test_it_exports_exactly_the_filtered_visible_events_as_csv(client, operator, events):
    client.force_login(operator)

    response = client.get(reverse("audit-export-csv"), {"actor": "alice"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment;" in response["Content-Disposition"]
    rows = exported_csv(response)
    assert [int(row["seq"]) for row in rows] == [events["dev_opened"].seq, events["prod_denied"].seq]  # oldest first
    denied = rows[1]
    assert denied["hash"] == events["prod_denied"].hash
    assert denied["prev_hash"] == events["prod_denied"].prev_hash
    assert denied["reason"] == "'=cmd|' /C calc'!A0"  # a spreadsheet must not run it as a formula


def test_it_exports_exactly_the_filtered_visible_events_as_json(client, operator, events):
    client.force_login(operator)

    response = client.get(reverse("audit-export-json"), {"environment": "dev", "before": "1"})  # before is ignored

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    rows = exported_json(response)
    assert [row["seq"] for row in rows] == [events["dev_opened"].seq, events["dev_ack"].seq]
    assert rows[1]["data"] == {"note": "ü ✓"}
    assert rows[1]["created_at"] == (T0 + timedelta(hours=5)).isoformat(timespec="microseconds")
    assert rows[1]["hash"] == events["dev_ack"].hash


def test_it_names_the_field_of_a_bad_export_filter(client, operator, events):
    client.force_login(operator)

    response = client.get(reverse("audit-export-csv"), {"from": "last tuesday"})

    assert response.status_code == 400
    assert response.json() == {"detail": "from: Enter a valid date/time.", "field": "from"}


# --- history pages -----------------------------------------------------------------------------------------------


def test_it_shows_field_diffs_and_events_on_an_objects_history_page(client, operator, admin_user, environments):
    prod = environments["prod"]
    services.environment_set_posture(environment=prod, actor=admin_user, reason="two more eyes", required_approvals=3)
    services.environment_set_posture(environment=prod, actor=admin_user, reason="relax", deploy_policy="allow")
    client.force_login(operator)

    response = client.get(reverse("audit-history", args=["incidents.environment", prod.pk]))

    assert response.status_code == 200
    newest, middle, first = response.context["versions"]
    assert [(c.field, c.old, c.new) for c in newest.changes] == [("deploy policy", "require_approval", "allow")]
    assert [(c.field, c.old, c.new) for c in middle.changes] == [("required approvals", "2", "3")]
    assert (newest.kind, newest.record.history_change_reason) == ("changed", "relax")
    assert first.kind == "created"
    events = response.context["events"]
    assert events and {event.target_id for event in events} == {str(prod.pk)}
    assert "two more eyes" in response.content.decode()


def test_it_shows_the_history_of_a_deleted_object(client, operator, environments):
    agent = AgentFactory(environment=environments["dev"], name="edge-dev-9")
    pk = agent.pk
    agent.delete()
    client.force_login(operator)

    response = client.get(reverse("audit-history", args=["incidents.agent", pk]))

    assert response.status_code == 200
    assert [version.kind for version in response.context["versions"]] == ["deleted", "created"]
    assert "no longer exists" in response.content.decode()


def test_it_answers_404_for_the_history_of_an_object_the_user_cannot_see(client, operator, admin_user, lab):
    services.environment_set_posture(environment=lab, actor=admin_user, reason="lab", required_approvals=2)
    version = services.pipeline_version_create(label="v9.0.0", spec={"schema": "traceflux.policy/v1", "name": "v9"},
                                               actor=None)
    client.force_login(operator)

    assert client.get(reverse("audit-history", args=["incidents.environment", lab.pk])).status_code == 404
    # Objects of no environment are global, like their audit events: superusers only.
    assert client.get(reverse("audit-history", args=["incidents.pipelineversion", version.pk])).status_code == 404
    assert client.get(reverse("audit-history", args=["incidents.environment", 999999])).status_code == 404
    assert client.get(reverse("audit-history", args=["incidents.environment", "abc"])).status_code == 404
    assert client.get(reverse("audit-history", args=["auth.user", operator.pk])).status_code == 404
    client.force_login(admin_user)
    assert client.get(reverse("audit-history", args=["incidents.environment", lab.pk])).status_code == 200
    assert client.get(reverse("audit-history", args=["incidents.pipelineversion", version.pk])).status_code == 200


def test_it_hides_secrets_in_a_history(client, admin_user, environments):
    from incidents.services import agent_key_create

    key, _ = agent_key_create(agent=AgentFactory(environment=environments["dev"]), actor=admin_user)
    client.force_login(admin_user)

    response = client.get(reverse("audit-history", args=["incidents.agentkey", key.pk]))

    assert response.status_code == 200
    assert key.secret_hmac not in response.content.decode()
    assert "(hidden)" in response.content.decode()


# --- query counts ------------------------------------------------------------------------------------------------


def test_it_bounds_the_queries_of_the_first_page(client, operator, events, django_assert_max_num_queries):
    for i in range(60):
        audit.record(action="test.bulk", environment="prod", target=("incidents.incident", i, f"INC-{i}"))
    client.force_login(operator)

    with django_assert_max_num_queries(10):
        response = client.get(reverse("audit-explorer"))

    assert len(response.context["rows"]) == explorer.PAGE_SIZE


def test_it_bounds_the_queries_of_a_filtered_page(client, operator, events, django_assert_max_num_queries):
    client.force_login(operator)
    query = {"action": "incident.opened", "environment": "prod", "from": "2026-02-26T00:00", "before": "999"}

    with django_assert_max_num_queries(10):
        response = client.get(reverse("audit-explorer"), query)

    assert seqs_on(response) == [events["prod_opened"].seq]


def test_it_bounds_the_queries_of_a_history_page(client, operator, admin_user, environments,
                                                 django_assert_max_num_queries):
    prod = environments["prod"]
    for quorum in range(3, 8):
        services.environment_set_posture(environment=prod, actor=admin_user, reason="turn", required_approvals=quorum)
    client.force_login(operator)

    with django_assert_max_num_queries(12):
        response = client.get(reverse("audit-history", args=["incidents.environment", prod.pk]))

    assert len(response.context["versions"]) == 6


# --- chain status ------------------------------------------------------------------------------------------------


def test_it_shows_when_the_chain_was_last_verified_and_the_result(client, operator, admin_user, events):
    client.force_login(operator)
    assert "never verified" in client.get(reverse("audit-explorer")).content.decode()

    call_command("audit_verify", stdout=io.StringIO())

    latest = AuditVerification.objects.get()
    assert (latest.ok, latest.count, latest.source) == (True, len(events), "command")
    status = client.get(reverse("audit-explorer")).content.decode()
    assert "intact" in status
    assert f"{len(events)} events" not in status  # the size of the whole log is for superusers
    client.force_login(admin_user)
    assert f"{len(events)} events" in client.get(reverse("audit-explorer")).content.decode()


def test_it_records_a_broken_chain_from_the_beat_task(events):
    raw_sql("UPDATE audit_auditevent SET reason = 'edited' WHERE seq = %s", [events["prod_opened"].seq])

    assert verify_chain() is False

    latest = AuditVerification.objects.get()
    assert (latest.ok, latest.first_bad_seq, latest.source) == (False, events["prod_opened"].seq, "task")
    assert latest.detail == "content does not match its hash"


def test_it_verifies_now_for_a_superuser_only(client, operator, admin_user, events):
    client.force_login(operator)
    assert client.post(reverse("audit-verify")).status_code == 403
    assert not AuditVerification.objects.exists()

    client.force_login(admin_user)
    response = client.post(reverse("audit-verify"), follow=True)

    assert response.status_code == 200
    assert AuditVerification.objects.get().source == "explorer"
    assert f"Audit chain verified: intact, {len(events)} events." in response.content.decode()


# --- the console's changelist ------------------------------------------------------------------------------------

BARE_COUNT = re.compile(r'^SELECT COUNT\(\*\) AS "__count" FROM "audit_auditevent"\s*$', re.IGNORECASE)


def _counts(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]


def test_it_never_counts_the_whole_log_on_the_consoles_changelist(client, admin_user, events):
    client.force_login(admin_user)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("admin:audit_auditevent_changelist"))

    assert response.status_code == 200
    assert response.context["cl"].result_count == len(events)  # the highest seq: the chain has no gaps
    counts = _counts(queries)
    assert not [sql for sql in counts if "audit_auditevent" in sql and " WHERE " not in sql.upper()]
    assert not [q["sql"] for q in queries.captured_queries if BARE_COUNT.match(q["sql"])]
    assert not [q["sql"] for q in queries.captured_queries if "DISTINCT" in q["sql"].upper()]


def test_it_caps_the_count_of_a_filtered_changelist(client, admin_user, events, monkeypatch):
    monkeypatch.setattr(AuditEventPaginator, "CAP", 2)
    client.force_login(admin_user)

    with CaptureQueriesContext(connection) as queries:
        many = client.get(reverse("admin:audit_auditevent_changelist"), {"environment": "dev"})
        one = client.get(reverse("admin:audit_auditevent_changelist"), {"outcome": "denied"})

    assert "more than 2 audit events" not in many.content.decode()  # exactly 2: not capped
    assert many.context["cl"].result_count == 2
    assert one.context["cl"].result_count == 1
    counts = [sql for sql in _counts(queries) if "audit_auditevent" in sql]
    assert counts and all("LIMIT 3" in sql for sql in counts), counts
    opened = client.get(reverse("admin:audit_auditevent_changelist"), {"q": "incident.opened"})
    assert "more than 2 audit events" in opened.content.decode()
