"""Coverage-guided fuzzing of the bundle parser with atheris: run by hand, not part of the suite.

Hypothesis (tests/fuzz/test_*.py) draws inputs from strategies that know the format; atheris instead mutates bytes,
guided by which branches of the engine they reach, which finds inputs no strategy describes. Any exception other
than WrongType, TooLarge or Invalid is a crash, and atheris writes the input that caused it to crash-<sha1>.

    .venv/bin/python -m tests.fuzz.corpus var/fuzz/seeds               # seed with the nasty corpus
    .venv/bin/python tests/fuzz/atheris_bundle.py var/fuzz/work var/fuzz/seeds -max_total_time=600
    .venv/bin/python tests/fuzz/atheris_bundle.py crash-0123abcd        # replay one input

Each input is tried as a bundle, and then as a snapshot. Small limits keep a bomb from costing much: the sizes,
counts and ratios are crossed by inputs a few KiB long.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from replays.engine import FormatError, Limits, validate_bundle, validate_snapshot

LIMITS = Limits(max_members=8, max_uncompressed=1024 * 1024, ratio_floor=64 * 1024, max_json_bytes=256 * 1024,
                max_line_bytes=4096)
_SCRATCH = Path(tempfile.mkdtemp(prefix="atheris-bundle-")) / "input"


def test_one_input(data: bytes) -> None:
    _SCRATCH.write_bytes(data)
    for check in (validate_bundle, validate_snapshot):
        try:
            check(_SCRATCH, limits=LIMITS)
        except FormatError as exc:
            if not exc.detail.strip():
                raise AssertionError("a refusal without a detail") from exc


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
