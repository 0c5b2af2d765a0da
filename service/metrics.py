"""Prometheus metrics. Each process (or test app) owns its registry, so apps never collide."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.domain.events import IN_SCOPE_TYPES

NAMESPACE = "wooshpay"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def type_label(event_type: str) -> str:
    """Bound label cardinality: any type outside the reconciled set is `other`."""
    return event_type if event_type in IN_SCOPE_TYPES else "other"


@dataclass(frozen=True, slots=True)
class MetricFactory:
    """Builds metrics in one registry, under the service's namespace, with its latency buckets."""

    registry: CollectorRegistry

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, namespace=NAMESPACE, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, labels, namespace=NAMESPACE, registry=self.registry)

    def latency(self, name: str, documentation: str) -> Histogram:
        return Histogram(
            name,
            documentation,
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )


@dataclass
class IngressMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        make = MetricFactory(self.registry)
        self._accepted: dict[str, Counter] = {}
        self.received = make.counter("webhooks_received", "Webhook requests received")
        self.accepted = make.counter(
            "webhooks_accepted",
            "Events recorded durably and answered 200 (first delivery)",
            ["event_type"],
        )
        self.duplicates = make.counter(
            "webhooks_duplicate", "Deliveries of an event id already recorded"
        )
        self.rejected = make.counter("webhooks_rejected", "Requests refused, by reason", ["reason"])
        self.enqueue_deferred = make.counter(
            "webhooks_enqueue_deferred",
            "Recorded events Redis could not take at once (the sweeper enqueues them)",
        )
        self.request_latency = make.latency(
            "webhook_request_duration_seconds", "Time to answer a webhook request"
        )
        self.queue_depth = make.gauge("queue_depth", "Jobs waiting in the arq queue")
        self.events_by_status = make.gauge("events", "Recorded events by inbox status", ["status"])
        self.oldest_pending_age = make.gauge(
            "oldest_pending_event_age_seconds",
            "Age of the oldest event still pending (0 when none)",
        )

    def count_accepted(self, event_type: str) -> None:
        """`accepted.labels(...).inc()`, with the labelled child looked up once per type: it is
        on every request's path, and `labels()` validates and locks on each call."""
        label = type_label(event_type)
        child = self._accepted.get(label)
        if child is None:
            child = self._accepted[label] = self.accepted.labels(label)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
