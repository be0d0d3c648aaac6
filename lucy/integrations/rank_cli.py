"""`lucy tools rank`: placeholder until tool selection lands (issue 6)."""

from __future__ import annotations

import sys


def run_rank(catalog: str, queries: str, k: int) -> int:
    print("lucy tools rank is not implemented yet", file=sys.stderr)
    return 2
