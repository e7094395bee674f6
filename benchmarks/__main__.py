"""``python -m benchmarks [--db ...] [--size ...] [--reps N] [--out file.json]``."""

from __future__ import annotations

import sys

from benchmarks._cli import main

if __name__ == "__main__":
    sys.exit(main())
