"""Prometheus metrics, one registry per process (served at GET /metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events = Counter("lucy_slack_events_total", "Slack events received", ["kind", "outcome"], registry=r)
        self.ack_seconds = Histogram(
            "lucy_slack_ack_seconds", "Time to answer Slack's HTTP request (Slack wants it within 3 s)", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 3, 5),
        )
        # The one database round trip an ack waits for: when acks are slow and the loop is not, look here.
        self.claim_seconds = Histogram(
            "lucy_slack_claim_seconds", "Claiming an event id in PostgreSQL, inside the ack", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3),
        )
        self.turns = Counter("lucy_turns_total", "Agent turns", ["outcome"], registry=r)
        self.turn_seconds = Histogram(
            "lucy_turn_seconds", "Turn latency", registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
        )
        self.tool_executions = Counter(
            "lucy_tool_executions_total", "Tool executions", ["status"], registry=r
        )
        self.cache_requests = Counter("lucy_cache_requests_total", "Cache lookups", ["result"], registry=r)
        self.llm_tokens = Counter("lucy_llm_tokens_total", "LLM tokens", ["kind"], registry=r)
        self.llm_cost = Counter("lucy_llm_cost_usd_total", "LLM cost in USD", registry=r)
        self.approvals_pending = Gauge("lucy_approvals_pending", "Approvals waiting for a person", registry=r)
        # Set to callbacks by `lucy serve` (lucy/serve.py), read at scrape time.
        self.turns_in_flight = Gauge("lucy_turns_in_flight", "Answers being worked on in this process", registry=r)
        self.turns_queued = Gauge(
            "lucy_turns_queued", "Answers waiting to start because the event loop is busy", registry=r
        )
        self.event_loop_lag = Gauge(
            "lucy_event_loop_lag_seconds", "How late the event loop runs callbacks (smoothed)", registry=r
        )
        self.turn_limit = Gauge(
            "lucy_turn_limit", "Answers allowed to run at once right now (adapts to the CPU)", registry=r
        )
        self.cache_degraded = Gauge(
            "lucy_cache_degraded", "1 while Redis is unreachable and the in-process cache is used", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
