"""Start-up figures: `lucy --help`, and `lucy serve` until /healthz answers 200.

Run: .venv/bin/python bench/startup.py [--runs 5] [--database-url postgresql://...]

Without --database-url, `lucy serve` uses the embedded PostgreSQL (its first start, which runs
initdb, is reported separately from warm starts). Prints medians; these machines are noisy.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUCY = [sys.executable, "-m", "lucy"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def time_help() -> float:
    start = time.perf_counter()
    subprocess.run([*LUCY, "--help"], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def time_serve(env: dict[str, str]) -> float:
    port = free_port()
    env = {**env, "PORT": str(port), "LOG_LEVEL": "warning"}
    start = time.perf_counter()
    proc = subprocess.Popen([*LUCY, "serve"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"lucy serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - start
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


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
        print(f"lucy serve → /healthz 200  median {statistics.median(serves) * 1000:7.0f} ms  (DATABASE_URL)")
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
