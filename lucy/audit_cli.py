"""`lucy audit`: placeholder until approvals and audit land (issue 7)."""

from __future__ import annotations

import sys

from lucy.config import Settings


def run_audit(settings: Settings, *, workspace: str, since: str) -> int:
    print("lucy audit is not implemented yet", file=sys.stderr)
    return 2
