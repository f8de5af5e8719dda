"""python -m tests.fuzz.corpus DIRECTORY: write every nasty artifact to DIRECTORY, one file each."""

from __future__ import annotations

import sys

from tests.fuzz.corpus import write_corpus

for written in write_corpus(sys.argv[1] if len(sys.argv) > 1 else "corpus-out"):
    print(f"{written.stat().st_size:>10}  {written}")
