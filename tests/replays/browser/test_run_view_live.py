"""The run view in a real browser: htmx polls the stages while the run is active, and once it is final the page
reloads with the results and stops polling."""

from __future__ import annotations

import re

import pytest

from replays.models import ReplayExecution
from replays.services import replay_request_dry_run, replay_run

pytestmark = [pytest.mark.needs("chromium"), pytest.mark.django_db(transaction=True)]


def test_it_follows_a_run_live_until_it_is_final(new_page, live_server, prod, operator, monkeypatch):
    monkeypatch.setattr("replays.tasks.run_replay.delay", lambda *args: None)  # no worker: the run stays queued
    execution = replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=operator)
    operator.set_password("pw-operator")
    operator.save(update_fields=["password"])
    path = f"/replays/{execution.pk}/"
    page = new_page()
    page.goto(f"{live_server.url}/admin/login/?next={path}")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "pw-operator")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(re.escape(live_server.url + path)))
    assert page.inner_text("#live #status") == "queued"
    assert page.get_attribute("#live", "hx-trigger") == "every 2s"
    page.wait_for_function("() => window.htmx !== undefined")  # served from django-htmx's static files, no CDN

    replay_run(execution_id=execution.pk)  # a worker takes the run and finishes it
    assert ReplayExecution.objects.get(pk=execution.pk).status == "succeeded"

    page.wait_for_selector("#parity-score", timeout=10_000)  # the poll found it final: the page reloaded
    assert page.inner_text("#live #status") == "succeeded"
    assert page.get_attribute("#live", "hx-get") is None
    assert page.locator("svg.timeline").count() == 1
