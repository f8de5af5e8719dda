"""The agent client (artifacts/client.py) against the real app, served by pytest-django's live_server over HTTP.

The client is what an agent runs: stdlib HTTP, no Django. These tests call its Client class and its command line
(`main(argv)` in process, and once as `python -m artifacts.client` in a subprocess), and check what the server stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from artifacts.client import CHUNK_SIZE, Client, _multipart_file, main
from artifacts.models import Artifact
from incidents import services as incident_services
from incidents.models import Agent, Command, Heartbeat, Incident
from replays.engine import spec_hash, validate_bundle
from replays.engine.samples import sample_bundle, sample_spec
from tests.artifacts.conftest import AGENT_NAME, snapshot_bytes
from traceflux.audit import SYSTEM

ROOT = Path(__file__).resolve().parents[2]
live = pytest.mark.django_db(transaction=True)
WINDOW = ("2026-02-26T14:00:00Z", "2026-02-26T14:04:00Z")


@pytest.fixture
def key(agent) -> str:
    """A key of the staging agent edge-agent-01 with every scope."""
    _, plaintext = incident_services.agent_key_create(agent=agent, actor=SYSTEM)
    return plaintext


@pytest.fixture
def client_for(live_server, key):
    def make(**options: Any) -> Client:
        return Client(live_server.url, key, **options)

    return make


@pytest.fixture
def signals_file(tmp_path) -> Path:
    """60 sample signal lines inside WINDOW, as an agent would have captured them."""
    _, lines, _ = sample_bundle(seed=3, signals=60)
    path = tmp_path / "signals.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def bundle_argv(signals: Path, out: Path, *extra: str) -> list[str]:
    return [
        "make-bundle", "--signals", str(signals), "--out", str(out), "--ref", "INC-2026-0226-001",
        "--title", "edge-gw 5xx burst at POP-12", "--severity", "sev2", "--environment", "staging",
        "--agent", AGENT_NAME, "--window-start", WINDOW[0], "--window-end", WINDOW[1], "--service", "edge-gw",
        "--region", "us-east-1", "--pop", "POP-12", "--captured-at", "2026-02-26T14:04:30Z", *extra,
    ]


def make_bundle(signals: Path, out: Path, capsys) -> dict[str, Any]:
    spec_file = out.parent / "spec.json"
    spec_file.write_text(json.dumps(sample_spec()), encoding="utf-8")
    assert main(bundle_argv(signals, out, "--spec", str(spec_file))) == 0
    return json.loads(capsys.readouterr().out)


def run(argv: list[str], capsys, **kwargs: Any) -> tuple[int, str, str]:
    code = main(argv, **kwargs)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the Client against the live server ------------------------------------------------------------------------------


@live
def test_it_uploads_a_bundle_made_by_make_bundle_and_answers_200_for_the_same_bytes(client_for, signals_file,
                                                                                    tmp_path, capsys, media_root):
    out = tmp_path / "INC-2026-0226-001.tar.gz"
    made = make_bundle(signals_file, out, capsys)
    assert made["signal_count"] == 60 and made["incident"]["ref"] == "INC-2026-0226-001"
    assert made["spec_hash"] == spec_hash(sample_spec())
    client = client_for()

    status, body = client.upload(out, kind="incident_bundle")

    assert status == 201, body
    assert body["duplicate"] is False
    assert body["sha256"] == made["sha256"] and body["size"] == out.stat().st_size
    assert body["incident"] == "INC-2026-0226-001"
    artifact = Artifact.objects.get()
    assert artifact.incident == Incident.objects.get(ref="INC-2026-0226-001")
    assert (media_root / artifact.file.name).read_bytes() == out.read_bytes()

    status, again = client.upload(out, kind="incident_bundle")

    assert status == 200, again
    assert again["duplicate"] is True and again["id"] == body["id"]
    assert Artifact.objects.get().duplicate_count == 1
    assert [a.status for a in client.attempts] == [200]


@live
def test_it_uploads_a_snapshot(client_for, tmp_path):
    path = tmp_path / "snapshot.json"
    path.write_bytes(snapshot_bytes())

    status, body = client_for().upload(path, kind="snapshot")

    assert status == 201, body
    assert body["kind"] == "snapshot" and body["incident"] is None


@live
def test_it_sends_a_heartbeat_with_only_the_fields_given(client_for, agent):
    status, body = client_for().heartbeat(status="degraded", version="1.6.1", details={"queue_depth": 1200})

    assert status == 201, body
    assert (body["agent"], body["status"], body["version"]) == (AGENT_NAME, "degraded", "1.6.1")
    beat = Heartbeat.objects.get()
    assert beat.details == {"queue_depth": 1200} and beat.deployment is None
    agent.refresh_from_db()
    assert agent.version == "1.6.1"


@live
def test_it_leases_the_agents_commands_and_acknowledges_one(client_for, agent):
    command = incident_services.command_create(agent=agent, kind="reload_pipeline", payload={"version": "v2.14.3"},
                                               idempotency_key="reload-1", actor=SYSTEM)
    client = client_for()

    status, body = client.commands()

    assert status == 200, body
    assert [(c["id"], c["kind"], c["status"]) for c in body["commands"]] == [(command.pk, "reload_pipeline",
                                                                              "delivered")]
    assert client.commands() == (200, {"commands": [], "lease_seconds": body["lease_seconds"]})

    status, acked = client.ack(command.pk, status="succeeded", output={"reloaded": "v2.14.3"})

    assert status == 200, acked
    assert (acked["status"], acked["output"]) == ("succeeded", {"reloaded": "v2.14.3"})
    assert Command.objects.get().status == "succeeded"
    assert client.ack(command.pk, status="failed")[0] == 409


@live
def test_it_enrolls_with_a_token_and_the_new_key_works(live_server, staging):
    _, token = incident_services.enrollment_token_create(environment=staging, actor=SYSTEM,
                                                         expires_at=timezone.now() + timedelta(hours=1))
    status, body = Client(live_server.url, None).enroll(token=token, name="edge-new-1", hostname="edge-new-1.test",
                                                        services=["edge-gw"])

    assert status == 201, body
    assert Agent.objects.get(name="edge-new-1").environment == staging
    assert Client(live_server.url, body["key"]).heartbeat(status="ok")[0] == 201


@live
def test_it_waits_the_servers_retry_after_and_gives_up_after_max_retries(client_for, settings):
    settings.TRACEFLUX_RATE_LIMITS = {**settings.TRACEFLUX_RATE_LIMITS, "heartbeats": "1/h"}
    waits: list[float] = []
    client = client_for(max_retries=3, sleep=waits.append)
    assert client.heartbeat(status="ok")[0] == 201

    status, body = client.heartbeat(status="ok")

    assert status == 429, body
    assert len(waits) == 3  # at most max_retries retries, so four requests in all
    assert [a.status for a in client.attempts] == [429, 429, 429, 429]
    # Each wait is the Retry-After of the 429 before it; the last 429 (not waited on) says the same in its body.
    assert waits == [a.retry_after for a in client.attempts[:-1]]
    assert client.attempts[-1].retry_after == body["retry_after"]
    assert all(0 < wait <= 3600 for wait in waits)
    assert max(waits) - min(waits) <= 1 and abs(waits[-1] - body["retry_after"]) <= 1
    assert Heartbeat.objects.count() == 1


# --- retries, exactly: a stub server that rate limits twice and then accepts ----------------------------------------


class _Stub(BaseHTTPRequestHandler):
    answers: list[tuple[int, dict[str, str], dict[str, Any]]] = []
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                "body": self.rfile.read(length)})
        status, headers, body = type(self).answers.pop(0)
        raw = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {**headers, "Content-Type": "application/json", "Content-Length": str(len(raw))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    _Stub.answers, _Stub.seen = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Stub
    server.shutdown()
    server.server_close()


def test_it_retries_after_exactly_the_retry_after_and_then_succeeds(stub):
    url, handler = stub
    handler.answers = [
        (429, {"Retry-After": "7"}, {"detail": "rate limit", "retry_after": 7}),
        (429, {"Retry-After": "2"}, {"detail": "rate limit", "retry_after": 2}),
        (201, {}, {"id": 1, "status": "ok"}),
    ]
    waits: list[float] = []

    status, body = Client(url, "tfk_0123456789ab_secret", sleep=waits.append).heartbeat(status="ok")

    assert (status, body) == (201, {"id": 1, "status": "ok"})
    assert waits == [7.0, 2.0]
    assert [json.loads(seen["body"]) for seen in handler.seen] == [{"status": "ok"}] * 3
    assert {seen["path"] for seen in handler.seen} == {"/api/v1/agent/heartbeats/"}
    assert {seen["auth"] for seen in handler.seen} == {"Bearer tfk_0123456789ab_secret"}


def test_it_falls_back_to_the_bodys_retry_after_and_never_retries_with_zero_max_retries(stub):
    url, handler = stub
    handler.answers = [(429, {}, {"detail": "rate limit", "retry_after": 5})] * 2
    waits: list[float] = []
    client = Client(url, "k", max_retries=1, sleep=waits.append)

    assert client.heartbeat(status="ok")[0] == 429
    assert waits == [5.0]
    handler.answers = [(429, {"Retry-After": "9"}, {"detail": "rate limit"})]
    assert Client(url, "k", max_retries=0, sleep=waits.append).heartbeat(status="ok")[0] == 429
    assert waits == [5.0]


def test_it_exits_1_when_the_portal_cannot_be_reached_and_2_for_a_bad_url_or_key(capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the client connects: nothing listens there
    key = "tfk_0123456789ab_s3cret"

    code, out, err = run(["--url", f"http://127.0.0.1:{port}", "--key", key, "commands"], capsys)
    assert code == 1 and out == ""
    assert f"error: no answer from http://127.0.0.1:{port}: ConnectionRefusedError" in err
    assert key not in err

    code, _, err = run(["--url", "ftp://example.test", "--key", key, "commands"], capsys)
    assert code == 2 and "is not an http:// or https:// URL" in err
    code, _, err = run(["--key", "tfk_0123456789ab_s3cr\u00e9t", "commands"], capsys)
    assert code == 2 and "printable ASCII" in err and "s3cr" not in err


def test_it_streams_an_upload_in_chunks_with_the_exact_content_length(tmp_path):
    path = tmp_path / "big.tar.gz"
    path.write_bytes(os.urandom(3 * CHUNK_SIZE + 17))

    body = _multipart_file(path, fields={"kind": "incident_bundle"})
    chunks = list(body.chunks())

    assert sum(len(chunk) for chunk in chunks) == body.length
    file_chunks = chunks[1:-1]
    assert len(file_chunks) == 4 and max(len(chunk) for chunk in file_chunks) == CHUNK_SIZE
    assert b'name="kind"\r\n\r\nincident_bundle\r\n' in chunks[0]
    assert b'name="file"; filename="big.tar.gz"' in chunks[0]
    assert body.content_type.startswith("multipart/form-data; boundary=traceflux-")


# --- the command line ----------------------------------------------------------------------------------------------


@live
def test_it_exits_0_on_success_1_on_an_http_error_and_2_on_a_usage_error(live_server, key, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.delenv("TRACEFLUX_AGENT_KEY", raising=False)
    url = ["--url", live_server.url]
    outputs: list[str] = []

    code, out, err = run([*url, "--key", key, "heartbeat", "--status", "ok", "--details", '{"cpu": 0.4}'], capsys)
    outputs += [out, err]
    assert code == 0, err
    assert json.loads(out)["status"] == "ok"

    code, out, err = run(["heartbeat", "--status", "ok", *url, "--key", key[:-2] + "xx"], capsys)
    outputs += [out, err]
    assert code == 1 and out == ""
    assert "error: HTTP 401: unknown agent key" in err
    assert json.loads(err.splitlines()[-1]) == {"detail": "unknown agent key"}

    code, out, err = run([*url, "--key", key, "ack", "999999", "--status", "succeeded"], capsys)
    outputs += [out, err]
    assert code == 1 and "error: HTTP 404:" in err

    code, out, err = run([*url, "heartbeat", "--status", "ok"], capsys)
    assert code == 2 and "no agent key" in err

    code, out, err = run([*url, "--key", key, "upload", str(tmp_path / "missing.tar.gz"), "--kind", "snapshot"],
                         capsys)
    outputs += [out, err]
    assert code == 2 and "no such file" in err

    with pytest.raises(SystemExit) as exited:
        main([*url, "--key", key, "heartbeat", "--status", "ok", "--details", "[1, 2]"])
    outputs.append(capsys.readouterr().err)
    assert exited.value.code == 2

    assert all(key not in text for text in outputs)
    assert Heartbeat.objects.count() == 1


@live
def test_it_exits_1_saying_so_when_still_rate_limited(live_server, key, settings, capsys):
    settings.TRACEFLUX_RATE_LIMITS = {**settings.TRACEFLUX_RATE_LIMITS, "commands": "1/h"}
    argv = ["--url", live_server.url, "--key", key, "--max-retries", "2", "commands"]
    waits: list[float] = []
    assert run(argv, capsys, sleep=waits.append)[0] == 0

    code, out, err = run(argv, capsys, sleep=waits.append)

    assert code == 1 and out == ""
    assert "error: HTTP 429: still rate limited after 2 retries: rate limit for commands exceeded (1/h)" in err
    assert len(waits) == 2
    assert key not in err


@live
def test_it_uploads_from_the_command_line_and_reports_a_413_as_an_http_error(live_server, key, signals_file,
                                                                             tmp_path, capsys, settings):
    out_path = tmp_path / "b.zip"
    assert main([*bundle_argv(signals_file, out_path, "--spec-hash", spec_hash(sample_spec()), "--format", "zip")]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["kind"] == "zip"
    upload = ["--url", live_server.url, "--key", key, "upload", str(out_path), "--kind", "incident_bundle"]

    code, out, err = run(upload, capsys)
    assert code == 0, err
    assert json.loads(out)["sha256"] == made["sha256"]

    settings.TRACEFLUX_MAX_UPLOAD_BYTES = 1024
    big = tmp_path / "big.tar.gz"
    big.write_bytes(os.urandom(512 * 1024))
    code, out, err = run([*upload[:4], "upload", str(big), "--kind", "incident_bundle"], capsys)

    assert code == 1 and out == ""
    assert "error: HTTP 413: Content-Length" in err
    assert Artifact.objects.count() == 1
    assert key not in out + err


@live
def test_it_enrolls_from_the_command_line_printing_only_the_new_key(live_server, staging, capsys):
    _, token = incident_services.enrollment_token_create(environment=staging, actor=SYSTEM,
                                                         expires_at=timezone.now() + timedelta(hours=1))
    code, out, err = run(["--url", live_server.url, "enroll", "--token", token, "--name", "edge-cli-1",
                          "--hostname", "edge-cli-1.test", "--services", "edge-gw,auth"], capsys)

    assert code == 0, err
    new_key = out.strip()
    assert out == new_key + "\n" and new_key.startswith("tfk_")
    assert "enrolled agent edge-cli-1 in staging" in err and token not in out + err
    assert sorted(Agent.objects.get(name="edge-cli-1").services) == ["auth", "edge-gw"]

    code, out, err = run(["--url", live_server.url, "enroll", "--token", token, "--name", "edge-cli-2",
                          "--hostname", "edge-cli-2.test"], capsys)
    assert code == 1 and "this enrollment token has been used up" in err and token not in out + err


@live
def test_it_runs_as_python_m_artifacts_client_without_django_and_never_prints_the_key(live_server, key):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env |= {"TRACEFLUX_URL": live_server.url, "TRACEFLUX_AGENT_KEY": key}
    ran = subprocess.run([sys.executable, "-m", "artifacts.client", "heartbeat", "--status", "failing"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)

    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "failing"
    assert key not in ran.stdout + ran.stderr
    assert Heartbeat.objects.get().status == "failing"

    env["TRACEFLUX_AGENT_KEY"] = key + "x"
    refused = subprocess.run([sys.executable, "-m", "artifacts", "commands"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "unknown agent key" in refused.stderr
    assert key not in refused.stdout + refused.stderr


def test_it_imports_no_django():
    probe = "import sys, artifacts.client; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    ran = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"


# --- make-bundle ---------------------------------------------------------------------------------------------------


def test_it_makes_a_valid_bundle_with_the_manifest_it_was_told(signals_file, tmp_path, capsys):
    out = tmp_path / "b.tar.gz"
    digest = "sha256:" + "ab" * 32

    code, printed, err = run(bundle_argv(signals_file, out, "--spec-hash", digest), capsys)

    assert code == 0, err
    info = validate_bundle(out)
    assert json.loads(printed)["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert info.manifest == {
        "format": "traceflux.incident-bundle/v1",
        "incident": {"ref": "INC-2026-0226-001", "title": "edge-gw 5xx burst at POP-12", "severity": "sev2"},
        "environment": "staging",
        "agent": AGENT_NAME,
        "captured_at": "2026-02-26T14:04:30Z",
        "window": {"start": WINDOW[0], "end": WINDOW[1]},
        "scope": {"service": "edge-gw", "region": "us-east-1", "pop": "POP-12"},
        "spec_hash": digest,
    }
    assert info.signal_count == 60 and not info.has_spec and not info.has_baseline
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_it_refuses_signals_outside_the_window_naming_the_lines_of_the_input_file(signals_file, tmp_path, capsys):
    lines = signals_file.read_text().splitlines()
    late = json.loads(lines[3]) | {"ts": "2026-02-26T14:09:00Z"}
    signals_file.write_text("\n".join([*lines[:3], "", json.dumps(late), *lines[4:]]) + "\n")
    out = tmp_path / "b.tar.gz"

    code, printed, err = run(bundle_argv(signals_file, out, "--spec-hash", "sha256:" + "0" * 64), capsys)

    assert code == 2 and printed == ""
    assert "signals.jsonl: 1 line has a timestamp outside the window (line 5: ts 2026-02-26T14:09:00Z" in err
    assert json.loads(err.splitlines()[-1])["lines"] == [5]
    assert not out.exists()
    assert list(tmp_path.glob("*.part")) == list(tmp_path.glob(".*.part")) == []


def test_it_refuses_a_spec_that_does_not_hash_to_the_spec_hash_and_keeps_the_old_bundle(signals_file, tmp_path,
                                                                                       capsys):
    out = tmp_path / "b.tar.gz"
    out.write_bytes(b"the previous, good bundle")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(sample_spec()))

    code, _, err = run(bundle_argv(signals_file, out, "--spec", str(spec_file), "--spec-hash", "sha256:" + "1" * 64),
                       capsys)

    assert code == 2
    assert "manifest.json: $.spec_hash: is sha256:1111" in err and '"field": "manifest.spec_hash"' in err
    assert out.read_bytes() == b"the previous, good bundle"


def test_it_refuses_a_bad_manifest_before_reading_any_signal(signals_file, tmp_path, capsys):
    code, _, err = run(bundle_argv(signals_file, tmp_path / "b.tar.gz", "--spec-hash", "md5:abc"), capsys)
    assert code == 2 and '"field": "manifest.spec_hash"' in err

    argv = bundle_argv(signals_file, tmp_path / "b.tar.gz", "--spec-hash", "sha256:" + "0" * 64)
    argv[argv.index("--window-end") + 1] = "2026-02-26T13:59:00Z"
    code, _, err = run(argv, capsys)
    assert code == 2 and "$.window.end: must be after window.start" in err

    with pytest.raises(SystemExit) as exited:
        main(bundle_argv(signals_file, tmp_path / "b.tar.gz", "--captured-at", "yesterday"))
    assert exited.value.code == 2
    code, _, err = run(bundle_argv(signals_file, tmp_path / "b.tar.gz"), capsys)
    assert code == 2 and "--spec-hash is required unless --spec" in err
