"""Start-up figures: `lucy --help`, and `lucy serve` until /healthz answers 200.

Run: .venv/bin/python bench/startup.py [--runs 5] [--database-url postgresql://...]

Without --database-url, `lucy serve` uses the embedded PostgreSQL (its first start, which runs
initdb, is reported separately from warm starts). With --database-url it also times the full
bot: Slack configured (fake Slack, Composio and LLM servers on 127.0.0.1, in this process), so
litellm, the Composio SDK and Bolt are imported and the agent is built before /healthz answers.
Prints medians; these machines are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUCY = [sys.executable, "-m", "lucy"]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def time_help() -> float:
    start = time.perf_counter()
    subprocess.run([*LUCY, "--help"], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def time_serve(env: dict[str, str], path: str = "/healthz") -> float:
    port = free_port()
    env = {**env, "PORT": str(port), "LOG_LEVEL": "warning"}
    start = time.perf_counter()
    proc = subprocess.Popen([*LUCY, "serve"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"lucy serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - start
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


@contextlib.contextmanager
def fakes() -> Iterator[dict[str, str]]:
    """Fake Slack, Composio and LLM servers on a background event loop; yields the settings for them."""
    import asyncio
    import threading

    from tests.fakes.fake_composio import FakeComposio
    from tests.fakes.fake_llm import FakeLLM
    from tests.fakes.fake_slack import FakeSlack

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    slack, composio, llm = FakeSlack(), FakeComposio(), FakeLLM()

    async def start() -> None:
        await slack.__aenter__()
        await composio.__aenter__()
        await llm.start()

    async def stop() -> None:
        await llm.close()
        await composio.__aexit__(None, None, None)
        await slack.__aexit__(None, None, None)

    asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    try:
        yield {
            "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": "bench-secret-0123456789",
            "SLACK_API_URL": slack.api_url, "COMPOSIO_API_KEY": composio.api_key,
            "COMPOSIO_BASE_URL": composio.base_url, "LLM_MODEL": "openai/fake", "LLM_API_BASE": llm.base_url,
            "LLM_API_KEY": "sk-bench", "LLM_CONTEXT_TOKENS": "128000", "LUCY_EMBEDDING_MODEL": "off",
        }
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "COMPOSIO_", "LLM_"))}
    base_env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

    helps = [time_help() for _ in range(args.runs)]
    print(f"lucy --help                median {statistics.median(helps) * 1000:7.0f} ms  (n={args.runs})")

    if args.database_url:
        env = {**base_env, "DATABASE_URL": args.database_url}
        serves = [time_serve(env) for _ in range(args.runs)]
        print(f"lucy serve → /healthz 200  median {statistics.median(serves) * 1000:7.0f} ms  (DATABASE_URL, no Slack)")
        with fakes() as fake_env:
            env = {**env, **fake_env}
            bots = [time_serve(env, "/readyz") for _ in range(args.runs)]
        print(f"lucy serve → /readyz 200   median {statistics.median(bots) * 1000:7.0f} ms  "
              "(DATABASE_URL, Slack + Composio + LLM configured: litellm, composio_client, slack_bolt imported)")
        return
    data = Path(tempfile.mkdtemp(prefix="lucy-bench-"))
    data.chmod(0o755)
    try:
        env = {**base_env, "LUCY_DATA_DIR": str(data / "state")}
        env.pop("DATABASE_URL", None)
        first = time_serve(env)
        warm = [time_serve(env) for _ in range(args.runs)]
        print(f"lucy serve → /healthz 200  first {first * 1000:7.0f} ms  (embedded, initdb)")
        print(f"lucy serve → /healthz 200  median {statistics.median(warm) * 1000:7.0f} ms  (embedded, warm)")
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
