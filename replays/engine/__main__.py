"""Command line for the engine's formats.

python -m replays.engine spec-hash FILE          print the spec hash of a JSON policy file ('-' for stdin)
python -m replays.engine validate FILE [--kind incident_bundle|snapshot]
                                                 print what the file holds as JSON, or the error as JSON (exit 2)
python -m replays.engine make-sample --seed N --out FILE [...]
                                                 write a seeded sample incident bundle
python -m replays.engine schemas --out DIR       copy the JSON Schemas (docs/formats is made this way)
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from .archive import KIND_JSON, detect_kind
from .bundles import BUNDLE_KINDS, validate_bundle, validate_snapshot, write_bundle
from .canonical import CanonicalJSONError, spec_hash
from .errors import FormatError
from .formats import parse_timestamp, write_schema_docs
from .samples import DEFAULT_START, sample_bundle, sample_spec


def _timestamp(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    sample.add_argument("--environment", default="staging")
    sample.add_argument("--agent", default="edge-agent-01")
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


def main(argv: list[str] | None = None) -> int:
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
        manifest, signals, baseline = sample_bundle(
            seed=args.seed,
            ref=args.ref,
            environment=args.environment,
            agent=args.agent,
            window_start=args.start,
            minutes=args.minutes,
            signals=args.signals,
        )
        digest = write_bundle(
            args.out,
            manifest=manifest,
            signals=signals,
            baseline=None if args.no_baseline else baseline,
            spec=None if args.no_spec else sample_spec(),
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
                }
            )
        )
    elif args.command == "schemas":
        for path in write_schema_docs(args.out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
