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
import hashlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from .alertmanager import import_alertmanager
from .bundles import Bundle, check_baseline, check_baseline_refs, open_bundle
from .correlate import ReplayResult, pooled, replay
from .errors import FormatError, Invalid
from .evidence import selection_document, write_evidence
from .formats import DEFAULT_LIMITS, load_json_document, parse_timestamp, read_limited
from .idset import ExactIdSet
from .policy import Policy, load_policy
from .report import build_report, report_bytes
from .signals import Signal, SignalReader

PROG = "python -m replays.engine"
_GZIP, _ZIP = b"\x1f\x8b", (b"PK\x03\x04", b"PK\x05\x06")


class UsageError(Exception):
    """A problem with the command line or an input file that is not a FormatError (a missing file)."""

    def __init__(self, detail: str, *, code: str = "invalid") -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


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


class SignalSource:
    """The --signals file: a bundle (its window and baseline come along) or signals.jsonl. `read` streams it afresh."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as handle:
                head = handle.read(4)
        except FileNotFoundError:
            raise UsageError(f"{path}: no such signals file", code="not_found") from None
        except IsADirectoryError:
            raise UsageError(f"{path}: is a directory, not a signals file") from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot read the signals file ({exc.strerror})") from None
        self.bundle: Bundle | None = open_bundle(path) if head[:2] == _GZIP or head in _ZIP else None
        self.kind = self.bundle.kind if self.bundle is not None else "jsonl"

    @property
    def window(self) -> tuple[datetime, datetime] | None:
        return self.bundle.window if self.bundle is not None else None

    @property
    def baseline(self) -> dict[str, Any] | None:
        return self.bundle.baseline if self.bundle is not None else None

    def read(self, reader: SignalReader) -> Iterator[Signal]:
        if self.bundle is not None:
            yield from self.bundle.read_signals(reader)
            return
        with open(self.path, "rb") as handle:
            yield from reader.read(handle)

    def checked(self) -> tuple[SignalReader, Iterator[Signal]]:
        """A reader and the signals through it; a bundle's signals must lie in its window, as the upload checks."""
        # The replay holds every signal anyway, so uniqueness uses a plain set rather than the compact digest table.
        if self.bundle is not None:
            reader = SignalReader(window=self.window, ids=ExactIdSet())
        else:
            reader = SignalReader(member=self.path, ids=ExactIdSet())
        return reader, self.read(reader)

    def all(self) -> Iterator[Signal]:
        """Every good signal; raise the reader's error after the last if a line was bad."""
        reader, signals = self.checked()
        yield from signals
        error = reader.error()
        if error is not None:
            raise error

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
        return digest.hexdigest()

    def close(self) -> None:
        if self.bundle is not None:
            self.bundle.close()


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
    source = SignalSource(args.signals)
    try:
        baseline = source.baseline
        if args.baseline is not None:
            baseline = load_json_document(_read_file(args.baseline, what="baseline"), name=args.baseline)
            check_baseline(baseline)
        window = args.window or source.window
        reader, stream = source.checked()
        # Parsed and pooled once: the compare replay and the report's timeline reuse the same list.
        signals = pooled(stream)
        error = reader.error()
        if error is not None:
            raise error
        result = replay(
            policy,
            signals,
            scope=args.scope,
            window=window,
            on_progress=_progress_printer("policy") if args.progress else None,
        )
        if baseline is not None:
            check_baseline_refs(baseline, reader.ids)
        compare: ReplayResult | None = None
        if compare_policy is not None:
            compare = replay(
                compare_policy,
                signals,
                scope=args.scope,
                window=window,
                on_progress=_progress_printer("compare") if args.progress else None,
            )
        report = build_report(
            result,
            policy_spec=policy_spec,
            baseline=baseline,
            compare=compare,
            compare_spec=compare_spec,
            signals=signals,
        )
        data = report_bytes(report)
        if args.evidence is not None:
            selection = selection_document(
                result,
                by_source=report["input"]["by_source"],
                source={"name": Path(args.signals).name, "kind": source.kind, "sha256": source.sha256()},
            )
            write_evidence(
                args.evidence, report=report, policy_spec=policy_spec, selection=selection, compare_spec=compare_spec
            )
        return report, data
    finally:
        source.close()


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
