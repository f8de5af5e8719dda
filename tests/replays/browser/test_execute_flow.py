"""End to end in a real browser (Debian's Chromium): dry run, parity report, execute refused before approval, two
approvers sign off, the operator executes, the agent client verifies the signed commands and acknowledges them, and
the run view shows the run succeeded."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from approvals.models import ApprovalRequest
from incidents.models import Command
from incidents.services import agent_key_create
from replays.models import ReplayExecution
from tests.approvals.browser.test_promotion_flow import sign_in, with_password
from tests.replays.conftest import make_world
from traceflux.audit import SYSTEM

pytestmark = [pytest.mark.needs("chromium"), pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[3]


def run_agent(live_server, agent, key: str) -> list[dict]:
    """`python -m artifacts.client work` as the agent runs it: its own environment and name, the portal's URL."""
    env = {**os.environ, "TRACEFLUX_URL": live_server.url, "TRACEFLUX_AGENT_KEY": key,
           "TRACEFLUX_AGENT_ENVIRONMENT": agent.environment.slug, "TRACEFLUX_AGENT_NAME": agent.name}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run([sys.executable, "-m", "artifacts.client", "work"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_it_dry_runs_gets_approval_executes_and_the_agents_verify_the_signed_commands(
    new_page, live_server, environments, admin_user, operator, approver1, approver2
):
    from incidents.models import Environment

    prod = environments["prod"]
    Environment.objects.filter(pk=prod.pk).update(replay_policy="allowed", execute_policy="require_approval")
    prod.refresh_from_db()
    world = make_world(prod, admin_user)
    with_password(operator, "pw-operator")
    with_password(approver1, "pw-approver1")
    with_password(approver2, "pw-approver2")

    # 1. The operator opens the incident's new-replay form and starts a dry run with the defaults.
    page = new_page()
    sign_in(page, live_server, operator, "pw-operator", f"/replays/new/?incident={world.incident.ref}")
    page.click("#new-replay-form button:has-text('Start dry run')")
    page.wait_for_url(re.compile(r"/replays/\d+/$"))
    dry_run = ReplayExecution.objects.get(mode="dry_run")
    page.wait_for_selector("#status:has-text('succeeded')")
    dry_run.refresh_from_db()
    assert dry_run.status == "succeeded"
    assert dry_run.pipeline_version == world.baseline
    # The parity report is on the page.
    assert page.inner_text("#parity-score").strip() == f"{dry_run.summary['parity_score']:.2f}"
    assert dry_run.summary["highlights"][0] in page.inner_text("#highlights")
    assert page.locator("#timeline svg").count() == 1

    # 2. Execute before any approval: refused, and the page shows the failed check.
    page.click("#execute-form button:has-text('Execute')")
    page.wait_for_selector("#failed-checks")
    refused = ReplayExecution.objects.get(mode="execute")
    assert refused.status == "rejected"
    assert "approval" in page.inner_text("#failed-checks")
    assert not Command.objects.exists()

    # 3. Back on the dry run, the operator requests execute approval with a reason.
    page.goto(f"{live_server.url}/replays/{dry_run.pk}/")
    page.fill("#request-approval-form textarea", "drain POP-12: parity is high")
    page.click("#request-approval-form button:has-text('Request execute approval')")
    page.wait_for_selector("#approval-status")
    request = ApprovalRequest.objects.get(subject_kind="replay_execute")
    assert (request.status, request.required_approvals) == ("pending", 2)

    # 4. approver1 and approver2 each sign in, review and approve with a comment.
    for approver, password in ((approver1, "pw-approver1"), (approver2, "pw-approver2")):
        review = new_page()
        sign_in(review, live_server, approver, password, f"/approvals/{request.pk}/")
        assert world.incident.ref in review.content()
        review.fill("#id_approve-comment", f"parity checked by {approver.get_username()}")
        review.click("main button:has-text('Approve')")
        review.wait_for_url(f"{live_server.url}/approvals/{request.pk}/")
    request.refresh_from_db()
    assert request.status == "approved"

    # 5. The operator executes: the approval is consumed and signed commands wait for the agents.
    page.goto(f"{live_server.url}/replays/{dry_run.pk}/")
    page.click("#execute-form button:has-text('Execute')")
    page.wait_for_url(re.compile(r"/replays/\d+/$"))
    execution = ReplayExecution.objects.filter(mode="execute", status__in=["dispatching", "succeeded"]).get()
    page.wait_for_selector("#status:has-text('dispatching')")
    request.refresh_from_db()
    assert request.status == "consumed" and request.consumed_by_id == execution.pk

    # 6. Each target agent's client fetches its commands, verifies the signatures and acknowledges them.
    agents = {command.agent for command in Command.objects.filter(kind="replay_action")}
    assert world.agent in agents
    for agent in agents:
        _, key = agent_key_create(agent=agent, actor=SYSTEM)
        outcomes = run_agent(live_server, agent, key)
        assert outcomes and {line["outcome"] for line in outcomes} == {"succeeded"}, outcomes

    # 7. The run view shows the run succeeded, with its acknowledged commands.
    page.wait_for_selector("#status:has-text('succeeded')", timeout=20_000)
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert set(Command.objects.values_list("status", flat=True)) == {"succeeded"}
    assert "succeeded" in page.inner_text("#commands")
