"""A real Alertmanager for the parity tests: started on loopback on a free port, spoken to over its v2 API, killed.

`running_alertmanager(config_text, directory)` is a context manager; the process always dies with it. Clustering is
off (`--cluster.listen-address=` empty), so parallel tests never meet on the gossip port.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.net import free_port

READY_TIMEOUT = 15.0
SETTLE_TIMEOUT = 5.0
SETTLED_READS = 3  # identical reads, 50 ms apart, before Alertmanager counts as settled


def alertmanager_binary() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if not found:
        raise RuntimeError("prometheus-alertmanager is not on PATH")
    return found


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Alertmanager:
    """One running Alertmanager process and a small client for the parts of its v2 API the parity tests use."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def request(self, method: str, path: str, body: Any = None, **query: str) -> Any:
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path} -> {exc.code}: {exc.read().decode(errors='replace')}") from exc
        return json.loads(payload) if payload.strip() else None

    def post_alerts(self, label_sets: list[dict[str, str]], *, now: datetime) -> None:
        alerts = [
            {"labels": labels, "startsAt": rfc3339(now), "endsAt": rfc3339(now + timedelta(hours=1))}
            for labels in label_sets
        ]
        self.request("POST", "/api/v2/alerts", alerts)

    def post_silence(self, silence: dict[str, Any]) -> str:
        return self.request("POST", "/api/v2/silences", silence)["silenceID"]

    def groups(self, **query: str) -> list[dict[str, Any]]:
        return self.request("GET", "/api/v2/alerts/groups", **query)

    def alerts(self, **query: str) -> list[dict[str, Any]]:
        return self.request("GET", "/api/v2/alerts", **query)

    def settled_view(self, expected_alerts: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(groups, alerts) once Alertmanager has taken in `expected_alerts` distinct alerts and stopped changing.

        The dispatcher and the inhibitor each take alerts in asynchronously after the POST returns (inhibition itself
        is computed on read, from the inhibitor's cache). Every alert lands in at least one group (the root route takes
        them all), so the wait is over when the groups hold all of them and three reads over 100 ms agree.
        """
        everything = {"silenced": "true", "inhibited": "true", "active": "true"}
        deadline = time.monotonic() + SETTLE_TIMEOUT
        previous, same = None, 0
        while time.monotonic() < deadline:
            groups = self.groups(**everything)
            alerts = self.alerts(**everything)
            grouped = {alert["fingerprint"] for group in groups for alert in group["alerts"]}
            view = (_stable(groups), _stable(alerts))
            complete = len(grouped) == expected_alerts and len(alerts) == expected_alerts
            same = same + 1 if complete and view == previous else 0
            if same >= SETTLED_READS - 1:
                return groups, alerts
            previous = view
            time.sleep(0.05)
        raise AssertionError(f"Alertmanager did not settle on {expected_alerts} alerts; log:\n{self.log()}")


def _stable(items: list[dict[str, Any]]) -> str:
    """The JSON of an API answer without what moves between reads of a settled Alertmanager: the timestamps, and which
    source `inhibitedBy` names (the inhibitor returns the first source it meets in a Go map: any of them, each time).
    """

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: bool(v) if k == "inhibitedBy" else strip(v)
                for k, v in value.items()
                if k not in ("updatedAt", "startsAt", "endsAt")
            }
        if isinstance(value, list):
            return sorted((strip(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
        return value

    return json.dumps(strip(items), sort_keys=True)


@contextlib.contextmanager
def running_alertmanager(config_text: str, directory: Path) -> Iterator[Alertmanager]:
    """Start Alertmanager with `config_text`, yield it once /-/ready answers, and always kill it afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "alertmanager.yml"
    config_path.write_text(config_text, encoding="utf-8")
    log_path = directory / "alertmanager.log"
    for _attempt in range(3):  # a free port can be taken between probing and binding: try another
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    alertmanager_binary(),
                    f"--config.file={config_path}",
                    f"--storage.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        manager = Alertmanager(process, port, log_path)
        try:
            if _wait_ready(manager):
                yield manager
                return
        finally:
            _stop(process)
        if "address already in use" not in manager.log():
            break
    raise RuntimeError(f"Alertmanager did not become ready; log:\n{log_path.read_text(errors='replace')}")


def _wait_ready(manager: Alertmanager) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if manager.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(manager.base + "/-/ready", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
