"""The operator's widest pages in a real browser (Debian's Chromium) at a laptop's width: every section fits its card,
so no column is cut off at the card's edge (the bundles' last column, the pipeline version that produced each, once
was; so were the audit log's reason and request columns)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from replays.services import replay_request_dry_run
from tests.approvals.browser.test_promotion_flow import sign_in, with_password
from tests.approvals.conftest import request_for
from tests.factories import DeploymentFactory
from tests.replays.conftest import make_world
from traceflux.audit import record

pytestmark = [pytest.mark.needs("chromium"), pytest.mark.django_db(transaction=True)]

OVERFLOWING = """() => [...document.querySelectorAll('main section')]
    .filter(section => section.scrollWidth > section.clientWidth + 1)
    .map(section => `${section.id}: ${section.scrollWidth} > ${section.clientWidth}`)"""


@pytest.fixture
def laptop(new_page, live_server, environments, admin_user, operator):
    world = make_world(environments["prod"], admin_user)
    # A refusal worded as preflight words one: the longest reason the log shows.
    approval = request_for(DeploymentFactory(environment=world.environment), by=operator)
    record(action="approval.request_refused", actor=operator, target=approval, environment=world.environment,
           outcome="denied", data={"checks": ["pipeline_version"]},
           reason="pipeline_version: the artifact was produced by v2.14.3; the dry run replayed v2.15.0. An execute "
                  "runs the version that produced the incident: dry-run that version first")
    # A dry run compared with another version: the replay history's widest row.
    dry_run = replay_request_dry_run(incident=world.incident, artifact=world.bundle, user=operator,
                                     compare_version=world.tightened)
    dry_run.refresh_from_db()
    assert dry_run.status == "succeeded", dry_run.error
    with_password(operator, "pw-operator")
    page = new_page()
    page.set_viewport_size({"width": 1280, "height": 900})
    return world, page


def test_it_fits_every_section_of_the_incident_page_in_a_laptop_window(laptop, live_server, operator):
    world, page = laptop

    sign_in(page, live_server, operator, "pw-operator", reverse("incidents-ui:investigate", args=[world.incident.ref]))

    assert page.evaluate(OVERFLOWING) == []
    version = page.locator(f"#artifact-{world.bundle.pk} td").last
    assert version.inner_text().strip() == world.baseline.label
    card = page.locator("#artifacts").bounding_box()
    cell = version.bounding_box()
    assert cell["x"] + cell["width"] <= card["x"] + card["width"]


@pytest.mark.parametrize("name", ["audit-explorer", "replays:history", "dashboard"])
def test_it_fits_the_operators_lists_in_a_laptop_window(laptop, live_server, operator, name):
    _, page = laptop

    sign_in(page, live_server, operator, "pw-operator", reverse(name))

    assert page.locator("main section").count() > 0
    assert page.evaluate(OVERFLOWING) == []
