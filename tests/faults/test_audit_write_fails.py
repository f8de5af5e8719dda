"""The audit write fails: the action it records is not committed either (the audit fails closed).

On PostgreSQL the refusal is real: a trigger on audit_auditevent raises on every insert. It is created inside the
test's transaction (these tests are not transactional), so whatever happens it goes with the rollback at the end;
the test drops it itself as soon as the faulty call is made. Each action goes through its real URL: an approver's
decision, an operator's dry-run request, an agent's upload. Each must answer a clean 503 naming the problem, and
leave nothing of the action behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection
from rest_framework.test import APIClient

from approvals.models import ApprovalDecision, ApprovalRequest
from approvals.tokens import user_token_create
from artifacts.models import Artifact
from incidents.models import Incident
from incidents.services import agent_key_create
from replays.models import ReplayExecution
from tests.approvals.conftest import request_for
from tests.artifacts.conftest import AGENT_NAME, bundle_bytes, files_under, post_upload
from tests.factories import AgentFactory, DeploymentFactory
from tests.replays.conftest import World
from traceflux.audit.models import AuditChainHead, AuditEvent
from traceflux.audit.services import audit_verify

pytestmark = [
    pytest.mark.faults,
    pytest.mark.xdist_group("faults"),
    pytest.mark.needs("postgresql"),
    pytest.mark.django_db,
]

REFUSED = {"detail": "the audit log could not be written, so nothing was changed; retry", "retry_after": 5}


@contextmanager
def audit_refuses_inserts() -> Iterator[None]:
    """Every INSERT into the audit table raises, until the block ends (and in any case when the test rolls back)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION fault_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'fault test: audit_auditevent refuses inserts'; END $$"
        )
        cursor.execute("CREATE TRIGGER fault_refuse_audit BEFORE INSERT ON audit_auditevent "
                       "FOR EACH ROW EXECUTE FUNCTION fault_refuse_audit()")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER fault_refuse_audit ON audit_auditevent")
            cursor.execute("DROP FUNCTION fault_refuse_audit()")


def token_client(user) -> APIClient:
    _, plaintext = user_token_create(user=user, name="fault-test", actor=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    return client


@pytest.fixture
def chain():
    """The chain as it stands before the faulty call, and a check that the call changed nothing in it."""

    class Chain:
        def __init__(self) -> None:
            self.count = AuditEvent.objects.count()
            self.head = AuditChainHead.objects.values_list("seq", "hash").first()

        def assert_unchanged(self) -> None:
            assert AuditEvent.objects.count() == self.count
            assert AuditChainHead.objects.values_list("seq", "hash").first() == self.head
            verification = audit_verify()
            assert verification.ok, verification.problem

    return Chain


def assert_clean_503(response) -> None:
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "5"
    assert response.json() == REFUSED


def test_it_does_not_record_a_decision_whose_audit_event_is_refused(environments, operator, approver1, chain):
    # staging needs one approval: this decision would close the request, if it were committed.
    pending = request_for(DeploymentFactory(environment=environments["staging"]), by=operator)
    client = token_client(approver1)
    before = chain()

    with audit_refuses_inserts():
        response = client.post(f"/api/v1/approvals/{pending.pk}/approve/", {"comment": "looks right"},
                               format="json")

    assert_clean_503(response)
    pending.refresh_from_db()
    assert pending.status == "pending"
    assert not ApprovalDecision.objects.filter(request=pending).exists()
    before.assert_unchanged()
    # Once the audit log takes writes again, the same decision goes through.
    assert client.post(f"/api/v1/approvals/{pending.pk}/approve/", {"comment": "looks right"},
                       format="json").status_code == 200
    assert ApprovalRequest.objects.get(pk=pending.pk).status == "approved"


def test_it_does_not_queue_a_replay_whose_audit_event_is_refused(
    prod: World, operator, chain, django_capture_on_commit_callbacks
):
    client = token_client(operator)
    before = chain()

    with audit_refuses_inserts(), django_capture_on_commit_callbacks() as enqueued:
        response = client.post("/api/v1/replays/", {"mode": "dry_run", "incident": prod.incident.ref,
                                                    "artifact": prod.bundle.pk}, format="json")

    assert_clean_503(response)
    assert not ReplayExecution.objects.exists()
    assert enqueued == []  # no task was handed to Celery for a run that does not exist
    before.assert_unchanged()


def test_it_does_not_store_an_upload_whose_audit_event_is_refused(environments, media_root: Path, chain):
    agent = AgentFactory(environment=environments["staging"], name=AGENT_NAME)
    _, key = agent_key_create(agent=agent, actor=None, scopes=["artifacts:write"])
    content = bundle_bytes(signals=600)  # its manifest opens incident INC-2026-0226-001
    before = chain()

    with audit_refuses_inserts():
        response = post_upload(APIClient(), key, content)

    assert_clean_503(response)
    assert not Artifact.objects.exists()
    assert not Incident.objects.exists()  # opened in the upload's transaction, rolled back with it
    assert files_under(media_root) == []  # neither at its content-addressed name nor in MEDIA_ROOT/tmp
    before.assert_unchanged()
    assert post_upload(APIClient(), key, content).status_code == 201
