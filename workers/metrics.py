"""The worker's Prometheus metrics, served on its own port (see workers.main)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.metrics import LATENCY_BUCKETS, NAMESPACE


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.outcomes = Counter(
            "reconcile_outcomes",
            "Reconcile job outcomes by event type and outcome",
            ["event_type", "outcome"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.job_duration = Histogram(
            "reconcile_job_duration_seconds",
            "Time spent in one reconcile job",
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.processing_latency = Histogram(
            "reconcile_latency_seconds",
            "From an event's receipt at the ingress to its application",
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.swept = Counter(
            "sweeper_enqueued",
            "Pending events the sweeper re-enqueued",
            namespace=NAMESPACE,
            registry=r,
        )
        self.last_heartbeat = Gauge(
            "worker_last_heartbeat_timestamp_seconds",
            "When this worker process last completed a poll cycle (unix time)",
            namespace=NAMESPACE,
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
