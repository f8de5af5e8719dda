"""Every list page costs a number of SQL queries that does not grow with the rows it lists.

Each page is measured twice: with 3 rows of everything, then with 30, all made through the services. An N+1 (a query
per listed row) shows as a larger second count. Both counts must also stay under the page's bound. The incident
investigation page, the dashboard and the audit explorer bound their own queries (tests/replays/test_investigation.py,
tests/test_dashboard.py, tests/audit/).

The console's changelists also never count a whole table: ConsolePaginator (incidents/admin.py) is tested at the end.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm

from approvals.models import ApprovalDecision, ApprovalRequest, UserToken
from approvals.services import approval_decide, deployment_promote
from approvals.tokens import user_token_create
from artifacts.models import Artifact
from incidents import services
from incidents.admin import ConsolePaginator
from incidents.models import (
    Agent,
    AgentKey,
    Command,
    Deployment,
    EnrollmentToken,
    Environment,
    Heartbeat,
    Incident,
    IncidentNote,
    PipelineVersion,
)
from replays.engine import write_bundle
from replays.engine.demo_policies import baseline_policy
from replays.engine.samples import sample_bundle
from replays.models import ReplayExecution
from replays.services import replay_request_dry_run
from tests.console import REGISTERED, admin_url
from tests.factories import HeartbeatFactory, UserFactory
from tests.replays.conftest import WINDOW_START, upload
from traceflux.audit.models import AuditEvent

OUR_APPS = {"incidents", "artifacts", "approvals", "replays", "audit"}
SMALL, LARGE = 3, 30
# What grow() makes more of; the changelist of any other registered model is only held to its query bound.
GROWN = {
    Environment, Agent, AgentKey, EnrollmentToken, Command, PipelineVersion, Deployment, ApprovalRequest,
    ApprovalDecision, Heartbeat, Incident, IncidentNote, Artifact, ReplayExecution, UserToken, get_user_model(), Group,
    AuditEvent,
}

# What each page costs whatever it lists (measured: SQLite and PostgreSQL differ by the planner-estimate query).
# A changelist: session, user, its permissions, one paginator count (plus the planner's estimate on PostgreSQL for an
# unfiltered table), one page of rows with their foreign keys joined, one prefetch where a column needs child rows,
# the sidebar filters' choices and date_hierarchy's range and links. Measured 4 to 10.
ADMIN_BOUND = 12
# The run history: session, user, the filter form's environments and versions, one page of runs. Measured 8.
HISTORY_BOUND = 10
# The inbox: session, user, permissions, the environments, its three lists and their decisions. Measured 9.
INBOX_BOUND = 11
# An API list: session, user, permissions, the page count, one page of rows, the approvals' decisions and their
# approvers (two prefetches). Measured 5 (replays) and 8 (approvals).
API_BOUND = 10


@dataclass
class Cast:
    admin: Any
    operator: Any
    approver1: Any
    approver2: Any
    prod: Environment
    baseline: PipelineVersion


@pytest.fixture
def cast(environments, admin_user, operator, approver1, approver2, artifact_store) -> Cast:
    baseline = services.pipeline_version_create(label="v1-baseline", spec=baseline_policy(), actor=admin_user)
    return Cast(admin_user, operator, approver1, approver2, environments["prod"], baseline)


def grow(cast: Cast, *, upto: int) -> None:
    """More rows of every listed model, through the services (in prod, the operator's token, and a new environment
    the operator may view), until there are `upto` incidents, replays, heartbeats and the rest."""
    start = Incident.objects.count()
    parent = PipelineVersion.objects.order_by("-pk").first()
    now = timezone.now()
    for k in range(start, upto):
        environment = services.environment_create(slug=f"region-{k}", name=f"Region {k}", actor=cast.admin)
        assign_perm("incidents.view_environment", cast.operator, environment)
        agent = services.agent_create(environment=cast.prod, name=f"edge-prod-{k}", hostname=f"edge-{k}.example.test",
                                      actor=cast.admin, region="us-east-1", pop="POP-12", services=["edge-gw"])
        services.agent_key_create(agent=agent, actor=cast.admin)
        services.enrollment_token_create(environment=cast.prod, actor=cast.admin, expires_at=now + timedelta(hours=1))
        services.command_create(agent=agent, kind="capture", payload={}, idempotency_key=f"cmd-{k}", actor=cast.admin)
        spec = {"schema": "traceflux.policy/v1", "name": f"policy {k}", "correlation": {"window_s": 600}}
        parent = services.pipeline_version_create(label=f"v3.{k}", spec=spec, actor=cast.admin, parent=parent)
        deployment, approval = deployment_promote(pipeline_version=parent, environment=cast.prod,
                                                  requested_by=cast.operator, reason=f"roll out v3.{k}")
        assert approval is not None
        approval_decide(request=approval, approver=cast.approver1, decision="approve", comment="looks right")
        services.heartbeat_record(agent=agent, status="ok", version="1.4.0", deployment_id=deployment.pk)
        ref = f"INC-PROD-{k:03d}"
        incident = services.incident_open(
            ref=ref, title="edge-gw 5xx burst", environment=cast.prod, window_start=WINDOW_START,
            window_end=WINDOW_START + timedelta(minutes=4), actor=cast.admin, source_agent=agent,
            deployment=deployment, service="edge-gw", region="us-east-1", pop="POP-12",
        )
        services.incident_note_add(incident=incident, author=cast.operator, body=f"note {k}")
        manifest, lines, baseline_doc = sample_bundle(
            seed=k, ref=ref, environment="prod", agent=agent.name, window_start=WINDOW_START, minutes=4, signals=20,
            spec_hash=cast.baseline.spec_hash,
        )
        buffer = io.BytesIO()
        write_bundle(buffer, manifest=manifest, signals=lines, baseline=baseline_doc, spec=cast.baseline.spec,
                     fmt="tar.gz")
        replay_request_dry_run(incident=incident, artifact=upload(agent, buffer.getvalue()), user=cast.operator)
        UserFactory(username=f"user-{k}")
        user_token_create(user=cast.operator, name=f"cli-{k}", actor=cast.operator)
        Group.objects.create(name=f"group-{k}")
    assert Incident.objects.count() == ReplayExecution.objects.count() == Heartbeat.objects.count() == upto


def measure(client, url: str, *, bound: int, django_assert_max_num_queries) -> tuple[int, Any]:
    """What one GET of `url` costs in queries (at most bound), after one unmeasured GET so caches are warm."""
    assert client.get(url).status_code == 200, url
    with django_assert_max_num_queries(bound) as captured:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(captured.captured_queries), response


def assert_flat(client, cast: Cast, urls: list[str], *, bound: int, rows: Callable[[Any], int],
                django_assert_max_num_queries, unlisted: Collection[str] = ()) -> None:
    """Each page costs no more queries listing 30 rows than listing 3, and does list more rows the second time (except
    the `unlisted` pages, whose model nothing here makes): a page showing nothing would prove nothing."""
    small, large = {}, {}
    for sample, upto in ((small, SMALL), (large, LARGE)):
        grow(cast, upto=upto)
        for url in urls:
            count, response = measure(client, url, bound=bound,
                                      django_assert_max_num_queries=django_assert_max_num_queries)
            sample[url] = (count, rows(response))
    grew = {url: f"{small[url][0]} → {large[url][0]} queries" for url in urls if large[url][0] > small[url][0]}
    assert not grew, f"these pages cost more queries with {LARGE} rows than with {SMALL}: {grew}"
    same = {url: small[url][1] for url in urls if large[url][1] <= small[url][1] and url not in unlisted}
    assert not same, f"these pages listed no more rows the second time (rows listed): {same}"


def listed_in_changelist(response: Any) -> int:
    return response.context["cl"].result_count


# --- the console ---------------------------------------------------------------------------------------------------


def test_it_bounds_every_admin_changelist_for_a_superuser(client, cast, django_assert_max_num_queries):
    client.force_login(cast.admin)
    assert_flat(client, cast, [admin_url(model) for model in REGISTERED], bound=ADMIN_BOUND,
                rows=listed_in_changelist, unlisted=[admin_url(model) for model in REGISTERED if model not in GROWN],
                django_assert_max_num_queries=django_assert_max_num_queries)


def test_it_bounds_every_scoped_changelist_for_an_operator(client, cast, django_assert_max_num_queries):
    """The operator's lists are narrowed by guardian per environment: that narrowing must not cost per row either."""
    ours = [model for model in REGISTERED if model._meta.app_label in OUR_APPS]
    cast.operator.user_permissions.add(*Permission.objects.filter(
        codename__startswith="view_", content_type__in=ContentType.objects.get_for_models(*ours).values(),
    ))
    client.force_login(cast.operator)
    urls = [admin_url(model) for model in ours if client.get(admin_url(model)).status_code == 200]
    assert {admin_url(Incident), admin_url(AuditEvent), admin_url(ReplayExecution)} <= set(urls)
    assert_flat(client, cast, urls, bound=ADMIN_BOUND, rows=listed_in_changelist,
                unlisted=[admin_url(model) for model in ours if model not in GROWN],
                django_assert_max_num_queries=django_assert_max_num_queries)


# --- the portal's pages --------------------------------------------------------------------------------------------


def test_it_bounds_the_run_history(client, cast, django_assert_max_num_queries):
    client.force_login(cast.operator)
    urls = [reverse("replays:history"), reverse("replays:history") + "?environment=prod&mode=dry_run"]
    assert_flat(client, cast, urls, bound=HISTORY_BOUND, rows=lambda response: len(response.context["rows"]),
                django_assert_max_num_queries=django_assert_max_num_queries)


def listed_in_inbox(response: Any) -> int:
    return sum(len(response.context[section]) for section in ("pending", "mine", "decisions"))


@pytest.mark.parametrize("who", ["operator", "approver1", "approver2"])
def test_it_bounds_the_approvals_inbox(client, cast, who, django_assert_max_num_queries):
    """The requester sees their open requests, approver1 their decisions, approver2 what waits for them."""
    client.force_login(getattr(cast, who))
    urls = [reverse("approvals:inbox"), reverse("approvals:inbox") + "?environment=prod"]
    assert_flat(client, cast, urls, bound=INBOX_BOUND, rows=listed_in_inbox,
                django_assert_max_num_queries=django_assert_max_num_queries)


def test_it_bounds_the_api_lists(client, cast, django_assert_max_num_queries):
    client.force_login(cast.operator)
    urls = [
        reverse("replays-api:replay-list"),
        reverse("replays-api:replay-list") + "?environment=prod&mode=dry_run",
        reverse("approvals_api:request-list"),
        reverse("approvals_api:request-list") + "?environment=prod&status=pending",
    ]
    assert_flat(client, cast, urls, bound=API_BOUND, rows=lambda response: len(response.json()["results"]),
                django_assert_max_num_queries=django_assert_max_num_queries)


# --- the console's paginator -----------------------------------------------------------------------------------------


CONSOLE_APPS = {"incidents", "artifacts", "approvals", "replays"}


@pytest.mark.parametrize(
    "model", [m for m in REGISTERED if m._meta.app_label in CONSOLE_APPS], ids=lambda model: model._meta.label
)
def test_it_never_counts_a_whole_table_on_a_console_changelist(model):
    model_admin = admin.site._registry[model]
    assert model_admin.paginator is ConsolePaginator
    assert model_admin.show_full_result_count is False


@pytest.fixture
def small_cap(monkeypatch) -> int:
    monkeypatch.setattr(ConsolePaginator, "CAP", 5)
    return 5


@pytest.fixture
def heartbeats(environments, admin_user) -> list[Heartbeat]:
    agent = services.agent_create(environment=environments["prod"], name="edge-prod-1", hostname="edge-prod-1",
                                  actor=admin_user)
    return [HeartbeatFactory(agent=agent, status="ok") for _ in range(8)]


def test_it_counts_a_list_exactly_up_to_the_cap(environments, heartbeats):
    paginator = ConsolePaginator(Heartbeat.objects.filter(status="ok").order_by("pk"), 3)
    assert (paginator.count, paginator.num_pages, paginator.capped, paginator.estimated) == (8, 3, False, False)


def test_it_stops_counting_a_filtered_list_at_the_cap(small_cap, heartbeats):
    paginator = ConsolePaginator(Heartbeat.objects.filter(status="ok").order_by("pk"), 2)
    with CaptureQueriesContext(connection) as captured:
        assert paginator.count == small_cap + 1
    assert paginator.capped and not paginator.estimated
    (count,) = [query["sql"] for query in captured.captured_queries]
    assert "COUNT(" in count.upper() and "LIMIT 6" in count.upper()  # a subquery of at most CAP + 1 rows


def test_it_says_more_than_the_cap_on_a_capped_changelist(client, admin_user, small_cap, heartbeats):
    client.force_login(admin_user)
    response = client.get(admin_url(Heartbeat), {"status__exact": "ok"})
    assert response.status_code == 200
    assert "more than 5 heartbeats" in response.content.decode()
    assert response.context["cl"].result_count == 6


@pytest.mark.needs("postgresql")
def test_it_reads_the_planners_estimate_for_a_whole_big_table(client, admin_user, small_cap, heartbeats):
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(Heartbeat._meta.db_table)}")  # what autovacuum does
    paginator = ConsolePaginator(Heartbeat.objects.order_by("pk"), 2)
    with CaptureQueriesContext(connection) as captured:
        assert paginator.count == 8
    assert paginator.estimated and not paginator.capped
    assert not any("COUNT(" in query["sql"].upper() for query in captured.captured_queries)

    client.force_login(admin_user)
    assert "about 8 heartbeats" in client.get(admin_url(Heartbeat)).content.decode()


def test_it_counts_exactly_when_the_planner_has_no_estimate(admin_user, heartbeats):
    """Without an estimate (SQLite; a table never analyzed) or below the cap, the whole table is counted exactly."""
    paginator = ConsolePaginator(Heartbeat.objects.order_by("pk"), 2)
    assert (paginator.count, paginator.capped) == (8, False)
