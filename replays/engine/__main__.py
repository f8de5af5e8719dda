"""Command line: `python -m replays.engine spec-hash FILE` prints the spec hash of a JSON policy file."""

from __future__ import annotations

import argparse
import json
import sys

from .canonical import CanonicalJSONError, spec_hash


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replays.engine", description="TraceFlux replay engine")
    commands = parser.add_subparsers(dest="command", required=True)
    hash_cmd = commands.add_parser("spec-hash", help="print the spec hash of a JSON pipeline spec ('-' for stdin)")
    hash_cmd.add_argument("path")
    args = parser.parse_args(argv)

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
