"""The agent's side of the agent API: a small HTTP client and its command line.

    python -m artifacts.client [--url URL] [--key KEY] [--max-retries N] COMMAND ...

    upload FILE --kind incident_bundle|snapshot          POST /api/v1/agent/artifacts/ (multipart, streamed)
    heartbeat --status ok|degraded|failing [--version V] [--deployment ID] [--details JSON]
    commands                                             lease this agent's commands; print them as JSON
    ack ID --status succeeded|failed [--output JSON]     record a command's outcome
    signing-keys                                         print the portal's published signing keys
    work --environment ENV --agent NAME                  lease the commands, verify each signed credential, and
                                                         acknowledge each: succeeded when verified, failed when not
    enroll --token T --name N --hostname H [...]         trade an enrollment token for a key; print the key
    make-bundle --signals FILE.jsonl --out FILE ...      write an incident bundle and validate it (no server)

`--url` defaults to $TRACEFLUX_URL, else http://127.0.0.1:8000; `--key` to $TRACEFLUX_AGENT_KEY (prefer the variable:
a command line is visible to every user of the machine). The key is never printed.

Exit codes: 0 the server answered 2xx (or the bundle was written and is valid; for `work`, every command was
acknowledged, refused ones included); 1 the server answered an error (its JSON goes to stderr), was still rate limiting
after the retries, or could not be reached; 2 a usage or format error.

`work` checks each command's signed approval credential (replays.engine.credentials) against the portal's published
keys and against the agent's own configuration, `--environment` ($TRACEFLUX_AGENT_ENVIRONMENT) and `--agent`
($TRACEFLUX_AGENT_NAME): never against what the server says the agent is. This demo agent carries out a verified
command by acknowledging it; a real one would act on the verified document, never on the unsigned payload.

This module runs on agents, next to the infrastructure, without the portal's settings: it imports only the standard
library and replays.engine (a pure library; `cryptography` verifies the credentials), never Django. HTTP is
http.client; an upload streams the file from disk in chunks with a computed Content-Length, so a 64 MiB bundle is never
held in memory. A 429 is retried after the server's Retry-After, at most `max_retries` times.
"""

from __future__ import annotations

import argparse
import email.utils
import http.client
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from replays.engine import (
    BUNDLE_FORMAT,
    CanonicalJSONError,
    FormatError,
    iter_signals,
    parse_timestamp,
    spec_hash,
    validate_bundle,
    write_bundle,
)
from replays.engine.bundles import check_baseline, check_manifest, check_spec
from replays.engine.credentials import CredentialRefused, PublicKeyLike, public_keys_from_documents, verify_credential
from replays.engine.formats import format_timestamp

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "TRACEFLUX_URL"
KEY_ENV = "TRACEFLUX_AGENT_KEY"
ENVIRONMENT_ENV = "TRACEFLUX_AGENT_ENVIRONMENT"
AGENT_NAME_ENV = "TRACEFLUX_AGENT_NAME"
REQUIRE_CREDENTIAL_ENV = "TRACEFLUX_AGENT_REQUIRE_CREDENTIAL"
# Replay actions (replays.services.REPLAY_COMMAND) are only ever sent with a credential: one without is refused.
DEFAULT_REQUIRE_CREDENTIAL = ("replay_action",)
API_ROOT = "/api/v1/agent/"
KINDS = ("incident_bundle", "snapshot")
HEARTBEAT_STATUSES = ("ok", "degraded", "failing")
ACK_STATUSES = ("succeeded", "failed")
SEVERITIES = ("sev1", "sev2", "sev3", "sev4")
BUNDLE_FORMATS = ("tar.gz", "zip")
CHUNK_SIZE = 64 * 1024
DEFAULT_MAX_RETRIES = 5
DEFAULT_TIMEOUT = 60.0
# When a 429 names no wait at all (it always should), wait this long rather than hammering the server.
FALLBACK_RETRY_AFTER = 1.0
USER_AGENT = "traceflux-agent-client/1"

Sleep = Callable[[float], Any]


class ClientError(Exception):
    """The server could not be reached, or the connection broke before it answered."""


@dataclass(frozen=True)
class Attempt:
    """One request sent for a call: the status it got and, for a 429, the seconds the server asked to wait."""

    status: int
    retry_after: float | None = None


@dataclass(frozen=True)
class _Body:
    """A request body: its Content-Type, exact length, and a factory of its chunks (called once per attempt)."""

    content_type: str
    length: int
    chunks: Callable[[], Iterator[bytes]]


def _json_body(data: Mapping[str, Any]) -> _Body:
    encoded = json.dumps(data, allow_nan=False, separators=(",", ":")).encode()
    return _Body("application/json", len(encoded), lambda: iter((encoded,)))


def _quoted(text: str) -> str:
    """A file name safe inside a multipart header's quotes."""
    return "".join("_" if ch in '"\\\r\n' else ch for ch in text) or "upload"


def _multipart_file(path: Path, *, fields: Mapping[str, str], file_field: str = "file") -> _Body:
    """multipart/form-data with `fields` and then the file, streamed from disk; the length is computed up front."""
    boundary = f"traceflux-{uuid.uuid4().hex}"
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{_quoted(path.name)}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size

    def chunks() -> Iterator[bytes]:
        yield head
        left = size
        with path.open("rb") as handle:
            while left > 0:
                chunk = handle.read(min(CHUNK_SIZE, left))
                if not chunk:
                    raise ClientError(f"{path} shrank while it was being uploaded")
                left -= len(chunk)
                yield chunk
        yield tail

    return _Body(f"multipart/form-data; boundary={boundary}", len(head) + size + len(tail), chunks)


def _decode(raw: bytes, status: int) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        text = raw[:300].decode("utf-8", "replace")
        return {"detail": f"the server answered HTTP {status} with a body that is not JSON: {text}"}


def _retry_after(headers: Mapping[str, str], body: Any) -> float:
    """Seconds to wait before retrying a 429: Retry-After (seconds or an HTTP date), else the body's retry_after."""
    value = headers.get("retry-after", "").strip()
    if value:
        try:
            seconds = float(value)
            if math.isfinite(seconds):
                return max(0.0, seconds)
        except ValueError:
            try:
                moment = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                moment = None
            if moment is not None:
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                return max(0.0, (moment - datetime.now(UTC)).total_seconds())
    if isinstance(body, dict) and isinstance(body.get("retry_after"), int | float):
        return max(0.0, float(body["retry_after"]))
    return FALLBACK_RETRY_AFTER


class Client:
    """The agent API, one method per endpoint; each returns (HTTP status, decoded JSON body).

    A 429 is retried after the server's Retry-After, at most `max_retries` times; after that the 429 is returned.
    `attempts` lists the requests the latest call sent. Raises ClientError when the server cannot be reached.
    """

    def __init__(
        self,
        base_url: str,
        key: str | None,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        sleep: Sleep = time.sleep,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the URL {base_url!r} is not an http:// or https:// URL")
        if max_retries < 0:
            raise ValueError("max_retries cannot be negative")
        if key is not None and not (key.isascii() and key.isprintable() and " " not in key):
            raise ValueError("an agent key is printable ASCII without spaces (tfk_<prefix>_<secret>)")
        self.base_url = base_url.rstrip("/")
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._key = key
        self.max_retries = max_retries
        self.timeout = timeout
        self._sleep = sleep
        self.attempts: list[Attempt] = []

    def __repr__(self) -> str:  # never the key
        return f"Client({self.base_url!r}, key={'set' if self._key else 'none'}, max_retries={self.max_retries})"

    # --- the endpoints ---------------------------------------------------------------------------------------------

    def upload(self, path: str | os.PathLike[str], *, kind: str) -> tuple[int, Any]:
        """POST artifacts/: the file and its declared kind (incident_bundle or snapshot)."""
        file_path = Path(path)
        return self._request("POST", "artifacts/", body=lambda: _multipart_file(file_path, fields={"kind": kind}))

    def heartbeat(
        self,
        *,
        status: str,
        version: str | None = None,
        deployment: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """POST heartbeats/. Only the fields given are sent: an absent version leaves the recorded one as it is."""
        data: dict[str, Any] = {"status": status}
        if version is not None:
            data["version"] = version
        if deployment is not None:
            data["deployment"] = deployment
        if details is not None:
            data["details"] = dict(details)
        return self._request("POST", "heartbeats/", body=lambda: _json_body(data))

    def commands(self) -> tuple[int, Any]:
        """GET commands/: lease this agent's waiting commands (the GET is the delivery; it is not idempotent)."""
        return self._request("GET", "commands/")

    def signing_keys(self) -> tuple[int, Any]:
        """GET signing-keys/: the portal's Ed25519 public keys, {"keys": [{"key_id", "public_key", "active", …}]}."""
        return self._request("GET", "signing-keys/")

    def ack(self, command_id: int, *, status: str, output: Any = None) -> tuple[int, Any]:
        """POST commands/{id}/ack/ with succeeded or failed and any JSON output."""
        data: dict[str, Any] = {"status": status}
        if output is not None:
            data["output"] = output
        return self._request("POST", f"commands/{int(command_id)}/ack/", body=lambda: _json_body(data))

    def enroll(
        self,
        *,
        token: str,
        name: str,
        hostname: str,
        version: str | None = None,
        region: str | None = None,
        pop: str | None = None,
        services: list[str] | None = None,
    ) -> tuple[int, Any]:
        """POST enroll/ with the enrollment token (no agent key): the answer holds the new agent and its key."""
        data: dict[str, Any] = {"token": token, "name": name, "hostname": hostname}
        optional = {"version": version, "region": region, "pop": pop, "services": services}
        data |= {field: value for field, value in optional.items() if value is not None}
        return self._request("POST", "enroll/", body=lambda: _json_body(data), authenticate=False)

    # --- HTTP ------------------------------------------------------------------------------------------------------

    def _request(
        self, method: str, endpoint: str, *, body: Callable[[], _Body] | None = None, authenticate: bool = True
    ) -> tuple[int, Any]:
        self.attempts = []
        while True:
            status, headers, decoded = self._send(method, endpoint, body() if body else None, authenticate)
            if status != 429:
                self.attempts.append(Attempt(status))
                return status, decoded
            wait = _retry_after(headers, decoded)
            self.attempts.append(Attempt(status, wait))
            if len(self.attempts) > self.max_retries:
                return status, decoded
            self._sleep(wait)

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._netloc, timeout=self.timeout)
        return http.client.HTTPConnection(self._netloc, timeout=self.timeout)

    def _send(
        self, method: str, endpoint: str, body: _Body | None, authenticate: bool
    ) -> tuple[int, dict[str, str], Any]:
        connection = self._connection()
        try:
            connection.putrequest(method, self._prefix + API_ROOT + endpoint)
            connection.putheader("Accept", "application/json")
            connection.putheader("User-Agent", USER_AGENT)
            if authenticate and self._key:
                connection.putheader("Authorization", f"Bearer {self._key}")
            if body is not None:
                connection.putheader("Content-Type", body.content_type)
                connection.putheader("Content-Length", str(body.length))
            connection.endheaders()
            if body is not None:
                try:
                    for chunk in body.chunks():
                        connection.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server answered without reading everything (a 413, say): read its answer below
            response = connection.getresponse()
            raw = response.read()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return response.status, headers, _decode(raw, response.status)
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(f"no answer from {self.base_url}: {exc.__class__.__name__}: {exc}") from None
        finally:
            connection.close()


# --- verifying commands --------------------------------------------------------------------------------------------


def verify_command(
    command: Mapping[str, Any],
    *,
    keys: Mapping[str, PublicKeyLike],
    environment: str,
    agent: str,
    now: datetime,
    require_credential_kinds: Collection[str] = (),
) -> dict[str, Any] | None:
    """The verified credential document of a leased command, or None when its payload carries no credential.

    A command without a credential is not a replay action (deploy and rollback commands have none), unless its kind
    is in `require_credential_kinds`: then it is refused, because anyone who can write to the portal's database can
    queue a command, but only the portal's signing key can approve one. `environment` and `agent` are the agent's
    own configuration. Raises CredentialRefused with the reason.
    """
    payload = command.get("payload")
    credential = payload.get("credential") if isinstance(payload, Mapping) else None
    if credential is None:
        if command.get("kind") in require_credential_kinds:
            raise CredentialRefused(f"a {command.get('kind')} command must carry a signed credential")
        return None
    command_key = command.get("idempotency_key")
    if not isinstance(command_key, str) or not command_key:
        # Without the key the credential could not be tied to this command: refuse rather than skip the check.
        raise CredentialRefused("the command has no idempotency_key to match its credential's command_key")
    capability = payload.get("capability")  # type: ignore[union-attr]
    if capability is not None and not isinstance(capability, str):
        raise CredentialRefused("the command's capability is not a string")
    return verify_credential(
        credential,
        public_keys=keys,
        environment=environment,
        now=now,
        agent=agent,
        command_key=command_key,
        capability=capability,
    )


def carry_out(
    command: Mapping[str, Any],
    *,
    keys: Mapping[str, PublicKeyLike],
    environment: str,
    agent: str,
    now: datetime,
    require_credential_kinds: Collection[str] = (),
) -> tuple[str, Any, dict[str, Any]]:
    """(ack status, ack output, report line) for one leased command, as this demo agent handles it."""
    line: dict[str, Any] = {"id": command.get("id"), "kind": command.get("kind")}
    try:
        document = verify_command(command, keys=keys, environment=environment, agent=agent, now=now,
                                  require_credential_kinds=require_credential_kinds)
    except CredentialRefused as refused:
        return "failed", {"refused": refused.reason}, line | {"outcome": "refused", "reason": refused.reason}
    if document is None:
        return "succeeded", {"verified": False}, line | {"outcome": "succeeded", "verified": False}
    key = command["payload"]["credential"]["key_id"]
    output = {"verified": True, "key_id": key, "action": document["action"]}
    return "succeeded", output, line | {"outcome": "succeeded", "verified": True}


# --- the command line ----------------------------------------------------------------------------------------------


class UsageError(Exception):
    """A problem with the command line or its input files: exit 2."""


class _Output:
    """Writes to stdout/stderr, with every secret the command was given masked, whatever echoes it."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = [s for s in secrets if s]

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def out(self, text: str) -> None:
        self._write(sys.stdout, text)

    def err(self, text: str) -> None:
        self._write(sys.stderr, text)

    def _write(self, stream: TextIO, text: str) -> None:
        print(self._mask(text), file=stream)


def _timestamp(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _json_object_arg(text: str) -> dict[str, Any]:
    value = _json_arg(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}")
    return value


def _parser() -> argparse.ArgumentParser:
    # The connection options are accepted before or after the command; SUPPRESS keeps a subcommand's absent option
    # from overwriting the value given before it.
    def connection_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
        default = None if top else argparse.SUPPRESS
        parser.add_argument("--url", default=default, help=f"the portal (default ${URL_ENV}, else {DEFAULT_URL})")
        parser.add_argument("--key", default=default, help=f"the agent key (default ${KEY_ENV}; prefer the variable)")
        parser.add_argument(
            "--max-retries",
            type=int,
            default=DEFAULT_MAX_RETRIES if top else argparse.SUPPRESS,
            help=f"how often a rate-limited (429) request is retried after its Retry-After (default "
            f"{DEFAULT_MAX_RETRIES})",
        )

    parser = argparse.ArgumentParser(prog="python -m artifacts.client", description="TraceFlux agent client")
    connection_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *, connects: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if connects:
            connection_options(sub, top=False)
        return sub

    upload = command("upload", "upload an incident bundle or a snapshot")
    upload.add_argument("file")
    upload.add_argument("--kind", required=True, choices=KINDS)

    beat = command("heartbeat", "send a heartbeat")
    beat.add_argument("--status", required=True, choices=HEARTBEAT_STATUSES)
    beat.add_argument("--version", help="the agent's version (absent: the recorded one is kept)")
    beat.add_argument("--deployment", type=int, help="id of the deployment the agent runs")
    beat.add_argument("--details", type=_json_object_arg, help="a JSON object, e.g. '{\"queue_depth\": 12}'")

    command("commands", "lease this agent's waiting commands and print them as JSON")

    ack = command("ack", "acknowledge a command with its outcome")
    ack.add_argument("id", type=int)
    ack.add_argument("--status", required=True, choices=ACK_STATUSES)
    ack.add_argument("--output", type=_json_arg, help="any JSON value, kept with the command")

    command("signing-keys", "print the portal's published signing keys as JSON")

    work = command("work", "lease the commands, verify their signed credentials and acknowledge each; one JSON line "
                           "per command")
    work.add_argument("--environment", help=f"this agent's environment (default ${ENVIRONMENT_ENV}); never taken from "
                                            "the server")
    work.add_argument("--agent", help=f"this agent's name (default ${AGENT_NAME_ENV})")
    work.add_argument(
        "--require-credential", action="append", metavar="KIND",
        help=f"a command kind that must carry a signed credential (repeatable; default ${REQUIRE_CREDENTIAL_ENV}, "
        f"comma-separated, else {', '.join(DEFAULT_REQUIRE_CREDENTIAL)})",
    )

    enroll = command("enroll", "trade an enrollment token for an agent key; prints the key alone on stdout")
    enroll.add_argument("--token", required=True, help="the enrollment token, tfe_<prefix>_<secret>")
    enroll.add_argument("--name", required=True)
    enroll.add_argument("--hostname", required=True)
    enroll.add_argument("--agent-version", dest="agent_version")
    enroll.add_argument("--region")
    enroll.add_argument("--pop")
    enroll.add_argument("--services", help="comma-separated, e.g. edge-gw,auth")

    bundle = command("make-bundle", "write an incident bundle from a signals file and validate it", connects=False)
    bundle.add_argument("--signals", required=True, help="signals.jsonl: one signal object per line")
    bundle.add_argument("--out", required=True, help="the bundle to write (replaced only once it is valid)")
    bundle.add_argument("--ref", required=True, help="the incident's ref, e.g. INC-2026-0226-001")
    bundle.add_argument("--title", required=True)
    bundle.add_argument("--severity", required=True, choices=SEVERITIES)
    bundle.add_argument("--environment", required=True, help="the environment's slug, e.g. prod")
    bundle.add_argument("--agent", required=True, help="the capturing agent's name (the key's agent)")
    bundle.add_argument("--window-start", required=True, type=_timestamp, help="RFC 3339, e.g. 2026-02-26T14:00:00Z")
    bundle.add_argument("--window-end", required=True, type=_timestamp)
    bundle.add_argument("--service", required=True)
    bundle.add_argument("--region", required=True)
    bundle.add_argument("--pop", required=True)
    bundle.add_argument("--spec-hash", help="sha256:… of the policy spec in force (required unless --spec is given)")
    bundle.add_argument("--captured-at", type=_timestamp, help="RFC 3339 (default: now)")
    bundle.add_argument("--baseline", help="baseline.json to include")
    bundle.add_argument("--spec", help="the policy spec (JSON) to include as spec.json")
    bundle.add_argument("--format", dest="fmt", choices=BUNDLE_FORMATS, default="tar.gz")
    return parser


def _load_json(path: str, option: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{option} {path}: not valid JSON: {exc}") from None


def _make_bundle(args: argparse.Namespace, output: _Output) -> int:
    spec = _load_json(args.spec, "--spec") if args.spec else None
    baseline = _load_json(args.baseline, "--baseline") if args.baseline else None
    if args.spec_hash is None and spec is None:
        raise UsageError("--spec-hash is required unless --spec names the policy spec file")
    if args.spec_hash is None:
        try:
            args.spec_hash = spec_hash(spec)
        except CanonicalJSONError as exc:
            raise UsageError(f"--spec {args.spec}: {exc}") from None
    captured_at = args.captured_at or datetime.now(UTC).replace(microsecond=0)
    manifest = {
        "format": BUNDLE_FORMAT,
        "incident": {"ref": args.ref, "title": args.title, "severity": args.severity},
        "environment": args.environment,
        "agent": args.agent,
        "captured_at": format_timestamp(captured_at),
        "window": {"start": format_timestamp(args.window_start), "end": format_timestamp(args.window_end)},
        "scope": {"service": args.service, "region": args.region, "pop": args.pop},
        "spec_hash": args.spec_hash,
    }
    out = Path(args.out)
    signals_path = Path(args.signals)
    if not signals_path.is_file():
        raise UsageError(f"--signals {signals_path}: no such file")
    temp_path: Path | None = None
    try:
        # The engine's checks, in its order: the manifest, spec.json and baseline.json before any signal is read.
        check_manifest(manifest)
        if spec is not None:
            check_spec(spec, manifest=manifest)
        if baseline is not None:
            check_baseline(baseline)
        # Written next to the target and moved there only once valid: a failed run never leaves a bad bundle at --out.
        fd, temp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
        temp_path = Path(temp_name)
        with os.fdopen(fd, "wb") as handle, signals_path.open("rb") as signals:
            # The engine's own reader checks each line as it streams, with the line numbers of the input file.
            good = iter_signals(signals, window=(args.window_start, args.window_end), member=signals_path.name)
            digest = write_bundle(handle, manifest=manifest, signals=good, baseline=baseline, spec=spec, fmt=args.fmt)
        info = validate_bundle(temp_path)
        os.replace(temp_path, out)
    except FormatError as exc:
        output.err(f"error: the bundle is not valid: {exc.detail}")
        output.err(json.dumps({"error": exc.code, **exc.as_dict()}))
        return 2
    except (CanonicalJSONError, ValueError) as exc:
        output.err(f"error: the bundle cannot be written: {exc}")
        return 2
    except OSError as exc:
        output.err(f"error: {exc}")
        return 2
    finally:
        if temp_path is not None:
            temp_path.unlink(missing_ok=True)
    output.out(json.dumps({"path": str(out), "sha256": digest, "size": out.stat().st_size, **info.as_dict()},
                          indent=2))
    return 0


def _call(args: argparse.Namespace, client: Client) -> tuple[int, Any]:
    if args.command == "upload":
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        return client.upload(path, kind=args.kind)
    if args.command == "heartbeat":
        return client.heartbeat(status=args.status, version=args.version, deployment=args.deployment,
                                details=args.details)
    if args.command == "commands":
        return client.commands()
    if args.command == "ack":
        return client.ack(args.id, status=args.status, output=args.output)
    if args.command == "signing-keys":
        return client.signing_keys()
    if args.command == "enroll":
        services = [s.strip() for s in args.services.split(",") if s.strip()] if args.services is not None else None
        return client.enroll(token=args.token, name=args.name, hostname=args.hostname, version=args.agent_version,
                             region=args.region, pop=args.pop, services=services)
    raise UsageError(f"unknown command {args.command!r}")


def _report(args: argparse.Namespace, client: Client, status: int, body: Any, output: _Output) -> int:
    if 200 <= status < 300:
        if args.command == "enroll":
            agent = body.get("agent") or {}
            output.err(
                f"enrolled agent {agent.get('name')} in {agent.get('environment')} with the scopes "
                f"{', '.join(body.get('scopes') or [])}; the key below is shown once: store it now "
                f"(e.g. in ${KEY_ENV})"
            )
            output.out(str(body.get("key", "")))
        else:
            output.out(json.dumps(body, indent=2))
        return 0
    detail = body.get("detail") if isinstance(body, dict) else None
    if status == 429:
        retries = len(client.attempts) - 1
        output.err(f"error: HTTP 429: still rate limited after {retries} {'retry' if retries == 1 else 'retries'}: "
                   f"{detail or 'too many requests'}")
    else:
        output.err(f"error: HTTP {status}: {detail or 'the request was refused'}")
    output.err(json.dumps(body))
    return 1


def _work(args: argparse.Namespace, client: Client, output: _Output) -> int:
    environment = args.environment or os.environ.get(ENVIRONMENT_ENV)
    agent = args.agent or os.environ.get(AGENT_NAME_ENV)
    if not environment:
        raise UsageError(f"work needs this agent's environment: --environment or ${ENVIRONMENT_ENV}")
    if not agent:
        raise UsageError(f"work needs this agent's name: --agent or ${AGENT_NAME_ENV}")
    required = args.require_credential
    if required is None:
        from_env = os.environ.get(REQUIRE_CREDENTIAL_ENV)
        required = from_env.split(",") if from_env is not None else list(DEFAULT_REQUIRE_CREDENTIAL)
    required_kinds = {kind.strip() for kind in required if kind.strip()}

    status, body = client.signing_keys()
    if not 200 <= status < 300:
        return _report(args, client, status, body, output)
    try:
        keys = public_keys_from_documents(body.get("keys") if isinstance(body, dict) else None)
    except ValueError as exc:
        output.err(f"error: the portal's signing keys are malformed: {exc}")
        return 1
    status, body = client.commands()
    if not 200 <= status < 300:
        return _report(args, client, status, body, output)
    acked_all = True
    for command in body.get("commands") or []:
        ack_status, ack_output, line = carry_out(command, keys=keys, environment=environment, agent=agent,
                                                 now=datetime.now(UTC), require_credential_kinds=required_kinds)
        status, acked = client.ack(command["id"], status=ack_status, output=ack_output)
        if not 200 <= status < 300:
            acked_all = False
            detail = acked.get("detail") if isinstance(acked, dict) else None
            line["ack"] = {"status": status, "detail": detail}
        output.out(json.dumps(line))
    return 0 if acked_all else 1


def main(argv: list[str] | None = None, *, sleep: Sleep = time.sleep) -> int:
    args = _parser().parse_args(argv)
    key = args.key if args.key is not None else os.environ.get(KEY_ENV)
    output = _Output([key or "", getattr(args, "token", None) or ""])
    try:
        if args.command == "make-bundle":
            return _make_bundle(args, output)
        if args.command != "enroll" and not key:
            raise UsageError(f"no agent key: set ${KEY_ENV} (or pass --key)")
        if args.max_retries < 0:
            raise UsageError("--max-retries cannot be negative")
        url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
        try:
            client = Client(url, key, max_retries=args.max_retries, sleep=sleep)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        try:
            if args.command == "work":
                return _work(args, client, output)
            status, body = _call(args, client)
        except ClientError as exc:
            output.err(f"error: {exc}")
            return 1
        return _report(args, client, status, body, output)
    except UsageError as exc:
        output.err(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
