"""The worker's Prometheus metrics, served on its own port (see workers.main)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest

from service.metrics import MetricFactory


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        make = MetricFactory(self.registry)
        self.outcomes = make.counter(
            "reconcile_outcomes",
            "Reconcile job outcomes by event type and outcome",
            ["event_type", "outcome"],
        )
        self.job_duration = make.latency(
            "reconcile_job_duration_seconds", "Time spent in one reconcile job"
        )
        self.processing_latency = make.latency(
            "reconcile_latency_seconds",
            "From an event's receipt at the ingress to its application",
        )
        self.swept = make.counter("sweeper_enqueued", "Pending events the sweeper re-enqueued")
        self.last_heartbeat = make.gauge(
            "worker_last_heartbeat_timestamp_seconds",
            "When this worker process last completed a poll cycle (unix time)",
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
