"""Load benchmark: signed Slack events at a chosen rate into a real `lucy serve` (HTTP mode).

Lucy runs as its own process (`python -m lucy serve`) on a throwaway PostgreSQL database; the
fake Slack, Composio and LLM servers run in a second process (so their CPU does not distort the
load generator's clock), the LLM answering each request after ``--llm-delay`` seconds (1 s).
Everything is on 127.0.0.1, and the run is bounded in events and time.

Phase 1 sends ``--rate`` events per second for ``--seconds`` seconds (open loop: event i leaves at
i/rate whatever the acks do) and prints the ack latency (HTTP 200 to Slack) p50/p99, answered
turns per second, Lucy's CPU time per turn, and how many events were answered.
Phase 2 opens ``--concurrent`` turns at once (the LLM holds every answer until all are open) and
prints the peak number of turns in flight (Lucy's own ``lucy_turns_in_flight``) and Lucy's peak
memory (VmHWM).

``--instances 2`` runs two ``lucy serve`` processes on the same database and Redis (one per core;
a Python process uses one) and sends the events round-robin, as a load balancer would.

Run: .venv/bin/python bench/load.py [--rate 100] [--seconds 10] [--concurrent 1000] [--instances 1]
     [--database-url postgresql://postgres@127.0.0.1:5432/postgres] [--redis-url redis://127.0.0.1:6379/0]
"""

# The polls read counters another process writes (no asyncio.Event can cross that), and the
# start-up helpers block briefly on purpose; this is a benchmark driver, not Lucy.
# ruff: noqa: ASYNC110, ASYNC220, ASYNC240

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from tests.fakes.fake_slack import FakeSlack, signed_headers  # noqa: E402

SIGNING_SECRET = "bench-signing-secret-0123456789"
CHANNEL = "C0LOAD"
USERS = [f"U0L{i:04d}" for i in range(50)]
MAX_WAIT = 120.0  # seconds to wait for the last answers of a phase


# --- the fakes, in their own process ---------------------------------------------------------------


class Shared:
    """Counters the fakes' process shares with the load generator."""

    def __init__(self, ctx: Any) -> None:
        self.answered: Synchronized[int] = ctx.Value("i", 0)
        self.llm_requests: Synchronized[int] = ctx.Value("i", 0)
        self.llm_delay: Synchronized[float] = ctx.Value("d", 1.0)
        self.release_at: Synchronized[int] = ctx.Value("i", 0)  # phase 2: hold answers until this many asked
        self.fakes_pid: Synchronized[int] = ctx.Value("i", 0)


def run_fakes(shared: Shared, urls: Any, stop: Any) -> None:
    shared.fakes_pid.value = os.getpid()
    asyncio.run(_fakes(shared, urls, stop))


async def _fakes(shared: Shared, urls: Any, stop: Any) -> None:
    from tests.fakes.fake_composio import FakeComposio
    from tests.fakes.fake_llm import FakeLLM, RecordedRequest, Reply, text

    class CountingSlack(FakeSlack):
        """Counts threads that got their final answer (a stream stopped, or a message posted)."""

        def __init__(self) -> None:
            super().__init__()
            self._answered: set[str] = set()
            self._index: dict[tuple[str, str], Any] = {}

        def find(self, channel: str, ts: str) -> Any:  # O(1): the base class scans every message
            return self._index.get((channel, ts))

        def _post(self, args: dict[str, Any], token: str | None, *, streaming: bool = False) -> Any:
            msg = super()._post(args, token, streaming=streaming)
            self._index[(msg.channel, msg.ts)] = msg
            return msg

        async def _dispatch(self, method: str, args: dict[str, Any], token: str | None, request: Any) -> Any:
            out = await super()._dispatch(method, args, token, request)
            if method in ("chat.stopStream", "chat.postMessage"):
                self._done(self._index[(out["channel"], out["ts"])].thread_ts)
            return out

        def _done(self, thread_ts: str | None) -> None:
            if thread_ts and thread_ts not in self._answered:
                self._answered.add(thread_ts)
                shared.answered.value = len(self._answered)
            # Keep memory flat over a long run: the fake's lists are not needed here.
            self.messages.clear()
            self._calls.clear()

    class GatedLLM(FakeLLM):
        """Counts requests; in phase 2 holds every answer until ``release_at`` requests have come in."""

        async def _completions(self, request: Any) -> Any:
            shared.llm_requests.value += 1
            while shared.release_at.value and shared.llm_requests.value < shared.release_at.value:
                await asyncio.sleep(0.05)
            return await super()._completions(request)

    def model(_request: RecordedRequest) -> Reply:
        delay = 0.0 if shared.release_at.value else shared.llm_delay.value
        return text("Here is your answer.", delay=delay, usage=(800, 20))

    slack = CountingSlack()
    for user in USERS:
        slack.add_user(user, user.lower(), f"Load {user}", "UTC")
    llm = GatedLLM()
    llm.responder = model
    async with slack, FakeComposio() as composio:
        await llm.start()
        urls.put({"slack_api": slack.api_url, "bot_token": slack.bot_token, "composio": composio.base_url,
                  "composio_key": composio.api_key, "llm": llm.base_url})
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await llm.close()


# --- Lucy, as a process ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lucy_env(urls: dict[str, str], dsn: str, port: int, args: argparse.Namespace) -> dict[str, str]:
    drop = ("SLACK_", "COMPOSIO_", "LLM_", "LUCY_", "DATABASE_URL", "REDIS_URL", "PORT", "LOG_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update({
        "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PORT": str(port), "LUCY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DATABASE_URL": dsn, "LOG_FORMAT": "json", "LOG_LEVEL": args.log_level,
        "SLACK_BOT_TOKEN": urls["bot_token"], "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": urls["slack_api"], "COMPOSIO_API_KEY": urls["composio_key"],
        "COMPOSIO_BASE_URL": urls["composio"], "LLM_MODEL": "openai/fake", "LLM_API_BASE": urls["llm"],
        "LLM_API_KEY": "sk-bench", "LLM_CONTEXT_TOKENS": "128000", "LUCY_EMBEDDING_MODEL": "off",
        "LUCY_RATE_USER_TURNS": "0", "LUCY_RATE_WORKSPACE_TURNS": "0",
    })
    env.update({key: value for key, value in (kv.split("=", 1) for kv in args.env)})
    if args.redis_url:
        env.update({"REDIS_URL": args.redis_url, "LUCY_REDIS_PREFIX": args.redis_prefix})
    return env


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> float:
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - start < 180:
            if proc.poll() is not None:
                raise SystemExit(f"lucy serve exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        return time.perf_counter() - start
            await asyncio.sleep(0.05)
    raise SystemExit("lucy serve never became ready")


async def server_ack_quantiles(session: aiohttp.ClientSession, bases: list[str],
                               metric: str = "lucy_slack_ack_seconds", what: str = "from handler start") -> str:
    """Lucy's own view of a histogram (summed over the instances): the bucket bounds under which
    50 % and 99 % fall."""
    counts: dict[float, float] = {}
    for base in bases:
        async with session.get(f"{base}/metrics") as resp:
            lines = (await resp.text()).splitlines()
        for line in lines:
            if line.startswith(metric + "_bucket"):
                bound = line.split('le="')[1].split('"')[0]
                key = float("inf") if bound == "+Inf" else float(bound)
                counts[key] = counts.get(key, 0.0) + float(line.split()[-1])
    buckets = sorted(counts.items())
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return "n/a"
    p50 = next(b for b, n in buckets if n >= 0.5 * total)
    p99 = next(b for b, n in buckets if n >= 0.99 * total)
    return f"p50 ≤ {p50 * 1000:g} ms, p99 ≤ {p99 * 1000:g} ms (inside Lucy, {what})"


async def in_flight(session: aiohttp.ClientSession, bases: list[str]) -> int:
    total = 0
    for base in bases:
        async with session.get(f"{base}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith("lucy_turns_in_flight "):
                    total += int(float(line.split()[1]))
    return total


# --- sending -----------------------------------------------------------------------------------


class Sender:
    """Signed app_mention deliveries, round-robin over the instances (a load balancer's way)."""

    def __init__(self, urls: list[str], session: aiohttp.ClientSession) -> None:
        self.urls = urls
        self.session = session
        self.slack = FakeSlack()  # only builds events and timestamps; never started
        self.acks: list[float] = []
        self.failed: list[int] = []
        self._n = 0

    def envelope(self) -> str:
        self._n += 1
        user = USERS[self._n % len(USERS)]
        msg = self.slack.user_message(CHANNEL, user, f"<@U0LUCY> load question {self._n}")
        self.slack.messages.clear()
        return json.dumps(self.slack.app_mention_event(msg))

    async def send(self, body: str) -> None:
        headers = signed_headers(SIGNING_SECRET, body)
        url = self.urls[self._n % len(self.urls)]
        start = time.perf_counter()
        try:
            async with self.session.post(url, data=body.encode(), headers=headers) as resp:
                await resp.read()
                status = resp.status
        except aiohttp.ClientError:
            status = 0
        self.acks.append((time.perf_counter() - start) * 1000)
        if status != 200:
            self.failed.append(status)

    async def at_rate(self, rate: float, count: int) -> float:
        """Open loop: event i is sent at start + i / rate. Returns the seconds it took to send all."""
        tasks = []
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.get_running_loop().create_task(self.send(self.envelope())))
        await asyncio.gather(*tasks)
        return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def wait_answered(shared: Shared, target: int, limit: float) -> float:
    start = time.perf_counter()
    while shared.answered.value < target and time.perf_counter() - start < limit:
        await asyncio.sleep(0.02)
    return time.perf_counter()


# --- the run -----------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, urls: dict[str, str], shared: Shared, dsn: str) -> None:
    ports = [free_port() for _ in range(args.instances)]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    logs = [Path(tempfile.mkdtemp(prefix="lucy-load-")) / "lucy.log" for _ in ports]
    procs: list[subprocess.Popen[bytes]] = []
    for port, log in zip(ports, logs, strict=True):
        with log.open("wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "lucy", "serve"], env=lucy_env(urls, dsn, port, args),
                                          cwd=log.parent, stdout=out, stderr=subprocess.STDOUT))
    try:
        for base, proc, log in zip(bases, procs, logs, strict=True):
            ready = await wait_ready(base, proc, log)
            print(f"lucy serve (pid {proc.pid}) ready (/readyz 200) after {ready:.1f} s; log: {log}", flush=True)
        pids = [proc.pid for proc in procs]
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            sender = Sender([f"{base}/slack/events" for base in bases], session)
            # Warm-up: the first turn of each instance pays for lazy imports and connections; not counted.
            for n, _ in enumerate(bases, start=1):
                await sender.send(sender.envelope())
                await wait_answered(shared, n, MAX_WAIT)
            sender.acks.clear()
            await phase_rate(args, shared, pids, sender)
            print(f"  ack, Lucy's view   {await server_ack_quantiles(session, bases)}")
            claims = await server_ack_quantiles(session, bases, "lucy_slack_claim_seconds", "PostgreSQL round trip")
            print(f"  of which the claim {claims}")
            if args.concurrent:
                await phase_concurrent(args, shared, pids, sender, session, bases)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def lucy_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def lucy_memory(pids: list[int]) -> str:
    rss = sum(memory_mb(pid, "VmRSS") for pid in pids)
    peak = max(memory_mb(pid, "VmHWM") for pid in pids)
    return f"{rss:7.0f} MB RSS now" + (f" (all {len(pids)} instances)" if len(pids) > 1 else "") + \
        f", {peak:.0f} MB peak" + (" (largest instance)" if len(pids) > 1 else "")


async def phase_rate(args: argparse.Namespace, shared: Shared, pids: list[int], sender: Sender) -> None:
    count = int(args.rate * args.seconds)
    shared.llm_delay.value = args.llm_delay
    before_answered, cpu0 = shared.answered.value, lucy_cpu(pids)
    fakes0, gen0 = cpu_seconds(shared.fakes_pid.value), time.process_time()
    start = time.perf_counter()
    sent_in = await sender.at_rate(args.rate, count)
    end = await wait_answered(shared, before_answered + count, MAX_WAIT)
    answered = shared.answered.value - before_answered
    cpu = lucy_cpu(pids) - cpu0
    print(f"\nphase 1: {count} events at {args.rate:g}/s into {len(pids)} instance(s) (sent in {sent_in:.1f} s), "
          f"LLM answering after {args.llm_delay:g} s")
    print(f"  ack latency        p50 {statistics.median(sender.acks):7.1f} ms   p99 {pct(sender.acks, 0.99):7.1f} ms"
          f"   max {max(sender.acks):7.1f} ms   non-200: {len(sender.failed)}")
    print(f"  answered           {answered}/{count} ({'all' if answered == count else 'MISSING SOME'})")
    print(f"  answered turns/s   {answered / (end - start):7.1f}   (first event to last answer)")
    print(f"  CPU per turn       {cpu / max(1, answered) * 1000:7.1f} ms   (lucy processes, user+sys)")
    print(f"  CPU in the phase   lucy {cpu:.1f} s, fakes {cpu_seconds(shared.fakes_pid.value) - fakes0:.1f} s, "
          f"load generator {time.process_time() - gen0:.1f} s over {end - start:.1f} s on {os.cpu_count()} cores")
    print(f"  memory             {lucy_memory(pids)}")


async def phase_concurrent(args: argparse.Namespace, shared: Shared, pids: list[int], sender: Sender,
                           session: aiohttp.ClientSession, bases: list[str]) -> None:
    count = args.concurrent
    sender.acks.clear()
    sender.failed.clear()
    before_answered, before_asked = shared.answered.value, shared.llm_requests.value
    shared.release_at.value = before_asked + count  # the LLM answers nobody until all have asked
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, await in_flight(session, bases))
            await asyncio.sleep(0.1)

    sampler = asyncio.get_running_loop().create_task(sample())
    sent_in = await sender.at_rate(args.burst_rate, count)
    sent = time.perf_counter()
    deadline = sent + MAX_WAIT
    while shared.llm_requests.value < before_asked + count and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    all_open = time.perf_counter() - sent
    await asyncio.sleep(0.5)
    held = lucy_memory(pids)
    end = await wait_answered(shared, before_answered + count, MAX_WAIT)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    answered = shared.answered.value - before_answered
    print(f"\nphase 2: {count} turns open at once (sent at {args.burst_rate:g}/s in {sent_in:.1f} s; the LLM held "
          f"every answer until all {count} had asked)")
    print(f"  ack latency        p50 {statistics.median(sender.acks):7.1f} ms   p99 {pct(sender.acks, 0.99):7.1f} ms"
          f"   non-200: {len(sender.failed)}")
    print(f"  turns in flight    peak {peak}; all {shared.llm_requests.value - before_asked} waiting on the model "
          f"{all_open:.1f} s after the last was sent (the turn limit grows while the CPU is idle)")
    print(f"  memory             {held}, with them all open")
    print(f"  answered           {answered}/{count}, {end - sent:.1f} s after the last was sent")


async def with_database(args: argparse.Namespace, urls: dict[str, str], shared: Shared) -> None:
    import asyncpg

    name = f"lucy_load_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        await bench(args, urls, shared, urlunsplit(urlsplit(args.database_url)._replace(path=f"/{name}")))
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="events per second in phase 1")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of phase 1")
    parser.add_argument("--llm-delay", type=float, default=1.0, help="seconds the fake LLM takes per answer")
    parser.add_argument("--concurrent", type=int, default=1000, help="turns open at once in phase 2 (0 = skip)")
    parser.add_argument("--burst-rate", type=float, default=200.0, help="events per second in phase 2")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra setting for lucy serve, e.g. LUCY_DB_POOL_SIZE=40 (repeatable)")
    parser.add_argument("--database-url", default=os.environ.get(
        "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--redis-url", default=None, help="share cache and rate limits through this Redis "
                        "(default with --instances > 1: redis://127.0.0.1:6379/0)")
    parser.add_argument("--instances", type=int, default=1,
                        help="lucy serve processes on one database (and Redis), events sent round-robin")
    args = parser.parse_args()
    args.redis_prefix = f"lucybench-{uuid.uuid4().hex[:6]}"
    if args.instances > 1 and not args.redis_url:
        args.redis_url = "redis://127.0.0.1:6379/0"  # instances share caches and rate limits there
    if args.rate * args.seconds > 20_000 or args.concurrent > 5_000:
        raise SystemExit("bounded on purpose: at most 20,000 events in phase 1 and 5,000 open turns")

    ctx = mp.get_context("spawn")
    shared = Shared(ctx)
    urls_q, stop = ctx.Queue(), ctx.Event()
    fakes = ctx.Process(target=run_fakes, args=(shared, urls_q, stop), daemon=True)
    fakes.start()
    try:
        urls = urls_q.get(timeout=60)
        asyncio.run(with_database(args, urls, shared))
    finally:
        stop.set()
        fakes.join(10)
        if fakes.is_alive():
            fakes.terminate()


if __name__ == "__main__":
    main()
