"""`lucy chat`: placeholder until the agent loop lands (issue 4)."""

from __future__ import annotations

import sys

from lucy.config import Settings


def run_chat(settings: Settings, *, workspace: str, user: str) -> int:
    print("lucy chat is not implemented yet", file=sys.stderr)
    return 2
