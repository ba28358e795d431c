"""Prometheus metrics for one app instance (its own registry, so several apps in a process never clash).

The batch-size histograms are how an operator (and our tests) see micro-batching at work: the
`latentsearch_batch_requests` buckets count model calls by how many requests they merged.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("latentsearch_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("latentsearch_http_request_duration_seconds", "Time to answer a request",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("latentsearch_http_requests_in_flight", "Requests being answered", registry=r)
        self.batch_items = Histogram("latentsearch_batch_items", "Inputs per model call", ["model"],
                                     buckets=SIZE_BUCKETS, registry=r)
        self.batch_requests = Histogram("latentsearch_batch_requests", "Requests merged into one model call",
                                        ["model"], buckets=SIZE_BUCKETS, registry=r)
        self.queue_wait = Histogram("latentsearch_batch_queue_wait_seconds", "Time a request waited for its batch",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.model_seconds = Histogram("latentsearch_model_call_duration_seconds", "Time of one batched model call",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.model_errors = Counter("latentsearch_model_call_errors", "Model calls that raised", ["model"], registry=r)

    def observe_batch(self, model: str, items: int, requests: int, seconds: float, waits: Sequence[float],
                      ok: bool) -> None:
        self.batch_items.labels(model).observe(items)
        self.batch_requests.labels(model).observe(requests)
        self.model_seconds.labels(model).observe(seconds)
        for w in waits:
            self.queue_wait.labels(model).observe(w)
        if not ok:
            self.model_errors.labels(model).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
