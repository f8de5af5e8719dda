"""The database connection terminated during an upload (`pg_terminate_backend`).

A real server (pytest-django's threaded live server) takes a real multipart upload. While the request is in flight,
held at one point of artifacts.services.artifact_upload, this test terminates the request's own PostgreSQL backend
from its own connection, then lets the request go on. The agent must get a clean, retryable answer (503 with
Retry-After and a JSON detail), nothing may be left behind (no row, no stored file, no temporary file), and the same
upload sent again must be stored.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from artifacts import services as artifact_services
from artifacts import storage as artifact_storage_module
from artifacts.models import Artifact
from tests.artifacts.conftest import bundle_bytes, files_under
from traceflux.audit.models import AuditEvent
from traceflux.audit.services import audit_verify

pytestmark = [
    pytest.mark.faults,
    pytest.mark.xdist_group("faults"),
    pytest.mark.needs("postgresql"),
    # The live server's threads have their own connections: what the test sets up must be committed.
    pytest.mark.django_db(transaction=True),
]

UPLOAD_PATH = "/api/v1/agent/artifacts/"


def post_upload(base_url: str, key: str, content: bytes) -> tuple[int, dict[str, str], Any]:
    """A multipart upload as an agent sends it, over HTTP: (status, headers, decoded JSON body or the raw text)."""
    body = encode_multipart(BOUNDARY, {"file": SimpleUploadedFile("bundle.tar.gz", content), "kind": "incident_bundle"})
    request = urllib.request.Request(base_url + UPLOAD_PATH, data=body, method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": MULTIPART_CONTENT, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, dict(error.headers), error.read()
    try:
        return status, headers, json.loads(raw)
    except ValueError:
        return status, headers, raw.decode(errors="replace")


class Cut:
    """Holds the request at a point of the upload, hands this test the backend pid of the request's connection, and
    lets the request go on once the test has terminated that backend."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.reached = threading.Event()
        self.release = threading.Event()

    def hold(self) -> None:
        """Runs in the server's request thread."""
        connection.ensure_connection()
        self.pid = connection.connection.info.backend_pid
        self.reached.set()
        assert self.release.wait(timeout=30), "the test never released the request"


@contextmanager
def cut_at(point: str) -> Iterator[Cut]:
    """Install the hold at `point`: "validating" (the content is being checked, nothing placed yet) or "placed"
    (the bytes are at their content-addressed name, the row not yet written)."""
    cut = Cut()
    if point == "validating":
        real: Callable[..., Any] = artifact_services.check_content

        def holding(**kwargs: Any) -> Any:
            cut.hold()
            return real(**kwargs)

        with mock.patch.object(artifact_services, "check_content", holding):
            yield cut
    else:
        real_place = artifact_storage_module.place

        def holding_place(**kwargs: Any) -> Any:
            placed = real_place(**kwargs)
            cut.hold()
            return placed

        with mock.patch.object(artifact_storage_module, "place", holding_place):
            yield cut


def terminate(pid: int) -> None:
    """pg_terminate_backend from this test's own connection; returns once the backend is gone."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone()[0], f"backend {pid} was not terminated"
        deadline = time.monotonic() + 10
        while True:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
            if cursor.fetchone()[0] == 0:
                return
            assert time.monotonic() < deadline, f"backend {pid} still there 10 s after pg_terminate_backend"
            time.sleep(0.02)


@pytest.mark.parametrize("point", ["validating", "placed"])
def test_it_answers_503_leaves_nothing_behind_and_takes_the_retry_when_the_database_connection_is_cut_mid_upload(
    point, live_server, agent_key, media_root: Path, figure
):
    content = bundle_bytes(signals=600)
    events_before = AuditEvent.objects.count()

    with cut_at(point) as cut, ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(post_upload, live_server.url, agent_key, content)
        assert cut.reached.wait(timeout=30), f"the upload never reached {point}: {pending.result()}"
        terminate(cut.pid)
        cut.release.set()
        status, headers, body = pending.result(timeout=30)

    figure("answer", f"{status} Retry-After={headers.get('Retry-After')}")
    assert status == 503, body
    assert int(headers["Retry-After"]) > 0
    assert headers["Content-Type"] == "application/json"
    assert body == {"detail": "the database connection was lost; retry", "retry_after": int(headers["Retry-After"])}
    # Nothing half-stored: no row, no file at its content-addressed name, no temporary file (MEDIA_ROOT/tmp).
    assert not Artifact.objects.exists()
    assert files_under(media_root) == []
    assert AuditEvent.objects.count() == events_before  # the upload's event went with the rolled-back row

    status, _, body = post_upload(live_server.url, agent_key, content)

    assert status == 201, body
    artifact = Artifact.objects.get()
    assert body["sha256"] == artifact.sha256 and body["duplicate"] is False
    assert files_under(media_root) == [str(Path(artifact.file.name))]
    assert Path(artifact.file.path).read_bytes() == content
    verification = audit_verify()
    assert verification.ok, verification.problem
