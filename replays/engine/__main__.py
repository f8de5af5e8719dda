"""Command line for the engine: replay a window, and the format tools.

python -m replays.engine --policy POLICY.json | --alertmanager-config alertmanager.yml [--silences silences.json]
                         --signals signals.jsonl|bundle.tar.gz [--baseline baseline.json]
                         [--compare-policy OTHER.json] [--scope service=edge-gw,pop=POP-12] [--window START/END]
                         [--output report.json] [--evidence evidence.tar.gz] [--progress]
                                                 replay and print (or write) the report: replays/engine/cli.py
python -m replays.engine spec-hash FILE          print the spec hash of a JSON policy file ('-' for stdin)
python -m replays.engine validate FILE [--kind incident_bundle|snapshot]
                                                 print what the file holds as JSON, or the error as JSON (exit 2)
python -m replays.engine make-sample --seed N --out FILE [...]
                                                 write a seeded sample incident bundle (any incident, environment,
                                                 agent, scope, window and spec hash: see --help)
python -m replays.engine schemas --out DIR       copy the JSON Schemas (docs/formats is made this way)
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from .archive import KIND_JSON, detect_kind
from .bundles import BUNDLE_KINDS, validate_bundle, validate_snapshot, write_bundle
from .canonical import CanonicalJSONError, is_spec_hash, spec_hash
from .errors import FormatError
from .formats import parse_timestamp, write_schema_docs
from .samples import DEFAULT_START, SAMPLE_SPEC, sample_bundle, sample_spec

SEVERITIES = ("sev1", "sev2", "sev3", "sev4")


def _timestamp(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _spec_hash(text: str) -> str:
    if not is_spec_hash(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a spec hash (sha256: and 64 lowercase hex digits)")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m replays.engine", description="TraceFlux replay engine")
    commands = parser.add_subparsers(dest="command", required=True)
    hash_cmd = commands.add_parser("spec-hash", help="print the spec hash of a JSON pipeline spec ('-' for stdin)")
    hash_cmd.add_argument("path")

    validate = commands.add_parser("validate", help="check an incident bundle or snapshot; print JSON")
    validate.add_argument("path")
    validate.add_argument(
        "--kind",
        choices=["incident_bundle", "snapshot"],
        help="what the file must be (default: a snapshot if it is JSON, else a bundle)",
    )

    sample = commands.add_parser("make-sample", help="write a seeded sample incident bundle")
    sample.add_argument("--seed", type=int, required=True)
    sample.add_argument("--out", required=True, help="the bundle file to write")
    sample.add_argument("--format", dest="fmt", choices=BUNDLE_KINDS, default="tar.gz")
    sample.add_argument("--signals", type=int, default=5000, help="number of signal lines (default 5000)")
    sample.add_argument("--minutes", type=float, default=4, help="window length (default 4)")
    sample.add_argument("--start", type=_timestamp, default=DEFAULT_START, help="window start, RFC 3339")
    sample.add_argument("--ref", default="INC-2026-0226-001")
    sample.add_argument("--title", default="edge-gw 5xx burst at POP-12")
    sample.add_argument("--severity", choices=SEVERITIES, default="sev2")
    sample.add_argument("--environment", default="staging")
    sample.add_argument("--agent", default="edge-agent-01")
    sample.add_argument("--service", default="edge-gw", help="scope: the service in trouble (default edge-gw)")
    sample.add_argument("--region", default="us-east-1", help="scope: its region (default us-east-1)")
    sample.add_argument("--pop", default="POP-12", help="scope: its POP (default POP-12)")
    sample.add_argument(
        "--spec-hash",
        type=_spec_hash,
        help="the manifest's spec_hash (default: the sample spec's). Any other hash leaves spec.json out, unless "
        "--spec names the file it is the hash of",
    )
    sample.add_argument("--spec", dest="spec_path", help="a JSON policy spec to ship as spec.json; its spec hash "
                        "becomes the manifest's spec_hash")
    sample.add_argument("--no-baseline", action="store_true", help="leave baseline.json out")
    sample.add_argument("--no-spec", action="store_true", help="leave spec.json out")

    schemas = commands.add_parser("schemas", help="write the JSON Schemas to a directory")
    schemas.add_argument("--out", required=True)
    return parser


def _validate(path: str, kind: str | None) -> int:
    try:
        if kind is None:
            kind = "snapshot" if detect_kind(path) == KIND_JSON else "incident_bundle"
        info = validate_snapshot(path) if kind == "snapshot" else validate_bundle(path)
    except FormatError as exc:
        print(json.dumps({"valid": False, "error": exc.code, "status": exc.status, **exc.as_dict()}, indent=2))
        return 2
    except OSError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"valid": True, "as": kind, **info.as_dict()}, indent=2))
    return 0


def _sample_spec_choice(args: argparse.Namespace) -> tuple[str, dict | None]:
    """(the manifest's spec_hash, the spec.json to ship or None) for make-sample.

    --spec FILE ships that file and names its hash (a --spec-hash that disagrees is an error); a bare --spec-hash is
    named as is, shipping the sample spec only when the hash is the sample spec's; by default the sample spec.
    """
    if args.spec_path is not None:
        with open(args.spec_path, encoding="utf-8") as handle:
            spec = json.load(handle)
        if not isinstance(spec, dict):
            raise ValueError(f"{args.spec_path}: a policy spec is a JSON object")
        digest = spec_hash(spec)
        if args.spec_hash is not None and args.spec_hash != digest:
            raise ValueError(f"--spec-hash is {args.spec_hash}, but {args.spec_path} hashes to {digest}")
        return digest, None if args.no_spec else spec
    sample_digest = spec_hash(SAMPLE_SPEC)
    digest = args.spec_hash or sample_digest
    return digest, None if args.no_spec or digest != sample_digest else sample_spec()


SUBCOMMANDS = ("spec-hash", "validate", "make-sample", "schemas")
_SUBCOMMAND_HELP = (
    "other commands (each has --help):\n"
    "  spec-hash FILE            print the spec hash of a JSON policy file\n"
    "  validate FILE             check an incident bundle or snapshot\n"
    "  make-sample --seed N ...  write a seeded sample incident bundle\n"
    "  schemas --out DIR         write the JSON Schemas"
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # A leading subcommand name selects a format tool; anything else is the replay's options (the form).
    if not argv or argv[0] not in SUBCOMMANDS:
        from .cli import replay_main  # the replay stack loads only for a replay, not for `validate`

        return replay_main(argv, subcommands=_SUBCOMMAND_HELP)
    args = _parser().parse_args(argv)

    if args.command == "spec-hash":
        try:
            if args.path == "-":
                spec = json.load(sys.stdin)
            else:
                with open(args.path, encoding="utf-8") as handle:
                    spec = json.load(handle)
            print(spec_hash(spec))
        except (OSError, json.JSONDecodeError, CanonicalJSONError) as exc:
            print(f"error: {args.path}: {exc}", file=sys.stderr)
            return 2
    elif args.command == "validate":
        return _validate(args.path, args.kind)
    elif args.command == "make-sample":
        try:
            digest_of_spec, spec = _sample_spec_choice(args)
        except (OSError, json.JSONDecodeError, CanonicalJSONError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        manifest, signals, baseline = sample_bundle(
            seed=args.seed,
            ref=args.ref,
            title=args.title,
            severity=args.severity,
            environment=args.environment,
            agent=args.agent,
            window_start=args.start,
            minutes=args.minutes,
            signals=args.signals,
            spec_hash=digest_of_spec,
            service=args.service,
            region=args.region,
            pop=args.pop,
        )
        digest = write_bundle(
            args.out,
            manifest=manifest,
            signals=signals,
            baseline=None if args.no_baseline else baseline,
            spec=spec,
            fmt=args.fmt,
        )
        print(
            json.dumps(
                {
                    "path": args.out,
                    "sha256": digest,
                    "format": args.fmt,
                    "signals": len(signals),
                    "baseline_incidents": 0 if args.no_baseline else len(baseline["incidents"]),
                    "spec_hash": digest_of_spec,
                    "spec": spec is not None,
                }
            )
        )
    elif args.command == "schemas":
        for path in write_schema_docs(args.out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
