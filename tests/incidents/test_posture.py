from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from incidents import services
from incidents.models import Environment, GatePolicy, PostureAction, ReplayPolicy
from incidents.posture import posture_decision
from traceflux.audit.models import AuditEvent

EXPECTED_EXECUTE = {
    ReplayPolicy.DISABLED: "deny",
    ReplayPolicy.DRY_RUN_ONLY: "dry_run_only",
}

ALL = list(itertools.product(ReplayPolicy.values, GatePolicy.values, GatePolicy.values))


def _contradictory(replay: str, execute: str) -> bool:
    return replay != ReplayPolicy.ALLOWED and execute != GatePolicy.DENY


def _expected(replay: str, execute: str, deploy: str) -> dict[str, str]:
    return {
        "dry_run": "deny" if replay == ReplayPolicy.DISABLED else "allow",
        "execute": EXPECTED_EXECUTE.get(replay, execute),
        "deploy": deploy,
    }


@pytest.mark.django_db
@pytest.mark.parametrize(("replay", "execute", "deploy"), [c for c in ALL if not _contradictory(c[0], c[1])])
def test_it_answers_the_decision_table_for_every_sound_posture(replay, execute, deploy):
    env = services.environment_create(
        slug=f"{replay}-{execute}-{deploy}".replace("_", "-"),
        name="x",
        actor=None,
        replay_policy=replay,
        execute_policy=execute,
        deploy_policy=deploy,
    )
    answers = {action: posture_decision(env, action).value for action in PostureAction.values}
    assert answers == _expected(replay, execute, deploy)


@pytest.mark.django_db
@pytest.mark.parametrize(("replay", "execute", "deploy"), [c for c in ALL if _contradictory(c[0], c[1])])
def test_it_refuses_every_contradictory_posture_by_name(replay, execute, deploy):
    with pytest.raises(ValidationError) as caught:
        services.environment_create(
            slug="bad", name="bad", actor=None, replay_policy=replay, execute_policy=execute, deploy_policy=deploy
        )
    assert "execute_policy must be deny when replay_policy is" in str(caught.value)
    assert not Environment.objects.exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_it_refuses_a_zero_quorum_and_a_non_positive_ttl():
    with pytest.raises(ValidationError) as caught:
        services.environment_create(slug="q", name="q", actor=None, required_approvals=0, approval_ttl=timedelta(0))
    assert set(caught.value.message_dict) == {"required_approvals", "approval_ttl"}


@pytest.mark.django_db
def test_it_refuses_a_posture_change_that_would_contradict_and_keeps_the_old_one(environments, admin_user):
    dev = environments["dev"]
    with pytest.raises(ValidationError):
        services.environment_set_posture(
            environment=dev, actor=admin_user, reason="lock down", replay_policy="disabled"
        )
    dev.refresh_from_db()
    assert (dev.replay_policy, dev.execute_policy) == ("allowed", "allow")


@pytest.mark.django_db
def test_it_records_a_posture_change_with_who_and_why(environments, admin_user):
    prod = environments["prod"]
    services.environment_set_posture(environment=prod, actor=admin_user, reason="freeze", deploy_policy="deny")
    prod.refresh_from_db()
    assert posture_decision(prod, "deploy") == "deny"
    latest = prod.history.first()
    assert (latest.history_user, latest.history_change_reason) == (admin_user, "freeze")
    event = AuditEvent.objects.get(action="environment.posture_changed")
    assert event.data["before"]["deploy_policy"] == "require_approval"
    assert event.data["after"]["deploy_policy"] == "deny"
    assert (event.actor_name, event.environment, event.reason) == ("admin", "prod", "freeze")


@pytest.mark.django_db
def test_it_has_the_database_refuse_a_contradictory_posture_written_around_the_service(environments):
    with pytest.raises(IntegrityError):
        Environment.objects.filter(pk=environments["staging"].pk).update(replay_policy="disabled")


def test_it_rejects_an_unknown_action():
    env = Environment(replay_policy="allowed", execute_policy="allow", deploy_policy="allow")
    with pytest.raises(ValueError, match="unknown posture action 'launch'"):
        posture_decision(env, "launch")
