"""The one place that answers "may this happen here?". Every gate in the product asks posture_decision()."""

from __future__ import annotations

from .models import Environment, GatePolicy, PostureAction, PostureDecision, ReplayPolicy

_GATE = {
    GatePolicy.DENY: PostureDecision.DENY,
    GatePolicy.REQUIRE_APPROVAL: PostureDecision.REQUIRE_APPROVAL,
    GatePolicy.ALLOW: PostureDecision.ALLOW,
}


def posture_decision(environment: Environment, action: str) -> PostureDecision:
    """allow | dry_run_only | require_approval | deny for action ∈ {dry_run, execute, deploy} in this environment."""
    if action == PostureAction.DRY_RUN:
        return PostureDecision.DENY if environment.replay_policy == ReplayPolicy.DISABLED else PostureDecision.ALLOW
    if action == PostureAction.EXECUTE:
        if environment.replay_policy == ReplayPolicy.DISABLED:
            return PostureDecision.DENY
        if environment.replay_policy == ReplayPolicy.DRY_RUN_ONLY:
            return PostureDecision.DRY_RUN_ONLY
        return _GATE[GatePolicy(environment.execute_policy)]
    if action == PostureAction.DEPLOY:
        return _GATE[GatePolicy(environment.deploy_policy)]
    raise ValueError(f"unknown posture action {action!r}; expected one of {', '.join(PostureAction.values)}")
