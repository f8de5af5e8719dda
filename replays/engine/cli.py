"""`python -m replays.engine --policy … --signals …`: replay a window of signals and write the report.

    python -m replays.engine --policy POLICY.json | --alertmanager-config alertmanager.yml [--silences silences.json]
        --signals signals.jsonl|bundle.tar.gz [--baseline baseline.json] [--compare-policy OTHER.json]
        [--scope service=edge-gw,pop=POP-12] [--window START/END] [--output report.json] [--evidence evidence.tar.gz]
        [--progress]

A bundle (tar.gz or zip, told by its bytes) brings its window and its baseline.json (unless --baseline names
another); a signals.jsonl file brings neither. Signals are parsed once and held (pooled, sharing equal label sets)
for the replay, the compare replay and the report's timeline. Every problem with the inputs is one line of JSON on
stderr and exit status 2; a bug is a traceback and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from .alertmanager import import_alertmanager
from .bundles import check_baseline
from .errors import FormatError, Invalid
from .formats import DEFAULT_LIMITS, load_json_document, parse_timestamp, read_limited
from .pipeline import UsageError, run_replay
from .policy import Policy, load_policy

PROG = "python -m replays.engine"


# --- arguments --------------------------------------------------------------------------------------------------------


def _scope(text: str) -> dict[str, str]:
    scope: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"{text!r}: scope is label=value pairs joined by commas")
        if key.strip() in scope:
            raise argparse.ArgumentTypeError(f"{text!r}: label {key.strip()!r} given twice")
        scope[key.strip()] = value.strip()
    return scope


def _window(text: str) -> tuple[datetime, datetime]:
    start_text, sep, end_text = text.partition("/")
    try:
        start, end = parse_timestamp(start_text), parse_timestamp(end_text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: window is START/END, two RFC 3339 timestamps ({exc})") from None
    if not sep or end <= start:
        raise argparse.ArgumentTypeError(f"{text!r}: window END must be after START")
    return start, end


def parser(subcommands: str = "") -> argparse.ArgumentParser:
    replay_parser = argparse.ArgumentParser(
        prog=PROG,
        description="Replay a window of signals under a correlation policy and write the report (JSON).",
        epilog=subcommands,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    policy = replay_parser.add_mutually_exclusive_group(required=True)
    policy.add_argument("--policy", help="a traceflux.policy/v1 document (JSON)")
    policy.add_argument("--alertmanager-config", help="an Alertmanager configuration (YAML) to import as the policy")
    replay_parser.add_argument("--silences", help="Alertmanager silences (JSON), with --alertmanager-config")
    replay_parser.add_argument("--signals", required=True, help="signals.jsonl, or an incident bundle (tar.gz or zip)")
    replay_parser.add_argument("--baseline", help="baseline.json (default: the bundle's own, if it has one)")
    replay_parser.add_argument("--compare-policy", help="another policy (JSON): the reference version to diff against")
    replay_parser.add_argument("--scope", type=_scope, help="replay only signals with these labels: service=x,pop=y")
    replay_parser.add_argument("--window", type=_window, help="replay only START/END (default: the bundle's window)")
    replay_parser.add_argument("--output", help="write the report here (default: stdout)")
    replay_parser.add_argument("--evidence", help="also write the evidence bundle (tar.gz) here")
    replay_parser.add_argument("--progress", action="store_true", help="print progress events to stderr (JSON lines)")
    return replay_parser


# --- inputs -----------------------------------------------------------------------------------------------------------


def _read_file(path: str, *, what: str, limit: int = DEFAULT_LIMITS.max_json_bytes) -> bytes:
    try:
        with open(path, "rb") as handle:
            return read_limited(handle, name=path, limit=limit)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what} file", code="not_found") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a {what} file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the {what} file ({exc.strerror})") from None


def _json_object(path: str, *, what: str) -> dict[str, Any]:
    document = load_json_document(_read_file(path, what=what), name=path)
    if not isinstance(document, dict):
        raise Invalid(f"{path}: $: a {what} is a JSON object")
    return document


def _checked_policy(spec: dict[str, Any], path: str) -> Policy:
    """load_policy, with the file named in its error: --policy and --compare-policy must not be confused."""
    try:
        return load_policy(spec)
    except Invalid as exc:
        raise Invalid(f"{path}: {exc.detail}", field=exc.field) from None


def load_policy_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The policy spec the replay runs: the --policy document, or the import of --alertmanager-config."""
    if args.policy is not None:
        if args.silences is not None:
            raise UsageError("--silences goes with --alertmanager-config, not --policy")
        return _json_object(args.policy, what="policy")
    try:
        text = _read_file(args.alertmanager_config, what="Alertmanager configuration").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"{args.alertmanager_config}: not UTF-8 text (byte {exc.start})") from None
    silences = None
    if args.silences is not None:
        silences = load_json_document(_read_file(args.silences, what="silences"), name=args.silences)
        if isinstance(silences, dict):  # one silence, as POSTed to /api/v2/silences, rather than GET's list
            silences = [silences]
    try:
        return import_alertmanager(text, silences=silences)
    except Invalid as exc:
        where = args.silences if exc.field and exc.field.startswith("silences") else args.alertmanager_config
        raise Invalid(f"{where}: {exc.detail}", field=exc.field) from None


def _progress_printer(label: str) -> Callable[[str, str, Mapping[str, int]], None]:
    def report(stage: str, status: str, counts: Mapping[str, int]) -> None:
        event = {"event": "progress", "replay": label, "stage": stage, "status": status, **dict(counts)}
        print(json.dumps(event, sort_keys=True), file=sys.stderr, flush=True)

    return report


# --- running ----------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> tuple[dict[str, Any], bytes]:
    """Replay, compare and report; return the report and its bytes. Raises FormatError or UsageError on bad input."""
    policy_spec = load_policy_spec(args)
    policy = _checked_policy(policy_spec, args.policy or args.alertmanager_config)
    compare_spec = compare_policy = None
    if args.compare_policy is not None:
        compare_spec = _json_object(args.compare_policy, what="policy")
        compare_policy = _checked_policy(compare_spec, args.compare_policy)
    baseline = None
    if args.baseline is not None:
        baseline = load_json_document(_read_file(args.baseline, what="baseline"), name=args.baseline)
        check_baseline(baseline)
    output = run_replay(
        policy,
        args.signals,
        policy_spec=policy_spec,
        compare=compare_policy,
        compare_spec=compare_spec,
        baseline=baseline,
        scope=args.scope,
        window=args.window,
        on_progress=_progress_printer("policy") if args.progress else None,
        on_compare_progress=_progress_printer("compare") if args.progress else None,
        evidence=args.evidence is not None,
    )
    if args.evidence is not None:
        with open(args.evidence, "wb") as handle:
            handle.write(output.evidence or b"")
    return output.report, output.report_bytes


def _fail(body: dict[str, Any], status: int) -> int:
    print(json.dumps(body, ensure_ascii=False), file=sys.stderr)
    return status


def replay_main(argv: list[str], *, subcommands: str = "") -> int:
    args = parser(subcommands).parse_args(argv)
    try:
        report, data = run(args)
        if args.output is not None:
            with open(args.output, "wb") as handle:
                handle.write(data)
        else:
            sys.stdout.buffer.write(data + b"\n")
            sys.stdout.flush()
    except FormatError as exc:
        return _fail({"error": exc.code, **exc.as_dict()}, 2)
    except UsageError as exc:
        return _fail({"error": exc.code, "detail": exc.detail}, 2)
    except OSError as exc:  # writing --output or --evidence
        where = exc.filename or "output"
        return _fail({"error": "io", "detail": f"{where}: {exc.strerror or exc}"}, 2)
    if args.output is not None:
        summary = {
            "output": args.output,
            "report_sha256": report["report_sha256"],
            "evidence": args.evidence,
            "stats": report["stats"],
        }
        print(json.dumps(summary, ensure_ascii=False, sort_keys=True))
    return 0
