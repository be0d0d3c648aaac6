"""`lucy --help` and `import lucy` are instant and offline: no heavy SDK, no network."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["litellm", "composio", "composio_client", "slack_bolt", "openai", "asyncpg", "aiohttp"]

PROBE = """
import json, sys
HEAVY = sys.argv[1].split(",")
events = []
def hook(name, args):
    if name in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        events.append(name)
sys.addaudithook(hook)
import lucy, lucy.cli, lucy.config, lucy.errors, lucy.log
try:
    lucy.cli.main(["--help"])
except SystemExit:
    pass
print(json.dumps({"net": events, "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


def test_help_and_import_touch_no_network_and_no_heavy_sdk() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(HEAVY)], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"net": [], "heavy": []}
    assert "lucy serve" not in result.stdout  # argparse prints subcommands, not prose
    assert "serve" in result.stdout and "doctor" in result.stdout


def test_console_script_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lucy", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    for command in ("serve", "migrate", "doctor", "chat", "tools", "audit"):
        assert command in result.stdout
