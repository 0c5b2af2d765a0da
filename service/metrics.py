"""Prometheus metrics. Each process (or test app) owns its registry, so apps never collide."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.wooshpay.events import IN_SCOPE_TYPES

NAMESPACE = "wooshpay"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def type_label(event_type: str) -> str:
    """Bound label cardinality: any type outside the reconciled set is `other`."""
    return event_type if event_type in IN_SCOPE_TYPES else "other"


@dataclass
class IngressMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self._accepted: dict[str, Counter] = {}
        self.received = Counter(
            "webhooks_received", "Webhook requests received", namespace=NAMESPACE, registry=r
        )
        self.accepted = Counter(
            "webhooks_accepted",
            "Events recorded durably and answered 200 (first delivery)",
            ["event_type"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.duplicates = Counter(
            "webhooks_duplicate",
            "Deliveries of an event id already recorded",
            namespace=NAMESPACE,
            registry=r,
        )
        self.rejected = Counter(
            "webhooks_rejected",
            "Requests refused, by reason",
            ["reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.enqueue_deferred = Counter(
            "webhooks_enqueue_deferred",
            "Recorded events Redis could not take at once (the sweeper enqueues them)",
            namespace=NAMESPACE,
            registry=r,
        )
        self.request_latency = Histogram(
            "webhook_request_duration_seconds",
            "Time to answer a webhook request",
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "queue_depth", "Jobs waiting in the arq queue", namespace=NAMESPACE, registry=r
        )
        self.events_by_status = Gauge(
            "events",
            "Recorded events by inbox status",
            ["status"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.oldest_pending_age = Gauge(
            "oldest_pending_event_age_seconds",
            "Age of the oldest event still pending (0 when none)",
            namespace=NAMESPACE,
            registry=r,
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
