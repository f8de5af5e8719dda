"""The incident page in a real browser (Debian's Chromium) at a laptop's width: every section fits its card, so no
column is cut off at the card's edge (the bundles' last column, the pipeline version that produced each, once was)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.approvals.browser.test_promotion_flow import sign_in, with_password
from tests.replays.conftest import make_world

pytestmark = [pytest.mark.needs("chromium"), pytest.mark.django_db(transaction=True)]

OVERFLOWING = """() => [...document.querySelectorAll('main section')]
    .filter(section => section.scrollWidth > section.clientWidth + 1)
    .map(section => `${section.id}: ${section.scrollWidth} > ${section.clientWidth}`)"""


def test_it_fits_every_section_of_the_incident_page_in_a_laptop_window(
    new_page, live_server, environments, admin_user, operator
):
    world = make_world(environments["prod"], admin_user)
    with_password(operator, "pw-operator")
    page = new_page()
    page.set_viewport_size({"width": 1280, "height": 900})

    sign_in(page, live_server, operator, "pw-operator", reverse("incidents-ui:investigate", args=[world.incident.ref]))

    assert page.evaluate(OVERFLOWING) == []
    version = page.locator(f"#artifact-{world.bundle.pk} td").last
    assert version.inner_text().strip() == world.baseline.label
    card = page.locator("#artifacts").bounding_box()
    cell = version.bounding_box()
    assert cell["x"] + cell["width"] <= card["x"] + card["width"]
