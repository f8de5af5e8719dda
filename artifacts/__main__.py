"""`python -m artifacts ...` is `python -m artifacts.client ...`: the agent client's command line (no Django)."""

from __future__ import annotations

import sys

from .client import main

if __name__ == "__main__":
    sys.exit(main())
