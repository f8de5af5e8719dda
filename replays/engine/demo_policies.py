"""The demo's two correlation policies, as plain data (traceflux.policy/v1; docs/policy.md walks through them).

`baseline_policy()` is what production runs; `tightened_policy()` adds one cross-source join, so that a replay of the
demo window (samples.sample_bundle) folds the BGP session trouble and the DNS SERVFAILs at POP-12 into one incident,
where the baseline pages for them separately. Only the join differs, so a parity report isolates that change; and
the joined incident touches two services, so its resolver restart is blocked by its blast-radius bound.
Each call returns a fresh document: callers may change it freely.
"""

from __future__ import annotations

from typing import Any

from .policy import POLICY_SCHEMA


def baseline_policy() -> dict[str, Any]:
    """Production's policy: alerting signals only, one incident per alert name, service, region and POP."""
    return {
        "schema": POLICY_SCHEMA,
        "name": "baseline",
        "description": "Production correlation: alerting signals grouped by source, alert, service, region and POP.",
        "normalize": {
            "rename_labels": {"dc": "region", "svc": "service"},
            "drop_labels": ["pod_ip", "request_id", "trace_id"],
            "sources": {
                # Flow exporters name the POP `site`, and leave severity out on routine records.
                "flow": {"rename_labels": {"site": "pop"}, "default_severity": "info"},
            },
        },
        "fingerprint": {
            "rules": [
                {
                    # Auth errors differ per tenant, not per host: one identity per tenant.
                    "name": "auth-by-tenant",
                    "matchers": [{"label": "service", "op": "=", "value": "auth"}],
                    "fields": ["source", "name", "labels.tenant"],
                },
            ],
            "default": ["source", "name", "labels"],
        },
        # Agents re-emit a signal, unchanged, within a couple of seconds when a push is retried.
        "dedup": {"window_s": 5, "fields": ["source", "name", "labels", "value"]},
        "suppression": {
            "thresholds": [{"name": "alerting-only", "min_severity": "warning"}],
        },
        "correlation": {"group_by": ["source", "alertname", "service", "region", "pop"], "window_s": 300},
        "incidents": {
            "min_signals": 3,
            "min_severity": "warning",
            "title": "{name} at {labels.pop}",
            "actions": [
                {
                    "name": "drain-pop",
                    "capability": "traffic:drain",
                    "when": [
                        {"label": "service", "op": "=", "value": "edge-gw"},
                        {"label": "severity", "op": "=~", "value": "error|critical"},
                    ],
                    "on": "any",
                    "bounds": {"pops": 1, "regions": 1},
                },
                {
                    "name": "restart-resolvers",
                    "capability": "service:restart",
                    "when": [{"label": "alertname", "op": "=", "value": "dns_servfail"}],
                    "on": "any",
                    "bounds": {"pops": 1, "services": 1},
                },
            ],
        },
    }


def tightened_policy() -> dict[str, Any]:
    """The baseline plus one join: BGP and DNS signals at the same POP within 60 s are one episode."""
    policy = baseline_policy()
    policy["name"] = "tightened"
    policy["description"] = (
        "Baseline plus a BGP+DNS join per POP: a session flap and the DNS errors it causes page once."
    )
    policy["correlation"]["joins"] = [
        {"name": "bgp-dns-same-pop", "sources": ["bgp", "dns"], "on": ["pop"], "within_s": 60},
    ]
    return policy
