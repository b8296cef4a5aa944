"""The server's Prometheus metrics, in a registry of its own (no global state): requests,
tokens, the queue, the running sequences, time to first token and between tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "mygpt_requests",
            "HTTP requests to the API, by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter("mygpt_prompt_tokens", "prompt tokens processed", registry=r)
        self.generation_tokens = Counter("mygpt_generation_tokens", "tokens generated", registry=r)
        self.running = Gauge(
            "mygpt_num_requests_running", "sequences in the engine's batch", registry=r
        )
        self.waiting = Gauge(
            "mygpt_num_requests_waiting", "sequences queued for a slot in the batch", registry=r
        )
        self.time_to_first_token = Histogram(
            "mygpt_time_to_first_token_seconds",
            "from a sequence's arrival to its first token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            "mygpt_inter_token_latency_seconds",
            "between two tokens of a sequence",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
